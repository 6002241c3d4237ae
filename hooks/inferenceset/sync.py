"""The InferenceSet hook: a pure function from a Metacontroller v2 sync request to its response.

Children: one Workspace with the set's replicas (hooks/inferenceset/workspace.py), and the KEDA
ScaledObject of its `scaledobject.kaito.sh/*` annotations where KEDA is installed
(hooks/inferenceset/autoscaling.py). Status: the Workspace's replicas and ready replicas, the pod
selector for the scale subresource, and a Ready condition. An invalid InferenceSet keeps the children it
had and says every problem, field first, in its Ready condition.
"""

from __future__ import annotations

from typing import Any

from hooks import metacontroller as mc
from hooks import naming
from hooks.inferenceset import autoscaling
from hooks.inferenceset.api import MAX_REPLICAS
from hooks.inferenceset.workspace import check
from hooks.workspace.planning import WorkloadPlan
from hooks.workspace.request import as_previously_desired, require_parent
from hooks.workspace.status import conditions
from hooks.workspace.validation import Problem

WORKSPACES = "Workspace.kaito.sh/v1alpha1"
CHILD_TYPES = (WORKSPACES, autoscaling.SCALEDOBJECTS)


def _nodes_for(plan: WorkloadPlan, replicas: int) -> int:
    return plan.mig.nodes_for(replicas) if plan.mig is not None else replicas * plan.nodes


def _kept_children(request: dict) -> list[dict]:
    out = []
    for kind in CHILD_TYPES:
        for key in sorted(mc.observed(request, kind)):
            out.append(as_previously_desired(mc.observed(request, kind)[key]))
    return out


def _invalid(problems: list[Problem], parent: dict, request: dict, now: str) -> dict:
    status = dict(parent.get("status") or {})
    message = "; ".join(str(p) for p in problems)
    status["conditions"] = conditions.render(
        [conditions.false("Ready", "InvalidInferenceSet", message)],
        status.get("conditions"),
        now,
        parent["metadata"].get("generation"),
    )
    return {"status": status, "children": _kept_children(request), "resyncAfterSeconds": 0}


def sync(request: dict, now: str) -> dict[str, Any]:
    parent = require_parent(request)
    checked, problems = check(parent)
    if checked is None:
        return _invalid(problems, parent, request, now)
    iset = checked.inference_set
    auto, problems = autoscaling.parse(iset)
    if problems:
        return _invalid(problems, parent, request, now)

    children = [checked.workspace]
    found = []
    if auto is not None:
        if autoscaling.SCALEDOBJECTS in (request.get("children") or {}):
            plan = checked.planned.plan
            limit = iset.spec.nodeCountLimit
            most = MAX_REPLICAS
            if limit:
                most = max((r for r in range(1, MAX_REPLICAS + 1) if _nodes_for(plan, r) <= limit), default=1)
            children.append(autoscaling.scaled_object(iset, auto, most))
            scaled = mc.by_name(mc.observed(request, autoscaling.SCALEDOBJECTS)).get(iset.name)
            found.append(autoscaling.autoscaler_ready(auto, iset.name, scaled))
        else:
            found.append(
                conditions.false(
                    "AutoscalerReady",
                    "KEDANotInstalled",
                    f"{autoscaling.AUTO_PROVISION} is true, but the operator was installed without KEDA support; "
                    "install KEDA and apply overlays/keda/ (or drop the annotations and scale with kubectl scale)",
                )
            )

    observed = mc.by_name(mc.observed(request, WORKSPACES)).get(iset.name) or {}
    ws_status = observed.get("status") or {}
    ready = int(ws_status.get("readyReplicas") or 0)
    running = int(ws_status.get("replicas") or 0)
    wanted = checked.replicas
    note = f"; {checked.replicas_note}" if checked.replicas_note else ""
    if ready >= wanted:
        found.insert(0, conditions.true("Ready", "ReplicasReady", f"{ready} of {wanted} replicas ready{note}"))
    else:
        found.insert(
            0,
            conditions.false(
                "Ready", "ReplicasNotReady", f"{ready} of {wanted} replicas ready (Workspace {iset.name}){note}"
            ),
        )
    status = {
        "replicas": running,
        "readyReplicas": ready,
        "selector": f"{naming.WORKSPACE_LABEL}={iset.name}",
        "workspace": iset.name,
        "conditions": conditions.render(
            found, (parent.get("status") or {}).get("conditions"), now, parent["metadata"].get("generation")
        ),
    }
    done = ready >= wanted
    return {"status": status, "children": children, "resyncAfterSeconds": 0 if done else 30}
