"""The client port (5000): Kaito's POST /chat and the OpenAI API in front of the model server.

A small aiohttp app: it checks `model` (unknown models and adapters get a 400: SGLang checks adapter
names but routes any unknown base name to the base model), turns /chat into one OpenAI call (by
default to the combined adapter: all adapters weighted by strength), lists models (with the runtime's
max_model_len), and passes the rest of the OpenAI API through (/v1/responses too); streamed answers are
relayed chunk by chunk as they arrive. `--worker` (node-rank > 0 pods) serves only the health
endpoints: those pods run a runtime worker, not the API.

What reaches the runtime is bounded: only the routes below, each to a fixed upstream path (the runtime's
admin endpoints share its port); bodies up to --max-body-mib; `n`, `top_logprobs` and token budgets
capped. Answers are held to the OpenAI SDK's types and stop strings (gateway_translation.shape_answer),
and every error the gateway makes itself is OpenAI-shaped JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector, web

from inference import GATEWAY_PORT, UPSTREAM_HOST, UPSTREAM_PORT, egress_guard
from inference.gateway_translation import (
    RequestError,
    Served,
    chat_result,
    check_seed,
    honours_seed,
    max_model_len_of,
    model_entry,
    models_listing,
    path_is_plain,
    plan_chat,
    route_openai,
    safe_path_segment,
    seed_matters,
    shape_answer,
    shape_chunk,
    stop_strings_of,
    upstream_error_detail,
)

if TYPE_CHECKING:
    from inference.live_adapters_runner import LiveAdapters

try:  # faster when present (it is in the SGLang image)
    import orjson

    def _loads(b: bytes):
        return orjson.loads(b)

    def _dumps(o) -> bytes:
        return orjson.dumps(o)
except ImportError:  # pragma: no cover

    def _loads(b: bytes):
        return json.loads(b)

    def _dumps(o) -> bytes:
        return json.dumps(o).encode()


class ServedBox:
    """What the gateway serves now: replaced whole when live adapters change (inference.live_adapters)."""

    def __init__(self, served: Served):
        self.current = served


SERVED = web.AppKey("served", ServedBox)
LIVE: web.AppKey[LiveAdapters | None] = web.AppKey("live")
UPSTREAM = web.AppKey("upstream", str)
SESSION = web.AppKey("session", ClientSession)
RUNTIME_PID = web.AppKey("runtime_pid", int)
HEALTH_PATH = web.AppKey("health_path", str)  # the upstream path /health asks
CREATED = web.AppKey("created", int)
MAX_MODEL_LEN = web.AppKey("max_model_len", dict)  # {"value": int} once the runtime has told it
SEED_HONOURED = web.AppKey("seed_honoured", dict)  # {"value": bool} once the runtime has told it
MAX_BODY_BYTES = web.AppKey("max_body_bytes", int)
# Request bodies above this are refused as they arrive (a long prompt is well under 1 MiB; images sent
# inline as base64 are the large legitimate case).
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
HEALTH_TIMEOUT_S = 25.0
JSON = "application/json"


def _served(request: web.Request) -> Served:
    return request.app[SERVED].current


def _json(obj, status: int = 200) -> web.Response:
    return web.Response(body=_dumps(obj), status=status, content_type=JSON)


def _detail(message: str, status: int) -> web.Response:
    return _json({"detail": message}, status)


class BodyTooLarge(Exception):
    """A request body over the gateway's limit (answered 413 naming the limit)."""


async def _read_body(request: web.Request) -> bytes:
    """The body, read as it arrives and abandoned at the limit: a declared Content-Length over it is
    refused before reading anything, a chunked body once the limit is passed."""
    limit = request.app[MAX_BODY_BYTES]
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLarge(_too_large(limit))
    body = bytearray()
    async for chunk in request.content.iter_chunked(256 * 1024):
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge(_too_large(limit))
    return bytes(body)


def _too_large(limit: int) -> str:
    return f"request body is larger than the gateway's limit of {limit} bytes ({limit // (1024 * 1024)} MiB)"


async def _read_json(request: web.Request):
    raw = await _read_body(request)
    try:
        return raw, _loads(raw)
    except ValueError:
        raise RequestError("request body is not valid JSON") from None


async def healthz(request: web.Request) -> web.Response:
    pid = request.app[RUNTIME_PID]
    if pid:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return _detail(f"model runtime (pid {pid}) has exited", 503)
        except PermissionError:
            pass
    return _json({"status": "alive"})


