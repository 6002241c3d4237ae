"""The Workspace hooks: pure functions from a Metacontroller v2 request to its response.

sync: parse and plan the Workspace (hooks/workspace/planning.py), choose its nodes
(hooks/workspace/nodes.py), build its children (hooks/workspace/children/) and its status
(hooks/workspace/conditions.py). customize: which related objects sync needs (Nodes matching the
labelSelector, the workspace's Pods).

Rules (Metacontroller's hook contract): any observed child we do not return is deleted, so an
invalid Workspace returns the children it already had; the same request gives the same response;
feeding the desired children back as observed gives the same desired children.
"""

from __future__ import annotations

from hooks import metacontroller as mc
from hooks import naming
from hooks.settings import Settings
from hooks.workspace import conditions, replicas
from hooks.workspace.children import desired_children
from hooks.workspace.children.pod_parts import workspace_labels
from hooks.workspace.nodes import plan_nodes
from hooks.workspace.planning import TuningPlan, parse_and_plan
from hooks.workspace.request import existing_children, require_parent


def sync(request: dict, settings: Settings, now: str) -> dict:
    parent = require_parent(request)
    generation = parent["metadata"].get("generation")
    observed_conditions = (parent.get("status") or {}).get("conditions")

    planned, problems = parse_and_plan(parent)
    if planned is None:
        tuning_requested = parent.get("tuning") is not None
        status = conditions.invalid_status(problems, tuning_requested, observed_conditions, now, generation)
        status.update(replicas.carried_over(parent.get("status")))
        return {"status": status, "children": existing_children(request), "resyncAfterSeconds": 0}

    ws, plan = planned.workspace, planned.plan
    machines = mc.by_name(mc.observed(request, mc.MACHINES))
    pods = list(mc.related(request, mc.PODS).values())
    nodes = plan_nodes(ws, plan.nodes * plan.replicas, mc.related(request, mc.NODES), machines, settings,
                       replicas.nodes_with_pods(pods))
    children = desired_children(ws, plan, nodes.machines, settings)
    if isinstance(plan, TuningPlan):
        workload_kind = mc.JOBS
    else:
        workload_kind = mc.STATEFULSETS if plan.nodes > 1 else mc.DEPLOYMENTS
    workload = mc.by_name(mc.observed(request, workload_kind)).get(ws.name)
    status, done = conditions.workspace_status(plan, nodes, workload, pods, observed_conditions, now, generation)
    if not isinstance(plan, TuningPlan):
        status.update(replicas.status(plan.replicas, plan.nodes, workload, workspace_labels(ws)))
    return {"status": status, "children": children, "resyncAfterSeconds": 0 if done else settings.resync_seconds}


def customize(request: dict) -> dict:
    parent = require_parent(request)
    meta = parent["metadata"]
    related = []
    selector = (parent.get("resource") or {}).get("labelSelector")
    if isinstance(selector, dict) and (selector.get("matchLabels") or selector.get("matchExpressions")):
        node_selector = {k: selector[k] for k in ("matchLabels", "matchExpressions") if selector.get(k)}
        related.append({"apiVersion": "v1", "resource": "nodes", "labelSelector": node_selector})
    related.append(
        {
            "apiVersion": "v1",
            "resource": "pods",
            "namespace": meta.get("namespace", "default"),
            "labelSelector": {"matchLabels": {naming.WORKSPACE_LABEL: meta["name"]}},
        }
    )
    return {"relatedResources": related}
