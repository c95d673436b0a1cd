"""The request bodies in the OpenAPI schema (`/openapi.json`).

The generation routes read and validate their JSON themselves (for exact 400/413 errors),
so FastAPI cannot see their bodies; this puts each request model's JSON schema — the
``steering`` extension included — into the route's OpenAPI description, so that clients
and API fuzzers (schemathesis) know what to send.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


def request_bodies(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` for a route whose JSON body is ``model``: the schema, with its
    ``$defs`` inlined (one self-contained schema per route)."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = schema.pop("$defs", {})
    return {"requestBody": {"required": True,
                            "content": {"application/json": {"schema": _inline(schema, defs)}}}}


def _inline(node: Any, defs: dict[str, Any], depth: int = 0) -> Any:
    if depth > 32:
        return {}
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            target = defs.get(ref.rsplit("/", 1)[1], {})
            rest = {k: v for k, v in node.items() if k != "$ref"}
            return {**_inline(target, defs, depth + 1), **_inline(rest, defs, depth + 1)}
        return {k: _inline(v, defs, depth + 1) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(v, defs, depth + 1) for v in node]
    return node
