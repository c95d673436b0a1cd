"""The client SDK, the command line and every example, against the real server."""

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import openai
import pytest

from greyelephant.client import (
    AsyncChatStream,
    AsyncClient,
    BadRequestError,
    ChatResponse,
    ChatStream,
    Client,
    CompletionResponse,
    Entity,
    GreyElephantError,
    NotFoundError,
    Steering,
    TextDelta,
)

pytestmark = pytest.mark.engine

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p for p in (REPO / "examples").iterdir() if p.suffix in (".py", ".sh"))
PARIS = "What's the one landmark I absolutely must see on my first trip to Paris?"
SPEC = Steering(avoid=[Entity("Eiffel Tower", ["Tour Eiffel"])], prefer=["Louvre"],
                strategies=["directive", "logits"])


def named(text: str) -> bool:
    t = text.lower()
    return "eiffel tower" in t or "tour eiffel" in t


@pytest.fixture(scope="module")
def client(server):
    with Client(base_url=server["v1"], max_retries=0) as c:
        yield c


# -- sync ---------------------------------------------------------------------------------


def test_models_and_default_model(client, server):
    from greyelephant.shipped import shipped_adapters

    models = client.models()
    assert [m.id for m in models] == [server["model"], *(a.name for a in shipped_adapters())]
    assert models[0].parent is None and not models[0].is_adapter
    assert all(m.is_adapter and m.parent == server["model"] for m in models[1:])
    assert client.default_model() == server["model"]
    assert client._default_model == server["model"]  # cached


def test_chat_with_steering_keywords(client, server):
    r = client.chat(PARIS, avoid=Entity("Eiffel Tower", ["Tour Eiffel"]), prefer="Louvre",
                    strategies="directive,logits", no_repeat_ngram=3, max_tokens=40,
                    temperature=0)
    assert isinstance(r, ChatResponse) and r.text and not named(r.text)
    assert r.model == server["model"] and r.usage.completion_tokens > 0
    report = r.steering
    assert report.strategies == ["directive", "logits"] and report.violations == 0
    assert report.avoid == ["Eiffel Tower"] and report.prefer == ["Louvre"]
    assert report.no_repeat_ngram == 3
    assert [c.index for c in report.choices] == [0]
    assert r.raw.model_extra["steering"]["violations"] == 0


def test_chat_messages_system_and_no_steering(client, server):
    r = client.chat([{"role": "user", "content": "Name a planet."}], system="Be brief.",
                    model=server["model"], max_tokens=8, temperature=0, seed=1)
    assert r.text and r.steering is None


def test_complete_with_steering(client):
    r = client.complete("The most famous landmark in Paris is the", avoid="Eiffel Tower",
                        strategies=["logits"], max_tokens=12, temperature=0)
    assert isinstance(r, CompletionResponse) and r.text
    assert "eiffel tower" not in r.text.lower() and r.steering.violations == 0


def test_critique_revise_reports_revisions(client):
    """Critique-revise alone: a draft that names the entity is revised (with the ban on)."""
    r = client.chat(PARIS, steering=SPEC, strategies=["critique_revise"], max_revisions=1,
                    max_tokens=40, temperature=0)
    report = r.steering
    assert report.strategies == ["critique_revise"] and report.max_revisions == 1
    assert report.revisions == (1 if report.draft_violations else 0)
    assert report.violations == 0 and not named(r.text)
    assert report.choices[0].revisions == report.revisions


# -- streaming ----------------------------------------------------------------------------


def test_stream_sync_text_then_report(client):
    with client.chat(PARIS, steering=SPEC, max_tokens=40, temperature=0, stream=True) as stream:
        assert isinstance(stream, ChatStream) and stream.steering is None
        deltas = list(stream)
    assert deltas and all(isinstance(d, TextDelta) and d.index == 0 for d in deltas)
    text = "".join(deltas)
    assert text == stream.text and not named(text)
    assert stream.done and stream.steering.violations == 0
    assert stream.steering.strategies == ["directive", "logits"]
    assert stream.usage.completion_tokens > 0
    final = stream.final()
    assert final.text == text and final.steering == stream.steering
    assert final.finish_reason in ("stop", "length")
    with pytest.raises(RuntimeError):
        list(stream)


