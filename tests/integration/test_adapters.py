"""LoRA adapters on the real server: load at run time (admin key), list, generate with
`model` = adapter name, unload, then 404; bad paths → 400; no/wrong admin key → 401. Also the
shipped recipe adapter (adapters/*/) loads and generates."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.engine

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted(p for p in (REPO / "adapters").glob("*/adapter_config.json"))


@pytest.fixture(scope="module")
def tiny_adapter(model_dir, tmp_path_factory) -> Path:
    """A random-init rank-4 LoRA on the attention projections of the embedded model."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False,
        task_type="CAUSAL_LM"))
    out = tmp_path_factory.mktemp("adapter") / "tiny"
    peft_model.save_pretrained(out, safe_serialization=True)
    return out


def admin(server) -> dict[str, str]:
    return {"Authorization": f"Bearer {server['admin_key']}"}


def chat(http, model: str, **kw):
    return http.post("/v1/chat/completions", json={
        "model": model, "messages": [{"role": "user", "content": "Name a colour."}],
        "max_tokens": 8, "temperature": 0, **kw})


def test_adapter_lifecycle(http, server, tiny_adapter):
    name = "tiny-lora"
    resp = http.post("/v1/adapters/load", json={"name": name, "path": str(tiny_adapter)},
                     headers=admin(server))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["id"] == name and body["parent"] == server["model"]
    try:
        listed = {m["id"]: m for m in http.get("/v1/models").json()["data"]}
        assert listed[name]["parent"] == server["model"]
        assert listed[server["model"]]["parent"] is None
        assert http.get(f"/v1/models/{name}").json()["parent"] == server["model"]

        out = chat(http, name)
        assert out.status_code == 200, out.text
        data = out.json()
        assert data["model"] == name
        assert data["choices"][0]["message"]["content"]
        assert 0 < data["usage"]["completion_tokens"] <= 8

        again = http.post("/v1/adapters/load", json={"name": name, "path": str(tiny_adapter)},
                          headers=admin(server))
        assert again.status_code == 400  # already loaded
    finally:
        gone = http.post("/v1/adapters/unload", json={"name": name}, headers=admin(server))
    assert gone.status_code == 200 and gone.json()["deleted"] is True
    missing = chat(http, name)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"
    assert http.get(f"/v1/models/{name}").status_code == 404
    assert name not in {m["id"] for m in http.get("/v1/models").json()["data"]}
    assert http.post("/v1/adapters/unload", json={"name": name},
                     headers=admin(server)).status_code == 404
    assert chat(http, server["model"]).status_code == 200  # the base model still serves


def test_adapter_bad_paths_are_400(http, server, tmp_path):
    not_there = http.post("/v1/adapters/load", json={"name": "x", "path": str(tmp_path / "nope")},
                          headers=admin(server))
    assert not_there.status_code == 400 and not_there.json()["error"]["param"] == "path"
    (tmp_path / "adapter_config.json").write_text("{not json")
    broken = http.post("/v1/adapters/load", json={"name": "x", "path": str(tmp_path)},
                       headers=admin(server))
    assert broken.status_code == 400
    (tmp_path / "adapter_config.json").write_text(
        '{"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"]}')
    no_weights = http.post("/v1/adapters/load", json={"name": "x", "path": str(tmp_path)},
                           headers=admin(server))
    assert no_weights.status_code == 400
    assert "x" not in {m["id"] for m in http.get("/v1/models").json()["data"]}
    collide = http.post("/v1/adapters/load", json={"name": server["model"], "path": str(tmp_path)},
                        headers=admin(server))
    assert collide.status_code == 400


def test_shipped_adapters_are_served_by_default(http, server):
    listed = {m["id"]: m for m in http.get("/v1/models").json()["data"]}
    for config in SHIPPED:
        assert listed[config.parent.name]["parent"] == server["model"]
        out = chat(http, config.parent.name)
        assert out.status_code == 200 and out.json()["model"] == config.parent.name


def test_adapter_paths_outside_the_roots_are_refused(http, server, tiny_adapter):
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory(dir=Path.home()) as outside:  # not an adapter root
        copy = Path(outside) / "tiny"
        shutil.copytree(tiny_adapter, copy)
        for path in [str(copy), str(tiny_adapter / ".." / ".." / ".." / ".." / "etc"),
                     "/etc", "../../etc/passwd"]:
            r = http.post("/v1/adapters/load", json={"name": "escape", "path": path},
                          headers=admin(server))
            assert r.status_code == 400 and r.json()["error"]["param"] == "path", (path, r.text)
    bad_name = http.post("/v1/adapters/load", json={"name": "../x", "path": str(tiny_adapter)},
                         headers=admin(server))
    assert bad_name.status_code == 400


def test_adapter_admin_key_required(http, server, tiny_adapter):
    body = {"name": "nokey", "path": str(tiny_adapter)}
    assert http.post("/v1/adapters/load", json=body).status_code == 401
    wrong = http.post("/v1/adapters/load", json=body,
                      headers={"Authorization": "Bearer wrong-key"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    assert http.post("/v1/adapters/unload", json={"name": "nokey"}).status_code == 401
    assert "nokey" not in {m["id"] for m in http.get("/v1/models").json()["data"]}


@pytest.mark.skipif(not SHIPPED, reason="no adapter shipped under adapters/")
@pytest.mark.parametrize("config", SHIPPED, ids=[p.parent.name for p in SHIPPED])
def test_shipped_adapter_serves(http, server, config):
    path = config.parent
    assert (path / "adapter_model.safetensors").is_file() and (path / "README.md").is_file()
    assert sum(f.stat().st_size for f in path.iterdir()) < 16 * 1024 * 1024
    name = f"shipped-{path.name}"
    resp = http.post("/v1/adapters/load", json={"name": name, "path": str(path)},
                     headers=admin(server))
    assert resp.status_code == 200, resp.text
    try:
        out = chat(http, name, steering={"avoid": ["Coca-Cola"], "prefer": ["Pepsi"],
                                         "strategies": ["directive"]})
        assert out.status_code == 200, out.text
        assert out.json()["choices"][0]["message"]["content"]
    finally:
        http.post("/v1/adapters/unload", json={"name": name}, headers=admin(server))
