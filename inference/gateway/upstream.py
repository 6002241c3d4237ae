"""The gateway's calls to its runtime: POSTs relayed (streamed answers chunk by chunk as they arrive),
GETs of fixed upstream paths, and what the runtime tells once (its context length, whether it honours
`seed`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import ClientError, ClientTimeout, web

from inference.gateway.jsonio import JSON, detail_response, loads, openai_error
from inference.gateway.state import HEALTH_PATH, MAX_MODEL_LEN, SEED_HONOURED, SESSION, UPSTREAM
from inference.gateway.stream import EventShaper, ModelRenamer, shaped_answer
from inference.gateway.translation import max_model_len_of
from inference.gateway.validation import honours_seed

HEALTH_TIMEOUT_S = 25.0


async def _ask_once(request: web.Request, known: dict, path: str, decide: Callable[[int, bytes], tuple[bool, Any]]):
    """known["value"]: what `decide` reads from the runtime's answer at `path`, asked until it can read one
    (while the runtime is not up, or answers what `decide` cannot read, it is asked again next time)."""
    if "value" in known:
        return
    try:
        async with request.app[SESSION].get(
            request.app[UPSTREAM] + path, timeout=ClientTimeout(total=HEALTH_TIMEOUT_S)
        ) as up:
            decided, value = decide(up.status, await up.read())
            if decided:
                known["value"] = value
    except (ClientError, TimeoutError, ValueError):
        pass


def _context_length(status: int, data: bytes) -> tuple[bool, int | None]:
    # A runtime that does not list it is not asked again.
    return (True, max_model_len_of(loads(data))) if status == 200 else (False, None)


def _seed_honoured(status: int, data: bytes) -> tuple[bool, bool]:
    if status == 200:
        return True, honours_seed(loads(data))
    return status == 404, True


async def max_model_len(request: web.Request) -> int | None:
    """The runtime's context length, read once from its /v1/models (None while it is not up)."""
    known = request.app[MAX_MODEL_LEN]
    await _ask_once(request, known, "/v1/models", _context_length)
    return known.get("value")


async def runtime_honours_seed(request: web.Request) -> bool:
    """Whether the runtime makes sampling repeatable for a `seed`, read once from its /server_info
    (SGLang lists its server arguments there; the transformers runtime has none and honours `seed`).
    While the runtime cannot tell, the request goes through unchanged."""
    known = request.app[SEED_HONOURED]
    await _ask_once(request, known, "/server_info", _seed_honoured)
    return known.get("value", True)


async def runtime_up(app: web.Application) -> bool:
    try:
        async with app[SESSION].get(app[UPSTREAM] + app[HEALTH_PATH], timeout=ClientTimeout(total=5)) as up:
            await up.read()
            return up.status == 200
    except (ClientError, TimeoutError):
        return False


async def relay(
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
                return openai_error(f"{path}: the model server answered HTTP {up.status}: {text}", up.status)
            if not stream or up.status != 200:
                data = await up.read()
                if rename:
                    data = rename(data) + rename.flush()
                if stops is not None and up.status == 200:
                    data = shaped_answer(data, stops)
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
        return detail_response(f"model server unavailable: {type(e).__name__}: {e}", 503)


async def get_upstream(request: web.Request, upstream_path: str) -> web.StreamResponse:
    try:
        async with request.app[SESSION].get(request.app[UPSTREAM] + upstream_path) as up:
            return web.Response(
                body=await up.read(),
                status=up.status,
                headers={"Content-Type": up.headers.get("Content-Type", "text/plain")},
            )
    except ClientError as e:
        return detail_response(f"model server unavailable: {type(e).__name__}", 503)