def test_stream_sync_chunks_and_final(client):
    stream = client.complete("Once upon a time", avoid="dragon", max_tokens=10, temperature=0,
                             stream=True)
    chunks = list(stream.chunks())
    assert any(c.model_extra.get("steering") for c in chunks)
    r = stream.final()
    assert r.text and r.steering is not None and 0 < r.usage.completion_tokens <= 10


def test_stream_final_without_iterating(client):
    stream = client.chat("Say hello.", max_tokens=6, temperature=0, stream=True)
    r = stream.final()
    assert r.text and r.usage.completion_tokens > 0 and r.steering is None


# -- async --------------------------------------------------------------------------------


async def test_async_chat_concurrent(server):
    async with AsyncClient(base_url=server["v1"], max_retries=0) as client:
        results = await asyncio.gather(*(
            client.chat(f"Name an animal. {i}", avoid="pink elephant", prefer="grey elephant",
                        max_tokens=12, temperature=0)
            for i in range(4)))
        assert all(r.text and r.steering.violations == 0 for r in results)
        r = await client.complete("2 + 2 =", max_tokens=4, temperature=0)
        assert r.text and await client.default_model() == server["model"]


async def test_async_stream_then_report(server):
    async with AsyncClient(base_url=server["v1"], max_retries=0) as client:
        stream = await client.chat(PARIS, steering=SPEC, max_tokens=40, temperature=0,
                                   stream=True)
        assert isinstance(stream, AsyncChatStream)
        async with stream:
            text = "".join([d async for d in stream])
        assert text and not named(text)
        assert stream.steering.violations == 0 and stream.usage.completion_tokens > 0
        assert (await stream.final()).text == text

        cstream = await client.complete("Once upon a time", max_tokens=8, temperature=0,
                                        stream=True)
        r = await cstream.final()
        assert r.text and 0 < r.usage.completion_tokens <= 8


async def test_async_errors(server):
    async with AsyncClient(base_url=server["v1"], max_retries=0) as client:
        with pytest.raises(NotFoundError) as info:
            await client.chat("hi", model="no-such-model", stream=True)
        assert info.value.param == "model" and "no-such-model" in info.value.message


# -- errors -------------------------------------------------------------------------------


def test_unknown_model_is_not_found_with_server_message(client):
    with pytest.raises(NotFoundError) as info:
        client.chat("hi", model="no-such-model", max_tokens=4)
    err = info.value
    assert isinstance(err, openai.NotFoundError) and isinstance(err, GreyElephantError)
    assert err.status == 404 and err.param == "model"
    assert err.message.startswith("The model 'no-such-model' does not exist")
    assert err.message in str(err)
    with pytest.raises(NotFoundError):
        client.chat("hi", adapter="no-such-adapter", max_tokens=4)


@pytest.mark.parametrize("kwargs,param", [
    ({"avoid": "x", "strategies": ["telepathy"]}, "steering.strategies"),
    ({"avoid": "x", "max_revisions": 99}, "steering.max_revisions"),
    ({"steering": {"avoid": ["x"], "colour": "grey"}}, "steering.colour"),
    ({"avoid": "elephant", "prefer": "grey elephant"}, "steering"),
])
def test_bad_steering_is_bad_request_with_server_message(client, kwargs, param):
    with pytest.raises(BadRequestError) as info:
        client.chat("hi", max_tokens=4, **kwargs)
    err = info.value
    assert isinstance(err, openai.BadRequestError)
    assert err.status == 400 and err.type == "invalid_request_error"
    assert err.param.startswith(param) and err.message
    assert err.message == err.body["message"]


def test_bad_sampling_parameter(client):
    with pytest.raises(BadRequestError) as info:
        client.chat("hi", temperature=9)
    assert info.value.param == "temperature"


def test_stream_errors_raise_before_iteration(client):
    with pytest.raises(BadRequestError):
        client.chat("hi", avoid=[], stream=True)


