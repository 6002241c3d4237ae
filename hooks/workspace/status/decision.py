"""A Workspace's whole status, whether it is done, and when the hook should look again.

Done means nothing will change without an event (served and ready with every adapter settled, tuning
finished, or scaled to zero with no Machine left); until then Metacontroller resyncs after the settings'
interval, and sooner when an idle Machine's grace period ends first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hooks.workspace.api import Workspace
from hooks.workspace.children.pod_parts import workspace_labels
from hooks.workspace.nodes import NodePlan
from hooks.workspace.planning import PresetServing, TuningPlan, WorkloadPlan
from hooks.workspace.status import adapters, conditions, replicas, scale_to_zero
from hooks.workspace.validation import Problem


@dataclass(frozen=True)
class Observed:
    """What the hook sees of a planned Workspace: its workload (Deployment, StatefulSet or Job), the pods
    of its replicas, and its adapter fetch Jobs and their pods."""

    workload: dict | None
    pods: list[dict]
    fetch_jobs: list[dict]
    fetch_pods: list[dict]


def invalid_status(parent: dict, problems: list[Problem], now: str) -> dict[str, Any]:
    """An invalid Workspace: every problem in its conditions; the replica fields it had are kept, as are its
    children."""
    observed = parent.get("status") or {}
    tuning_requested = parent.get("tuning") is not None
    generation = parent["metadata"].get("generation")
    status = conditions.invalid_status(problems, tuning_requested, observed.get("conditions"), now, generation)
    status.update(replicas.carried_over(observed))
    return status


def planned_status(
    parent: dict,
    ws: Workspace,
    plan: WorkloadPlan,
    nodes: NodePlan,
    seen: Observed,
    resync_seconds: float,
    now: str,
) -> tuple[dict[str, Any], float]:
    """(status, resyncAfterSeconds) of a planned Workspace."""
    observed = parent.get("status") or {}
    generation = parent["metadata"].get("generation")
    wakes_on_demand = plan.scale_to_zero is not None
    live = isinstance(plan, PresetServing) and plan.live_adapters
    states: list[adapters.AdapterState] = []
    if isinstance(plan, PresetServing) and live:
        states = adapters.adapter_states(plan, seen.fetch_jobs, seen.fetch_pods, seen.pods)
    extra = (adapters.adapters_ready(states),) if live else ()
    status, done = conditions.workspace_status(
        plan,
        nodes,
        seen.workload,
        seen.pods,
        observed.get("conditions"),
        now,
        generation,
        extra,
        wakes_on_demand=wakes_on_demand,
    )
    if live:
        status["adapters"] = [a.as_dict() for a in states]
        done = done and all(a.state in (adapters.READY, adapters.FAILED) for a in states)
    if not isinstance(plan, TuningPlan):
        status.update(replicas.status(plan.replicas, plan.nodes, seen.workload, workspace_labels(ws)))
        observed_state = observed.get("scaleToZero")
        if wakes_on_demand or plan.replicas == 0 or observed_state:
            status["scaleToZero"] = scale_to_zero.state(
                status["replicas"],
                status["readyReplicas"],
                status.get("coldStart"),
                observed_state,
                now,
                deallocated_nodes=len(nodes.deallocated),
                node_start=nodes.starting_deallocated,
            )
    resync: float = 0 if done else resync_seconds
    if nodes.release_in_s is not None:  # come back when the first idle Machine's grace period ends
        resync = min(resync or nodes.release_in_s, max(nodes.release_in_s, 1.0))
    return status, resync
