"""The HTTP layer before the engine is up: liveness, 503s, auth, limits, error shapes.
No engine is started (pure HTTP logic)."""

import pytest
from starlette.testclient import TestClient

from greyelephant.server.adapters import AdapterRegistry
from greyelephant.server.app import create_app
from greyelephant.server.context import ServerContext, ServerSettings
from greyelephant.server.engine import EngineHandle
from greyelephant.server.metrics import Metrics

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def make_client(**settings):
    ctx = ServerContext(ServerSettings(max_body_bytes=2048, **settings), EngineHandle(None, "m"),
                        AdapterRegistry(), Metrics())
    return TestClient(create_app(ctx, start_engine=False), raise_server_exceptions=False)


@pytest.fixture
def client():
    with make_client() as c:
        yield c


def assert_openai_error(resp, status):
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    return err


def test_liveness_while_loading(client):
    assert client.get("/health").json() == {"status": "ok"}
    assert_openai_error(client.get("/ready"), 503)


def test_generation_returns_503_until_ready(client):
    err = assert_openai_error(client.post("/v1/chat/completions", json=CHAT), 503)
    assert err["code"] == "model_not_ready"
    assert_openai_error(client.get("/v1/models"), 503)


def test_bad_input_is_400_even_while_loading(client):
    assert_openai_error(client.post("/v1/chat/completions", content=b"{not json"), 400)
    err = assert_openai_error(client.post("/v1/chat/completions", json={**CHAT, "n": 0}), 400)
    assert err["param"] == "n"
    assert_openai_error(client.post("/v1/completions", json={"model": "m"}), 400)


def test_body_limit_is_413(client):
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 5000}]}
    assert_openai_error(client.post("/v1/chat/completions", json=big), 413)


def test_unknown_route_and_method(client):
    assert_openai_error(client.get("/v1/nothing"), 404)
    assert_openai_error(client.get("/v1/chat/completions"), 405)


def test_api_key_required_when_configured():
    with make_client(api_key="secret") as c:
        err = assert_openai_error(c.post("/v1/chat/completions", json=CHAT), 401)
        assert err["code"] == "invalid_api_key"
        ok = c.post("/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer secret"})
        assert ok.status_code == 503  # authenticated, engine still loading


def test_adapter_admin_disabled_without_key(client):
    err = assert_openai_error(client.post("/v1/adapters/load", json={"name": "a", "path": "/x"}), 403)
    assert err["code"] == "admin_disabled"


def test_metrics_exposed(client):
    client.post("/v1/chat/completions", json=CHAT)
    text = client.get("/metrics").text
    assert "greyelephant_requests_total" in text and "greyelephant_queue_depth" in text
