import json

from greyelephant.server.context import new_request_id
from greyelephant.server.errors import error_body, error_response, pydantic_errors_to_message


def test_error_shape_matches_openai():
    body = error_body(404, "no such model", "model", "model_not_found")
    assert body == {"error": {"message": "no such model", "type": "not_found_error",
                              "param": "model", "code": "model_not_found"}}


def test_error_response_default_code():
    resp = error_response(413, "too big")
    payload = json.loads(resp.body)
    assert resp.status_code == 413
    assert payload["error"]["code"] == "request_entity_too_large"
    assert payload["error"]["type"] == "invalid_request_error"


def test_pydantic_message_summary():
    msg, param = pydantic_errors_to_message([
        {"loc": ("body", "temperature"), "msg": "too high"},
        {"loc": ("n",), "msg": "too many"},
    ])
    assert param == "temperature"
    assert "temperature: too high" in msg and "n: too many" in msg


def test_request_ids():
    assert new_request_id("chatcmpl", "client-id-1") == "client-id-1"
    generated = new_request_id("chatcmpl", "bad id with spaces")
    assert generated.startswith("chatcmpl-") and " " not in generated
    assert new_request_id("cmpl", None) != new_request_id("cmpl", None)
