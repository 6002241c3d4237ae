"""HTTP routes of the Machine DecoratorController hooks (a Flask blueprint).

Status codes are chosen for Metacontroller: 200 with the response; 400 (JSON error body) for a
body that is not a Metacontroller request; 429 + Retry-After when ARM throttles (Metacontroller
requeues after that delay without an error event); 500 when ARM is unreachable or anything else
goes wrong, so that no status is written that would lose what is known.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response

from hooks.machine import sweep
from hooks.machine import sync as machine_sync
from hooks.machine.deadline import DeadlinePools
from hooks.machine.pools import ArmSettingsError, ArmThrottled, ArmUnreachable, PoolsAPI
from hooks.machine.request import MachineRequest, read_request
from hooks.server.handling import run_hook
from hooks.server.responses import json_error

log = logging.getLogger(__name__)


class _LazyPools:
    """Calls ``pools_provider`` once, on first use, so the app starts without Azure settings."""

    def __init__(self, provider: Callable[[], PoolsAPI]):
        self._provider = provider
        self._pools: PoolsAPI | None = None
        self._lock = threading.Lock()

    def __call__(self) -> PoolsAPI:
        with self._lock:
            if self._pools is None:
                self._pools = self._provider()
            return self._pools


def _arm_errors(error: Exception, body: Any) -> Response | None:
    if isinstance(error, ArmThrottled):
        return json_error(429, str(error), {"Retry-After": str(error.retry_after)})
    if isinstance(error, ArmUnreachable):
        log.warning("machine hook: %s", error)
        return json_error(500, str(error))
    if isinstance(error, ArmSettingsError):
        log.error("machine hook: %s", error)
        return json_error(500, str(error))
    return None


def machine_blueprint(pools_provider: Callable[[], PoolsAPI]) -> Blueprint:
    blueprint = Blueprint("machine", __name__)
    pools = _LazyPools(pools_provider)

    def with_pools(hook: Callable[[MachineRequest, PoolsAPI], dict[str, Any]]) -> Callable[[Any], dict[str, Any]]:
        def call(body: Any) -> dict[str, Any]:
            return hook(read_request(body), DeadlinePools(pools()))  # a malformed body is refused before ARM

        return call

    def sync_or_settings_missing(body: Any) -> dict[str, Any]:
        request = read_request(body)
        try:
            arm = pools()
        except ArmSettingsError as error:
            answer = machine_sync.settings_missing(request, str(error))
            if answer is None:
                raise
            log.error("machine hook: %s", error)
            return answer
        return machine_sync.sync_machine(request, DeadlinePools(arm))

    @blueprint.post("/sync/machine")
    def sync_machine() -> Response:
        return run_hook(sync_or_settings_missing, _arm_errors)

    @blueprint.post("/finalize/machine")
    def finalize_machine() -> Response:
        return run_hook(with_pools(machine_sync.finalize_machine), _arm_errors)

    @blueprint.post("/customize/machine")
    def customize_machine() -> Response:
        return run_hook(machine_sync.customize, _arm_errors)

    @blueprint.post("/sync/pool-sweep")
    def sync_pool_sweep() -> Response:
        return run_hook(lambda body: sweep.sweep(body, DeadlinePools(pools())), _arm_errors)

    @blueprint.post("/customize/pool-sweep")
    def customize_pool_sweep() -> Response:
        return run_hook(sweep.customize)

    return blueprint
