"""status.scaleToZero: where a Workspace that can scale to zero stands (scaled to zero, waking, serving)."""

from __future__ import annotations

from typing import Any

SCALED_TO_ZERO, WAKING, SERVING = "ScaledToZero", "Waking", "Serving"


def _waking_phase(cold_start: dict[str, Any] | None, node_start: bool) -> str:
    """The cold-start phase under way, from status.coldStart of the pod that is starting (none has a node yet
    while coldStart is empty: a pod gets its start time once scheduled). `node_start`: the node is a deallocated
    VM being started (its OS disk kept), not a new one being created."""
    phases = cold_start or {}
    if "nodeSeconds" not in phases:
        return "nodeStart" if node_start else "node"
    if "imagePullSeconds" not in phases:
        return "image"
    if "weightsSeconds" not in phases and "modelLoadSeconds" not in phases:
        return "weights"
    return "load"


def state(
    replicas: int,
    ready_replicas: int,
    cold_start: dict[str, Any] | None,
    observed: dict[str, Any] | None,
    now: str,
    deallocated_nodes: int = 0,
    node_start: bool = False,
) -> dict[str, Any]:
    """status.scaleToZero: ScaledToZero (with the GPU nodes kept deallocated, if any), Waking (with the
    cold-start phase) or Serving, and since when.

    `since` is kept while the state holds, like a condition's lastTransitionTime."""
    if replicas == 0:
        current: dict[str, Any] = {"state": SCALED_TO_ZERO}
        if deallocated_nodes:
            current["deallocatedNodes"] = deallocated_nodes
    elif ready_replicas > 0:
        current = {"state": SERVING}
    else:
        current = {"state": WAKING, "phase": _waking_phase(cold_start, node_start)}
    previous = observed or {}
    since = previous.get("since") if previous.get("state") == current["state"] and previous.get("since") else now
    return {**current, "since": since}
