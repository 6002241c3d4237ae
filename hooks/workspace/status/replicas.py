"""status.replicas, readyReplicas and selector: the scale subresource's view of a serving Workspace."""

from __future__ import annotations


def status(plan_replicas: int, nodes_per_replica: int, workload: dict | None, selector: dict[str, str]) -> dict:
    """The scale subresource's view: replicas the Workspace runs, how many are Ready, and the pods' selector.

    `workload` is the observed Deployment (one pod per replica) or StatefulSet (one instance across its pods).
    """
    ready_pods = ((workload or {}).get("status") or {}).get("readyReplicas") or 0
    ready = ready_pods if nodes_per_replica == 1 else int(ready_pods >= nodes_per_replica)
    return {
        "replicas": plan_replicas,
        "readyReplicas": min(ready, plan_replicas),
        "selector": ",".join(f"{k}={v}" for k, v in sorted(selector.items())),
    }


def carried_over(observed_status: dict | None) -> dict:
    """What an invalid Workspace keeps of its replica status (its children are kept as they were)."""
    return {k: v for k, v in (observed_status or {}).items() if k in ("replicas", "readyReplicas", "selector")}