async def health(request: web.Request) -> web.Response:
    try:
        async with request.app[SESSION].get(
            request.app[UPSTREAM] + request.app[HEALTH_PATH], timeout=ClientTimeout(total=HEALTH_TIMEOUT_S)
        ) as up:
            await up.read()
            if up.status == 200:
                live = request.app[LIVE]
                if live is not None and not live.started:
                    return _detail("loading the Workspace's adapters (GET /adapters shows their state)", 503)
                return _json({"status": "Healthy"})
            return _detail(f"model runtime not ready (HTTP {up.status})", 503)
    except (ClientError, TimeoutError) as e:
        return _detail(f"model runtime not ready: {type(e).__name__}", 503)


async def _max_model_len(request: web.Request) -> int | None:
    """The runtime's context length, read once from its /v1/models (None while it is not up)."""
    known = request.app[MAX_MODEL_LEN]
    if "value" not in known:
        try:
            async with request.app[SESSION].get(
                request.app[UPSTREAM] + "/v1/models", timeout=ClientTimeout(total=HEALTH_TIMEOUT_S)
            ) as up:
                if up.status == 200:  # a runtime that does not list it is not asked again
                    known["value"] = max_model_len_of(_loads(await up.read()))
        except (ClientError, TimeoutError, ValueError):
            pass
    return known.get("value")


async def _runtime_honours_seed(request: web.Request) -> bool:
    """Whether the runtime makes sampling repeatable for a `seed`, read once from its /server_info
    (SGLang lists its server arguments there; the transformers runtime has none and honours `seed`).
    While the runtime cannot tell, the request goes through unchanged."""
    known = request.app[SEED_HONOURED]
    if "value" not in known:
        try:
            async with request.app[SESSION].get(
                request.app[UPSTREAM] + "/server_info", timeout=ClientTimeout(total=HEALTH_TIMEOUT_S)
            ) as up:
                data = await up.read()
                if up.status == 200:
                    known["value"] = honours_seed(_loads(data))
                elif up.status == 404:
                    known["value"] = True
        except (ClientError, TimeoutError, ValueError):
            pass
    return known.get("value", True)


async def models(request: web.Request) -> web.Response:
    return _json(models_listing(_served(request), request.app[CREATED], await _max_model_len(request)))


async def model(request: web.Request) -> web.Response:
    entry = model_entry(
        _served(request), request.app[CREATED], request.match_info["model_id"], await _max_model_len(request)
    )
    if entry is None:
        message = f"The model '{request.match_info['model_id']}' does not exist"
        return _json(
            {
                "object": "error",
                "error": {"message": message, "type": "invalid_request_error", "code": "model_not_found"},
                "message": message,
            },
            404,
        )
    return _json(entry)


class ModelRenamer:
    """Gives a live adapter's answers back the name the client used (the runtime echoes its internal
    name, e.g. "phi:fin.3", in `model`). Streams are rewritten across chunk boundaries: a tail that could
    be the start of a name waits for the next chunk."""

    def __init__(self, names: dict[str, str]):
        self.pairs = [(f'"{up}"'.encode(), f'"{client}"'.encode()) for up, client in names.items()]
        self.keep = max((len(old) for old, _ in self.pairs), default=1) - 1
        self.carry = b""

    def __call__(self, chunk: bytes) -> bytes:
        data = self.carry + chunk
        for old, new in self.pairs:
            data = data.replace(old, new)
        if self.keep:
            data, self.carry = data[: -self.keep], data[-self.keep :]
        return data

    def flush(self) -> bytes:
        data, self.carry = self.carry, b""
        return data


class EventShaper:
    """Rewrites a server-sent event stream chunk by chunk (shape_chunk on each `data:` event); bytes
    of an event split across chunks wait for the rest of it."""

    def __init__(self, stops: list[str]):
        self.stops = stops
        self.cutters: dict = {}
        self.buffer = b""

    def __call__(self, data: bytes) -> bytes:
        self.buffer += data
        out = []
        while (end := self.buffer.find(b"\n\n")) >= 0:
            event, self.buffer = self.buffer[: end + 2], self.buffer[end + 2 :]
            out.append(self._event(event))
        return b"".join(out)

    def _event(self, event: bytes) -> bytes:
        if not event.startswith(b"data: ") or event.startswith(b"data: [DONE]"):
            return event
        try:
            chunk = _loads(event[6:])
        except ValueError:
            return event
        return b"data: " + _dumps(chunk) + b"\n\n" if shape_chunk(chunk, self.stops, self.cutters) else event

    def flush(self) -> bytes:
        data, self.buffer = self.buffer, b""
        return data


