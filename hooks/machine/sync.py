"""Machine DecoratorController hooks: one AKS agent pool (one GPU node) per Machine.

``sync_machine`` / ``finalize_machine`` take a Machine request read once (hooks/machine/request.py's
``MachineRequest``) and return response dicts: ask ARM about its pool and decide (hooks/machine/pools.py),
then the status (hooks/machine/conditions.py). ``sync`` / ``finalize`` do the same from a raw
DecoratorController v2 request body. ``customize`` relates the Node labelled ``agentpool=<machine name>``.
Only ``pools`` (hooks/machine/arm_client.py's AgentPools, or anything with the same get/create/delete
methods) talks to ARM.

ArmThrottled / ArmUnreachable are deliberately not caught here: the HTTP layer answers 429 / 500 so
Metacontroller keeps the Machine's status as it was instead of overwriting what is known.
"""

from __future__ import annotations

from typing import Any

from hooks import naming
from hooks.machine import conditions
from hooks.machine.observed_time import observed_time
from hooks.machine.pools import (
    ArmRefused,
    Pool,
    PoolsAPI,
    Refusal,
    count_to_put,
    pool_body,
    should_create,
    should_delete,
)
from hooks.machine.request import InvalidRequest, MachineRequest, read_request


def sync(request: dict[str, Any], pools: PoolsAPI) -> dict[str, Any]:
    return sync_machine(read_request(request), pools)


def finalize(request: dict[str, Any], pools: PoolsAPI) -> dict[str, Any]:
    return finalize_machine(read_request(request), pools)


def sync_machine(request: MachineRequest, pools: PoolsAPI) -> dict[str, Any]:
    obj, machine, node = request.object, request.machine, request.node
    pool: Pool | None = None
    created = False
    scaled_to: int | None = None
    refusal: Refusal | None = None
    if machine.problem is None:
        try:
            pool = pools.get(machine.name)
        except ArmRefused as error:
            refusal = Refusal.of(error, "read")
        if refusal is None and should_create(machine, pool):
            try:
                pools.create(machine.name, pool_body(machine, pools.install_id))
                created = True
            except ArmRefused as error:
                refusal = Refusal.of(error, "create")
        count = count_to_put(machine, pool, pools.install_id) if refusal is None else None
        if count is not None:
            try:
                pools.update(machine.name, pool_body(machine, pools.install_id, count))
                scaled_to = count
            except ArmRefused as error:
                refusal = Refusal.of(error, "scale")
    conds, extra, resync = conditions.sync_conditions(
        machine, pool, node, install_id=pools.install_id, created=created, refusal=refusal, scaled_to=scaled_to
    )
    response: dict[str, Any] = {"status": conditions.status(conds, machine, observed_time(obj, pool, node), extra)}
    if resync:
        response["resyncAfterSeconds"] = resync
    return response


def settings_missing(request: MachineRequest, problem: str) -> dict[str, Any] | None:
    """The hook server cannot reach ARM at all (its AKS settings are incomplete). A Machine that was never
    launched says so in its status, which the Workspace shows; for one that was, nothing new is known,
    so the caller answers 500 and the status stays as it was."""
    obj, machine = request.object, request.machine
    if machine.observed_conditions.get("Launched", {}).get("status") == "True":
        return None
    conds = conditions.settings_missing_conditions(problem)
    return {
        "status": conditions.status(conds, machine, observed_time(obj, None, None)),
        "resyncAfterSeconds": conditions.RESYNC_SETTINGS_MISSING_S,
    }


def finalize_machine(request: MachineRequest, pools: PoolsAPI) -> dict[str, Any]:
    obj, machine, node = request.object, request.machine, request.node
    pool: Pool | None = None
    refusal: Refusal | None = None
    started = False
    # An invalid name was never PUT, so there is nothing in ARM to remove.
    if naming.MACHINE_NAME.match(machine.name):
        try:
            pool = pools.get(machine.name)
            if should_delete(machine, pool, pools.install_id):
                started = pools.delete(machine.name)
        except ArmRefused as error:
            refusal = Refusal.of(error, "read" if pool is None else "delete")
    conds, finalized, resync = conditions.finalize_conditions(
        machine, pool, install_id=pools.install_id, delete_started=started, refusal=refusal
    )
    extra = {}
    if node is not None and not finalized:
        extra["nodeName"] = node["metadata"].get("name", "")
    response: dict[str, Any] = {
        "status": conditions.status(conds, machine, observed_time(obj, pool, node), extra),
        "finalized": finalized,
    }
    if resync:
        response["resyncAfterSeconds"] = resync
    return response


def customize(request: Any) -> dict[str, Any]:
    """Relate the Node(s) of this Machine's agent pool (cluster-scoped: needs hook version v2)."""
    if not isinstance(request, dict) or not isinstance(request.get("parent"), dict):
        raise InvalidRequest("request has no 'parent' (not a customize request)")
    name = (request["parent"].get("metadata") or {}).get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequest("parent.metadata.name is missing")
    if len(name) > 63 or not naming.LABEL_VALUE.match(name):
        return {"relatedResources": []}
    return {
        "relatedResources": [
            {"apiVersion": "v1", "resource": "nodes", "labelSelector": {"matchLabels": {naming.AGENTPOOL_LABEL: name}}}
        ]
    }
