"""How many replicas a serving Workspace runs, and which nodes still host its pods (the planning side;
hooks/workspace/status/replicas.py reports them).

Kaito's `resource.count` is the replica count of a preset that fits one node, and the node count of one
instance of a preset that needs several. `spec.replicas` (the scale subresource: kubectl scale, HPA, KEDA)
adds replicas on top: a single-node Workspace runs max(resource.count, spec.replicas), so a Kaito manifest
keeps its count and a scaler never goes below it.
"""

from __future__ import annotations

from collections.abc import Iterable

GONE_PHASES = ("Succeeded", "Failed")


def single_node(count: int, requested: int | None) -> tuple[int, str]:
    """(replicas, note) of a preset or template that fits one node; the note says when spec.replicas is overridden.

    0 is scale-to-zero and wins over resource.count: a floor that kept a GPU node would defeat it."""
    if requested == 0:
        return 0, ""
    if requested is not None and requested > count:
        return requested, ""
    if requested is not None and 1 < requested < count:
        return (
            count,
            f"spec.replicas {requested} is below resource.count {count}, the minimum; running {count} replicas",
        )
    return count, ""


def multi_node(requested: int | None, nodes: int) -> tuple[int, str]:
    """(instances, note) of a preset served across `nodes` nodes: one instance, or none when scaled to zero."""
    if requested == 0:
        return 0, ""
    if requested is not None and requested > 1:
        return 1, f"spec.replicas {requested} is not applied: a preset served across {nodes} nodes runs one instance"
    return 1, ""


def nodes_with_pods(pods: Iterable[dict]) -> frozenset[str]:
    """Nodes where a pod of the Workspace still exists: starting, running or terminating (its Machine must stay)."""
    return frozenset(
        pod["spec"]["nodeName"]
        for pod in pods
        if (pod.get("spec") or {}).get("nodeName") and (pod.get("status") or {}).get("phase") not in GONE_PHASES
    )