def _shaped_answer(data: bytes, stops: list[str]) -> bytes:
    try:
        answer = _loads(data)
    except ValueError:
        return data
    return _dumps(answer) if shape_answer(answer, stops) else data


async def _relay(
    request: web.Request,
    path: str,
    body: bytes,
    stream: bool,
    renames: dict[str, str] | None = None,
    stops: list[str] | None = None,
) -> web.StreamResponse:
    """`stops`: None leaves the answer as the runtime gave it (the Responses API); a list (maybe empty)
    holds a chat/completions answer to the OpenAI types and cuts it at the earliest stop string."""
    try:
        up_cm = request.app[SESSION].post(request.app[UPSTREAM] + path, data=body, headers={"Content-Type": JSON})
        async with up_cm as up:
            ctype = up.headers.get("Content-Type", JSON)
            rename = ModelRenamer(renames) if renames else None
            if up.status >= 400 and not ctype.startswith(JSON):  # e.g. a route this runtime lacks
                text = (await up.read())[:200].decode("utf-8", "replace")
                return _openai_error(f"{path}: the model server answered HTTP {up.status}: {text}", up.status)
            if not stream or up.status != 200:
                data = await up.read()
                if rename:
                    data = rename(data) + rename.flush()
                if stops is not None and up.status == 200:
                    data = _shaped_answer(data, stops)
                return web.Response(body=data, status=up.status, headers={"Content-Type": ctype})
            # Parsing every event costs CPU per token: only when the runtime's own cut can be wrong
            # (several stop strings, SGLang cuts at the first in list order).
            shaper = EventShaper(stops) if stops is not None and len(stops) > 1 else None
            resp = web.StreamResponse(
                status=200, headers={"Content-Type": ctype, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
            )
            await resp.prepare(request)
            async for piece in up.content.iter_any():
                data = rename(piece) if rename else piece
                await resp.write(shaper(data) if shaper else data)
            tail = rename.flush() if rename else b""
            if shaper:
                tail = shaper(tail) + shaper.flush()
            if tail:
                await resp.write(tail)
            await resp.write_eof()
            return resp
    except ClientError as e:
        return _detail(f"model server unavailable: {type(e).__name__}: {e}", 503)


def _openai_handler(path: str):
    answers_shaped = path in ("/v1/chat/completions", "/v1/completions")

    async def handler(request: web.Request) -> web.StreamResponse:
        try:
            raw, body = await _read_json(request)
            served = _served(request)
            forward, changed = route_openai(body, served, await _max_model_len(request))
            if seed_matters(forward):
                check_seed(forward, await _runtime_honours_seed(request))
        except RequestError as e:
            return _openai_error(str(e))
        renames = served.client_model_names() if served.upstream_names else None
        stops = stop_strings_of(forward) if answers_shaped else None
        return await _relay(
            request, path, _dumps(forward) if changed else raw, forward.get("stream") is True, renames, stops
        )

    return handler


def _openai_error(message: str, status: int = 400) -> web.Response:
    # OpenAI clients read error.message; Kaito-style clients read detail.
    return _json(
        {
            "object": "error",
            "error": {"message": message, "type": "invalid_request_error", "code": status},
            "message": message,
            "detail": message,
        },
        status,
    )


async def chat(request: web.Request) -> web.Response:
    try:
        _, body = await _read_json(request)
        plan = plan_chat(body, _served(request), await _max_model_len(request))
        if seed_matters(plan.payload):
            check_seed(plan.payload, await _runtime_honours_seed(request))
    except RequestError as e:
        return _detail(str(e), 400)
    try:
        async with request.app[SESSION].post(
            request.app[UPSTREAM] + plan.path, data=_dumps(plan.payload), headers={"Content-Type": JSON}
        ) as up:
            data = await up.read()
            if up.status != 200:
                return _detail(upstream_error_detail(up.status, data), up.status)
    except ClientError as e:
        return _detail(f"model server unavailable: {type(e).__name__}: {e}", 503)
    try:
        answer = _loads(data)
        shape_answer(answer, stop_strings_of(plan.payload))
        return _json(chat_result(plan, answer))
    except ValueError as e:
        return _detail(str(e), 502)


def _passthrough(upstream_path: str):
    """GET a fixed upstream path: the client's path never reaches the runtime, whose admin endpoints
    (flush_cache, start_profile, ...) sit on the same port."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return await _get_upstream(request, upstream_path)

    return handler


async def stored_response(request: web.Request) -> web.StreamResponse:
    """GET /v1/responses/{id}: the id is one plain path segment (letters, digits, '-', '_')."""
    response_id = request.match_info["response_id"]
    if not safe_path_segment(response_id):
        return _openai_error(f"invalid response id {response_id!r}: letters, digits, '-' and '_' only", 400)
    return await _get_upstream(request, "/v1/responses/" + response_id)


async def _get_upstream(request: web.Request, upstream_path: str) -> web.StreamResponse:
    try:
        async with request.app[SESSION].get(request.app[UPSTREAM] + upstream_path) as up:
            return web.Response(
                body=await up.read(),
                status=up.status,
                headers={"Content-Type": up.headers.get("Content-Type", "text/plain")},
            )
    except ClientError as e:
        return _detail(f"model server unavailable: {type(e).__name__}", 503)


SERVED_ROUTES = "POST /v1/chat/completions, /v1/completions, /v1/responses, /chat; GET /v1/models, /health"


@web.middleware
async def openai_errors(request: web.Request, handler) -> web.StreamResponse:
    """Every error the gateway itself answers is OpenAI-shaped JSON: unknown routes (e.g. embeddings),
    wrong methods, oversized bodies, and paths that try to leave their route."""
    if not path_is_plain(request.raw_path):
        return _openai_error(f"Invalid URL ({request.method} {request.raw_path}): not a plain path", 404)
    try:
        return await handler(request)
    except BodyTooLarge as e:
        response = _openai_error(str(e), 413)
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
        response = _openai_error(message, e.status)
        if "Allow" in e.headers:
            response.headers["Allow"] = e.headers["Allow"]
        return response


async def root(request: web.Request) -> web.Response:
    return _json({"message": "Server is running"})


async def worker_only(request: web.Request) -> web.Response:
    return _detail("this pod runs a runtime worker (node-rank > 0); send requests to the workspace Service", 503)


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
        return _json({"adapters": [{"name": a, "state": "Ready"} for a in _served(request).adapters], "live": False})
    return _json({**live.agent.report(), "live": True, "started": live.started})


async def _runtime_up(app: web.Application) -> bool:
    try:
        async with app[SESSION].get(app[UPSTREAM] + app[HEALTH_PATH], timeout=ClientTimeout(total=5)) as up:
            await up.read()
            return up.status == 200
    except (ClientError, TimeoutError):
        return False


async def _live_adapters_ctx(app: web.Application):
    live = app[LIVE]
    assert live is not None, "registered only with live adapters"
    task = asyncio.get_running_loop().create_task(live.run(lambda: _runtime_up(app)))
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


def _fork_workers(workers: int) -> None:
    """Become `workers` processes accepting on one port (SO_REUSEPORT: the kernel spreads the connections),
    so one event loop does not cap a busy port (the router pod's gateway carries every replica's traffic).
    The extra processes exit with the first (PR_SET_PDEATHSIG)."""
    import ctypes
    import signal

    for _ in range(workers - 1):
        if os.fork() == 0:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
            return


def served_names_from(base: Served, desired_file: str) -> Served:
    """The router pod's view of the live adapter set: the names only (each replica's gateway maps them to
    what its runtime loaded); /chat's default is the combined adapter with two or more, as on a replica."""
    from inference.adapters import COMBINED_ADAPTER
    from inference.live_adapters import DesiredSetError, read_desired

    try:
        names = [d.name for d in read_desired(desired_file)]
    except DesiredSetError:
        return base  # keep serving the names it had
    if len(names) > 1:
        return Served(base.preset, (*names, COMBINED_ADAPTER), COMBINED_ADAPTER)
    return Served(base.preset, tuple(names), names[0] if names else None)


