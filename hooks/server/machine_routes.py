"""HTTP routes of the Machine DecoratorController hooks (a Flask blueprint).

Status codes are chosen for Metacontroller: 200 with the response; 400 (JSON error body) for a
body that is not a Metacontroller request; 429 + Retry-After when ARM throttles (Metacontroller
requeues after that delay without an error event); 500 when ARM is unreachable or anything else
goes wrong, so that no status is written that would lose what is known.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from flask import Blueprint, Response, request

from hooks import machine_sync
from hooks.aks import ArmSettingsError, ArmThrottled, ArmUnreachable
from hooks.responses import json_error, json_response

log = logging.getLogger(__name__)


class _LazyPools:
    """Calls ``pools_provider`` once, on first use, so the app starts without Azure settings."""

    def __init__(self, provider: Callable[[], Any]):
        self._provider = provider
        self._pools: Any = None
        self._lock = threading.Lock()

    def __call__(self) -> Any:
        with self._lock:
            if self._pools is None:
                self._pools = self._provider()
            return self._pools


def machine_blueprint(pools_provider: Callable[[], Any]) -> Blueprint:
    blueprint = Blueprint("machine", __name__)
    pools = _LazyPools(pools_provider)

    def handle(hook: Callable[..., dict[str, Any]], needs_arm: bool) -> Response:
        body = request.get_json(silent=True)
        if body is None:
            return json_error(400, "request body must be JSON (a Metacontroller hook request)")
        try:
            if needs_arm:
                machine_sync.machine_object(body)  # reject malformed bodies before touching ARM
                result = hook(body, pools())
            else:
                result = hook(body)
        except machine_sync.InvalidRequest as error:
            return json_error(400, str(error))
        except ArmThrottled as error:
            return json_error(429, str(error), {"Retry-After": str(error.retry_after)})
        except ArmUnreachable as error:
            log.warning("machine hook: %s", error)
            return json_error(500, str(error))
        except ArmSettingsError as error:
            log.error("machine hook: %s", error)
            if hook is machine_sync.sync and (answer := machine_sync.settings_missing(body, str(error))):
                return json_response(answer)
            return json_error(500, str(error))
        except Exception as error:  # never let Flask answer an HTML 500 Metacontroller cannot read
            log.exception("machine hook failed")
            return json_error(500, f"internal error: {type(error).__name__}: {error}")
        return json_response(result)

    @blueprint.post("/sync/machine")
    def sync_machine() -> Response:
        return handle(machine_sync.sync, True)

    @blueprint.post("/finalize/machine")
    def finalize_machine() -> Response:
        return handle(machine_sync.finalize, True)

    @blueprint.post("/customize/machine")
    def customize_machine() -> Response:
        return handle(machine_sync.customize, False)

    return blueprint