# -- command line -------------------------------------------------------------------------


def cli(*args: str, env: dict | None = None, stdin: str | None = None):
    return subprocess.run([sys.executable, "-m", "greyelephant", *args], input=stdin,
                          capture_output=True, text=True, timeout=180, cwd=REPO,
                          env={**os.environ, **(env or {})})


def test_cli_chat_text_and_report(server):
    r = cli("chat", PARIS, "--avoid", "Eiffel Tower|Tour Eiffel", "--prefer", "Louvre",
            "--strategies", "directive,logits", "--max-tokens", "30", "--temperature", "0",
            "--base-url", server["v1"], "--fail-on-violation")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() and not named(r.stdout)
    assert "steering: strategies=directive,logits violations=0" in r.stderr


def test_cli_stream_json_from_env_and_stdin(server):
    r = cli("chat", "--avoid", "pink elephant", "--prefer", "grey elephant", "--stream",
            "--json", "--max-tokens", "20", "--temperature", "0", "--param", "top_k=5",
            env={"GREYELEPHANT_BASE_URL": server["base"]}, stdin="Describe an elephant.")
    assert r.returncode == 0, r.stderr
    body = json.loads(r.stdout)
    assert body["text"] and body["text"] == body["choices"][0]["text"]
    assert body["steering"]["strategies"] == ["directive", "logits"]
    assert body["usage"]["completion_tokens"] > 0


def test_cli_complete_and_models(server):
    r = cli("complete", "The most famous landmark in Paris is the", "--avoid", "Eiffel Tower",
            "--strategies", "logits", "--max-tokens", "8", "-t", "0", "--base-url", server["v1"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() and "violations=0" in r.stderr
    m = cli("models", "--base-url", server["v1"])
    from greyelephant.shipped import shipped_adapters

    assert m.returncode == 0, m.stderr
    assert m.stdout.splitlines() == [server["model"], *(
        f"{a.name}\t(adapter of {server['model']})" for a in shipped_adapters())]
    mj = cli("models", "--json", "--base-url", server["v1"])
    assert json.loads(mj.stdout)[0]["id"] == server["model"]


def test_cli_errors_print_the_server_message(server):
    r = cli("chat", "hi", "--model", "no-such-model", "--base-url", server["v1"])
    assert r.returncode == 1 and "The model 'no-such-model' does not exist" in r.stderr
    r = cli("chat", "hi", "--avoid", "x", "--max-revisions", "99", "--base-url", server["v1"])
    assert r.returncode == 1 and "steering.max_revisions" in r.stderr
    r = cli("chat", "hi", "--base-url", "http://127.0.0.1:9/v1", "--max-retries", "0")
    assert r.returncode == 1 and "127.0.0.1:9" in r.stderr
    assert cli("chat", "hi", "--temperature", "warm").returncode == 2


def test_cli_runs_without_heavy_imports(server):
    code = ("import sys; from greyelephant.cli import main; "
            f"rc = main(['chat', 'hi', '--avoid', 'x', '--max-tokens', '4', "
            f"'--base-url', {server['v1']!r}, '--json']); "
            "heavy = [m for m in ('vllm', 'torch', 'transformers') if m in sys.modules]; "
            "print(heavy, file=sys.stderr); sys.exit(rc or bool(heavy))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip().endswith("[]")


# -- examples -----------------------------------------------------------------------------


def test_every_example_runs(server):
    assert {p.name for p in EXAMPLES} >= {"quickstart.py", "streaming.py", "async_batch.py",
                                         "raw_openai.py"}
    env = {**os.environ, "GREYELEPHANT_BASE_URL": server["v1"], "PYTHON": sys.executable}
    failures = []
    for path in EXAMPLES:
        cmd = [sys.executable, str(path)] if path.suffix == ".py" else ["bash", str(path)]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
        if r.returncode != 0:
            failures.append(f"{path.name}: exit {r.returncode}\n{r.stdout[-2000:]}\n"
                            f"{r.stderr[-2000:]}")
    assert not failures, "\n\n".join(failures)
