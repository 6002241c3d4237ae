"""What a gateway app holds: the keys of its state (what it serves, its upstream and session, what the
runtime has told it) and the box that live adapters replace what it serves in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import ClientSession, web

from inference.gateway.translation import Served

if TYPE_CHECKING:
    from inference.live_adapters_runner import LiveAdapters


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


def served_now(request: web.Request) -> Served:
    return request.app[SERVED].current