class NamesFollower:
    """Re-reads the desired set's names once a second (kubelet updates the mounted ConfigMap in place)."""

    def __init__(self, base: Served, desired_file: str, publish: Callable[[Served], None]):
        self.base, self.desired_file, self._publish = base, desired_file, publish
        publish(served_names_from(base, desired_file))

    async def run(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self._publish(served_names_from(self.base, self.desired_file))

    async def ctx(self, app: web.Application):
        task = asyncio.get_running_loop().create_task(self.run())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _live_adapters_factory(ns: argparse.Namespace, served: Served):
    from inference.live_adapters import Capacity
    from inference.live_adapters_runner import LiveAdapters

    defaults = Capacity()
    capacity = Capacity(
        ns.max_lora_rank or defaults.max_rank,
        frozenset(ns.lora_target_modules) if ns.lora_target_modules else defaults.target_modules,
        ns.max_adapters or defaults.max_adapters,
    )
    return lambda publish: LiveAdapters(
        served, ns.upstream, ns.live_adapters, ns.adapter_files, ns.adapter_work_dir, capacity, publish
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m inference.gateway")
    p.add_argument("--served-model-name", required=True)
    p.add_argument("--adapter", action="append", default=[])
    p.add_argument("--chat-default-adapter", default=None, help="the adapter /chat uses when none is named")
    p.add_argument("--upstream", default=f"http://{UPSTREAM_HOST}:{UPSTREAM_PORT}")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=GATEWAY_PORT)
    p.add_argument("--runtime-pid", type=int, default=0, help="/healthz fails once this process is gone")
    p.add_argument("--worker", action="store_true", help="node-rank > 0: health endpoints only")
    p.add_argument(
        "--upstream-health-path",
        default="/health",
        help="what /health asks the upstream (the router pod: sglang-router's /readiness)",
    )
    p.add_argument("--workers", type=int, default=1, help="processes sharing the port (SO_REUSEPORT)")
    p.add_argument(
        "--max-body-mib",
        type=float,
        default=DEFAULT_MAX_BODY_BYTES / (1024 * 1024),
        help="request bodies above this many MiB are refused with 413 as they arrive",
    )
    live = p.add_argument_group("live adapters (inference.live_adapters)")
    live.add_argument("--live-adapters", default=None, metavar="FILE", help="the published desired adapter set")
    live.add_argument("--adapter-files", default=None, metavar="DIR", help="where adapter images' files arrive")
    live.add_argument("--adapter-work-dir", default=None, metavar="DIR", help="the served adapter copies")
    live.add_argument("--max-lora-rank", type=int, default=None)
    live.add_argument("--lora-target-modules", nargs="*", default=None)
    live.add_argument("--max-adapters", type=int, default=None)
    live.add_argument(
        "--adapter-names-from",
        default=None,
        metavar="FILE",
        help="serve the names of this desired set (the router pod: replicas load the adapters)",
    )
    ns = p.parse_args(argv)
    served = Served(ns.served_model_name, tuple(ns.adapter), ns.chat_default_adapter)
    if ns.workers < 1:
        p.error("--workers must be at least 1")
    if not 0 < ns.max_body_mib <= 1024:
        p.error("--max-body-mib must be more than 0 and at most 1024")
    if ns.live_adapters and ns.adapter_names_from:
        p.error("--live-adapters and --adapter-names-from exclude each other")
    if ns.live_adapters and (ns.workers > 1 or not ns.adapter_files or not ns.adapter_work_dir):
        p.error("--live-adapters needs --adapter-files and --adapter-work-dir, and one worker process")
    # The gateway talks to its runtime only: nothing it does may reach past this machine.
    egress_guard.install(allowed_hosts=[urlsplit(ns.upstream).hostname or ""])
    app = make_app(
        served,
        ns.upstream,
        ns.runtime_pid,
        ns.worker,
        _live_adapters_factory(ns, served) if ns.live_adapters else None,
        max_body_bytes=int(ns.max_body_mib * 1024 * 1024),
    )
    app[HEALTH_PATH] = ns.upstream_health_path
    if ns.adapter_names_from:
        box = app[SERVED]

        def publish(new: Served) -> None:
            box.current = new

        app.cleanup_ctx.append(NamesFollower(served, ns.adapter_names_from, publish).ctx)
    _fork_workers(ns.workers)
    # handler_cancellation: a client that hangs up cancels its handler, which closes the upstream
    # connection, and SGLang aborts a generation whose HTTP client has gone (aiohttp's default lets the
    # handler, and so the generation, run to completion for nobody).
    web.run_app(
        app,
        host=ns.host,
        port=ns.port,
        access_log=None,
        print=None,
        handler_cancellation=True,
        reuse_port=ns.workers > 1,
    )


if __name__ == "__main__":
    main()
