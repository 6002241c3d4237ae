"""The gateway's aiohttp app: its routes and their handlers, and the middleware that makes every error
the gateway answers itself OpenAI-shaped JSON.

Only the routes below reach the runtime, each to a fixed upstream path (the runtime's admin endpoints
share its port). `model` is checked before anything is forwarded: unknown models and adapters get a
400 (SGLang checks adapter names but routes any unknown base name to the base model).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector, web

from inference.gateway.answers import shape_answer, stop_strings_of
from inference.gateway.body import DEFAULT_MAX_BODY_BYTES, BodyTooLarge, read_json
from inference.gateway.jsonio import JSON, detail_response, dumps, json_response, loads, openai_error
from inference.gateway.kaito_chat import chat_result, plan_chat, upstream_error_detail
from inference.gateway.state import (
    CREATED,
    HEALTH_PATH,
    LIVE,
    MAX_BODY_BYTES,
    MAX_MODEL_LEN,
    RUNTIME_PID,
    SEED_HONOURED,
    SERVED,
    SESSION,
    UPSTREAM,
    ServedBox,
    served_now,
)
from inference.gateway.translation import Served, model_entry, models_listing, route_openai
from inference.gateway.upstream import (
    HEALTH_TIMEOUT_S,
    get_upstream,
    max_model_len,
    relay,
    runtime_honours_seed,
    runtime_up,
)
from inference.gateway.validation import RequestError, check_seed, path_is_plain, safe_path_segment, seed_matters

if TYPE_CHECKING:
    from inference.live_adapters_runner import LiveAdapters


async def healthz(request: web.Request) -> web.Response:
    pid = request.app[RUNTIME_PID]
    if pid:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return detail_response(f"model runtime (pid {pid}) has exited", 503)
        except PermissionError:
            pass
    return json_response({"status": "alive"})


async def health(request: web.Request) -> web.Response:
    try:
        async with request.app[SESSION].get(
            request.app[UPSTREAM] + request.app[HEALTH_PATH], timeout=ClientTimeout(total=HEALTH_TIMEOUT_S)
        ) as up:
            await up.read()
            if up.status == 200:
                live = request.app[LIVE]
                if live is not None and not live.started:
                    return detail_response("loading the Workspace's adapters (GET /adapters shows their state)", 503)
                return json_response({"status": "Healthy"})
            return detail_response(f"model runtime not ready (HTTP {up.status})", 503)
    except (ClientError, TimeoutError) as e:
        return detail_response(f"model runtime not ready: {type(e).__name__}", 503)


async def models(request: web.Request) -> web.Response:
    return json_response(models_listing(served_now(request), request.app[CREATED], await max_model_len(request)))


async def model(request: web.Request) -> web.Response:
    entry = model_entry(
        served_now(request), request.app[CREATED], request.match_info["model_id"], await max_model_len(request)
    )
    if entry is None:
        message = f"The model '{request.match_info['model_id']}' does not exist"
        return json_response(
            {
                "object": "error",
                "error": {"message": message, "type": "invalid_request_error", "code": "model_not_found"},
                "message": message,
            },
            404,
        )
    return json_response(entry)


def _openai_handler(path: str):
    answers_shaped = path in ("/v1/chat/completions", "/v1/completions")

    async def handler(request: web.Request) -> web.StreamResponse:
        try:
            raw, body = await read_json(request)
            served = served_now(request)
            forward, changed = route_openai(body, served, await max_model_len(request))
            if seed_matters(forward):
                check_seed(forward, await runtime_honours_seed(request))
        except RequestError as e:
            return openai_error(str(e))
        renames = served.client_model_names() if served.upstream_names else None
        stops = stop_strings_of(forward) if answers_shaped else None
        return await relay(
            request, path, dumps(forward) if changed else raw, forward.get("stream") is True, renames, stops
        )

    return handler


async def chat(request: web.Request) -> web.Response:
    try:
        _, body = await read_json(request)
        plan = plan_chat(body, served_now(request), await max_model_len(request))
        if seed_matters(plan.payload):
            check_seed(plan.payload, await runtime_honours_seed(request))
    except RequestError as e:
        return detail_response(str(e), 400)
    try:
        async with request.app[SESSION].post(
            request.app[UPSTREAM] + plan.path, data=dumps(plan.payload), headers={"Content-Type": JSON}
        ) as up:
            data = await up.read()
            if up.status != 200:
                return detail_response(upstream_error_detail(up.status, data), up.status)
    except ClientError as e:
        return detail_response(f"model server unavailable: {type(e).__name__}: {e}", 503)
    try:
        answer = loads(data)
        shape_answer(answer, stop_strings_of(plan.payload))
        return json_response(chat_result(plan, answer))
    except ValueError as e:
        return detail_response(str(e), 502)


def _passthrough(upstream_path: str):
    """GET a fixed upstream path: the client's path never reaches the runtime, whose admin endpoints
    (flush_cache, start_profile, ...) sit on the same port."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return await get_upstream(request, upstream_path)

    return handler


