"""The FastAPI application: routes, auth, body limits, request ids, errors, metrics."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from contextlib import asynccontextmanager

import msgspec
from fastapi import FastAPI, Request
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response, StreamingResponse

from .admission import guarded_stream, within
from .context import ServerContext, new_request_id
from .errors import APIError, error_response, pydantic_errors_to_message
from .logs import prompts_logged
from .loop_watchdog import LoopWatchdog
from .openapi import request_bodies
from .protocol import (ChatCompletionRequest, CompletionRequest, LoadAdapterRequest,
                       UnloadAdapterRequest)
from .serving_chat import chat_completion, chat_completion_stream
from .serving_completion import completion, completion_stream

logger = logging.getLogger("greyelephant.server")
access_log = logging.getLogger("greyelephant.access")


def _prompt_of(req):
    messages = getattr(req, "messages", None)
    if messages is not None:
        return [{"role": m.role, "content": m.text()} for m in messages]
    return getattr(req, "prompt", None)


def _prompt_count(req) -> int:
    """Prompts of a request (a completions batch has several, chat one)."""
    prompt = getattr(req, "prompt", None)
    if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):
        return len(prompt)
    return 1


def _json(body: dict, status: int = 200, headers: dict | None = None) -> Response:
    return Response(msgspec.json.encode(body), status_code=status, media_type="application/json",
                    headers=headers)


async def read_json_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise APIError(413, f"request body is {declared} bytes; the limit is {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise APIError(413, f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_body(model_cls, raw: bytes):
    try:
        return model_cls.model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        if errors and errors[0].get("type") == "json_invalid":
            raise APIError(400, f"request body is not valid JSON: {errors[0].get('msg')}") from None
        message, param = pydantic_errors_to_message(errors)
        raise APIError(400, message, param) from None


class ClientDisconnected(Exception):
    """The client went away before its response was ready; its work was cancelled."""


async def until_disconnected(request: Request, work):
    """Run `work`; if the client goes away first, cancel it (which aborts the engine request)
    and raise :class:`ClientDisconnected`. A cancellation of the caller itself (shutdown)
    propagates unchanged."""
    task = asyncio.ensure_future(work)
    disconnected = False

    async def watch():
        nonlocal disconnected
        while not task.done():
            message = await request.receive()
            if message["type"] == "http.disconnect":
                disconnected = True
                task.cancel()
                return

    watcher = asyncio.ensure_future(watch())
    try:
        return await task
    except asyncio.CancelledError:
        if disconnected and not asyncio.current_task().cancelling():
            raise ClientDisconnected from None
        raise
    finally:
        watcher.cancel()


def create_app(ctx: ServerContext, start_engine: bool = True) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        starter = asyncio.create_task(ctx.engine.start()) if start_engine else None
        watchdog = LoopWatchdog(ctx.metrics)
        watchdog.start(asyncio.get_running_loop())
        try:
            yield
        finally:
            watchdog.stop()
            if starter is not None and not starter.done():
                await asyncio.wait([starter], timeout=120)
            ctx.engine.shutdown()

    app = FastAPI(title="greyelephant", version="0.1.0", lifespan=lifespan,
                  docs_url="/docs", redoc_url=None)
    app.state.ctx = ctx
    settings = ctx.settings
    metrics = ctx.metrics

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return error_response(exc.status, exc.message, exc.param, exc.code, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        return error_response(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        logger.exception("unhandled error on %s", request.url.path)
        return error_response(500, f"internal error: {type(exc).__name__}")

    def check_auth(request: Request, key: str | None, what: str = "API") -> None:
        if key is None:
            return
        header = request.headers.get("authorization", "")
        token = header[7:] if header[:7].lower() == "bearer " else ""
        if not hmac.compare_digest(token.encode(), key.encode()):
            raise APIError(401, f"missing or invalid {what} key (Authorization: Bearer …)",
                           code="invalid_api_key")

    async def generation_route(request: Request, model_cls, handler, stream_handler,
                               route: str, id_prefix: str):
        started = time.perf_counter()
        status = 500
        ticket = None
        # first, so that the access log line names the request whatever happens next
        request_id = new_request_id(id_prefix, request.headers.get("x-request-id"))
        try:
            check_auth(request, settings.api_key)
            req = parse_body(model_cls, await read_json_body(request, settings.max_body_bytes))
            ticket = ctx.admission.admit(req.n * _prompt_count(req))
            headers = {"X-Request-Id": request_id}
            timeout = settings.request_timeout
            if req.stream:
                events = await within(stream_handler(ctx, req, request_id), timeout, metrics)
                status = 200
                guarded = guarded_stream(events, ticket, timeout, metrics)
                ticket = None  # the stream releases it when it ends
                return StreamingResponse(guarded, media_type="text/event-stream",
                                         headers=headers)
            body = await until_disconnected(request, within(handler(ctx, req, request_id),
                                                            timeout, metrics))
            status = 200
            if prompts_logged():
                access_log.info("exchange", extra={"request_id": request_id,
                                                   "prompt": _prompt_of(req),
                                                   "output": [c.get("message", c).get(
                                                       "content", c.get("text"))
                                                       for c in body["choices"]]})
            return _json(body, headers=headers)
        except APIError as exc:
            status = exc.status
            raise
        except ClientDisconnected:
            # nobody reads this response; the status is for the access log and /metrics
            status = 499
            return Response(status_code=499)
        except asyncio.CancelledError:
            status = 499
            raise
        finally:
            if ticket is not None:
                ticket.release()
            elapsed = time.perf_counter() - started
            metrics.requests.labels(route, str(status)).inc()
            metrics.latency.labels(route).observe(elapsed)
            access_log.info("request", extra={"request_id": request_id, "route": route,
                                              "status": status,
                                              "latency_s": round(elapsed, 4)})

    @app.post("/v1/chat/completions", openapi_extra=request_bodies(ChatCompletionRequest))
    async def chat(request: Request):
        return await generation_route(request, ChatCompletionRequest, chat_completion,
                                      chat_completion_stream, "chat", "chatcmpl")

    @app.post("/v1/completions", openapi_extra=request_bodies(CompletionRequest))
    async def completions(request: Request):
        return await generation_route(request, CompletionRequest, completion,
                                      completion_stream, "completions", "cmpl")

    @app.get("/v1/models")
    async def models(request: Request):
        check_auth(request, settings.api_key)
        ctx.require_ready()
        info = ctx.engine.info
        data = [{"id": info.served_model_name, "object": "model", "created": info.created,
                 "owned_by": "greyelephant", "root": info.model_path, "parent": None,
                 "max_model_len": info.max_model_len}]
        for adapter in ctx.adapters:
            data.append({"id": adapter.name, "object": "model", "created": adapter.created,
                         "owned_by": "greyelephant", "root": adapter.path,
                         "parent": info.served_model_name})
        return _json({"object": "list", "data": data})

    @app.get("/v1/models/{name:path}")
    async def model(request: Request, name: str):
        check_auth(request, settings.api_key)
        ctx.require_ready()
        ctx.resolve_model(name)
        listing = msgspec.json.decode((await models(request)).body)
        return _json(next(m for m in listing["data"] if m["id"] == name))

    @app.post("/v1/adapters/load", openapi_extra=request_bodies(LoadAdapterRequest))
    async def load_adapter(request: Request):
        check_admin(request)
        ctx.require_ready()
        req = parse_body(LoadAdapterRequest, await read_json_body(request, settings.max_body_bytes))
        if req.name == ctx.engine.served_model_name:
            raise APIError(400, "adapter name collides with the base model's name", "name")
        adapter = ctx.adapters.add(req.name, req.path, roots=settings.adapter_roots)
        try:
            await ctx.engine.engine.add_lora(adapter.lora_request(ctx.engine.served_model_name))
        except Exception as exc:
            ctx.adapters.remove(req.name)
            raise APIError(400, f"could not load adapter: {exc}", "path") from exc
        return _json({"id": adapter.name, "object": "model", "parent": ctx.engine.served_model_name,
                      "root": adapter.path})

    @app.post("/v1/adapters/unload", openapi_extra=request_bodies(UnloadAdapterRequest))
    async def unload_adapter(request: Request):
        check_admin(request)
        ctx.require_ready()
        req = parse_body(UnloadAdapterRequest, await read_json_body(request, settings.max_body_bytes))
        adapter = ctx.adapters.remove(req.name)
        await ctx.engine.engine.remove_lora(adapter.lora_int_id)
        return _json({"id": adapter.name, "object": "model", "deleted": True})

    def check_admin(request: Request) -> None:
        if settings.admin_key is None:
            raise APIError(403, "adapter management is disabled (start the server with --admin-key)",
                           code="admin_disabled")
        check_auth(request, settings.admin_key, "admin")

    @app.get("/health")
    async def health():
        """Liveness: the process answers. Readiness is /ready."""
        return _json({"status": "ok"})

    @app.get("/ready")
    async def ready():
        engine = ctx.engine
        if ctx.admission.draining:
            return error_response(503, "the server is shutting down", code="server_shutting_down")
        if engine.ready:
            try:
                await engine.engine.check_health()
            except Exception as exc:
                return error_response(503, f"engine unhealthy: {exc}", code="engine_unavailable")
            return _json({"status": "ready", "model": engine.served_model_name,
                          "dtype": engine.info.dtype})
        return error_response(503, f"not ready: {engine.error or engine.state}",
                              code="model_not_ready")

    @app.get("/metrics")
    async def prometheus():
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return app