async def stored_response(request: web.Request) -> web.StreamResponse:
    """GET /v1/responses/{id}: the id is one plain path segment (letters, digits, '-', '_')."""
    response_id = request.match_info["response_id"]
    if not safe_path_segment(response_id):
        return openai_error(f"invalid response id {response_id!r}: letters, digits, '-' and '_' only", 400)
    return await get_upstream(request, "/v1/responses/" + response_id)


SERVED_ROUTES = "POST /v1/chat/completions, /v1/completions, /v1/responses, /chat; GET /v1/models, /health"


@web.middleware
async def openai_errors(request: web.Request, handler) -> web.StreamResponse:
    """Every error the gateway itself answers is OpenAI-shaped JSON: unknown routes (e.g. embeddings),
    wrong methods, oversized bodies, and paths that try to leave their route."""
    if not path_is_plain(request.raw_path):
        return openai_error(f"Invalid URL ({request.method} {request.raw_path}): not a plain path", 404)
    try:
        return await handler(request)
    except BodyTooLarge as e:
        response = openai_error(str(e), 413)
        response.force_close()  # not wait for (and read) the rest of a body that is refused anyway
        return response
    except web.HTTPException as e:
        if e.status < 400:
            raise
        if e.status == 404:
            message = f"Invalid URL ({request.method} {request.path}): this server serves {SERVED_ROUTES}"
        elif e.status == 405:
            message = f"Invalid method {request.method} for {request.path}; allowed: {e.headers.get('Allow', '')}"
        else:
            message = e.text or e.reason
        response = openai_error(message, e.status)
        if "Allow" in e.headers:
            response.headers["Allow"] = e.headers["Allow"]
        return response


async def root(request: web.Request) -> web.Response:
    return json_response({"message": "Server is running"})


async def worker_only(request: web.Request) -> web.Response:
    return detail_response(
        "this pod runs a runtime worker (node-rank > 0); send requests to the workspace Service", 503
    )


async def _session_ctx(app: web.Application):
    app[SESSION] = ClientSession(
        connector=TCPConnector(limit=0, keepalive_timeout=60),
        timeout=ClientTimeout(total=None, sock_connect=5),
        auto_decompress=False,
    )
    yield
    await app[SESSION].close()


async def adapters_report(request: web.Request) -> web.Response:
    """The live adapters' states (Pending, Loading, Ready, Failed with a reason) on this pod."""
    live = request.app[LIVE]
    if live is None:
        return json_response(
            {"adapters": [{"name": a, "state": "Ready"} for a in served_now(request).adapters], "live": False}
        )
    return json_response({**live.agent.report(), "live": True, "started": live.started})


async def _live_adapters_ctx(app: web.Application):
    live = app[LIVE]
    assert live is not None, "registered only with live adapters"
    task = asyncio.get_running_loop().create_task(live.run(lambda: runtime_up(app)))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def make_app(
    served: Served,
    upstream: str,
    runtime_pid: int = 0,
    worker: bool = False,
    live_adapters: Callable[[Callable[[Served], None]], LiveAdapters] | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> web.Application:
    """`live_adapters(publish)` builds the live-adapter runner (inference.live_adapters_runner) given the
    function that switches what the gateway serves."""
    app = web.Application(client_max_size=max_body_bytes, middlewares=[openai_errors])
    app[MAX_BODY_BYTES] = max_body_bytes
    app[SEED_HONOURED] = {}
    box = ServedBox(served)
    app[SERVED] = box
    app[LIVE] = None
    if live_adapters is not None and not worker:

        def publish(new: Served) -> None:
            box.current = new

        app[LIVE] = live_adapters(publish)
    app[UPSTREAM] = upstream.rstrip("/")
    app[RUNTIME_PID] = runtime_pid
    app[HEALTH_PATH] = "/health"
    app[CREATED] = int(time.time())
    app[MAX_MODEL_LEN] = {}
    app.cleanup_ctx.append(_session_ctx)
    if app[LIVE] is not None:
        app.cleanup_ctx.append(_live_adapters_ctx)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/health", health)
    if worker:
        app.router.add_route("*", "/{tail:.*}", worker_only)
        return app
    app.router.add_get("/", root)
    app.router.add_post("/chat", chat)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/adapters", adapters_report)
    app.router.add_get("/v1/models/{model_id}", model)
    app.router.add_post("/v1/chat/completions", _openai_handler("/v1/chat/completions"))
    app.router.add_post("/v1/completions", _openai_handler("/v1/completions"))
    app.router.add_post("/v1/responses", _openai_handler("/v1/responses"))
    app.router.add_get("/v1/responses/{response_id}", stored_response)
    app.router.add_get("/metrics", _passthrough("/metrics"))
    # sglang-router reads these from each replica it adds (model name, tokenizer path, server args).
    app.router.add_get("/server_info", _passthrough("/server_info"))
    app.router.add_get("/model_info", _passthrough("/model_info"))
    return app
