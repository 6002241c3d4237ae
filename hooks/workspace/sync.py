"""The Workspace hooks: pure functions from a Metacontroller v2 request to its response.

sync: parse and plan the Workspace (hooks/workspace/planning.py), choose its nodes
(hooks/workspace/nodes.py), build its children (hooks/workspace/children/) and decide its status
(hooks/workspace/status/). customize: which related objects sync needs (Nodes matching the
labelSelector, the workspace's Pods).

Rules (Metacontroller's hook contract): any observed child we do not return is deleted, so an
invalid Workspace returns the children it already had; the same request gives the same response;
feeding the desired children back as observed gives the same desired children.
"""

from __future__ import annotations

from hooks import metacontroller as mc
from hooks import naming
from hooks.settings import Settings
from hooks.workspace import inference_config
from hooks.workspace.children import desired_children, live_adapters, workload
from hooks.workspace.nodes import plan_nodes
from hooks.workspace.planning import PlannedWorkspace, PresetServing, parse_and_plan
from hooks.workspace.replicas import nodes_with_pods
from hooks.workspace.request import existing_children, require_parent
from hooks.workspace.status import decision
from hooks.workspace.validation import Problem


def _plan(parent: dict, request: dict) -> tuple[PlannedWorkspace | None, list[Problem]]:
    """The planned Workspace, checked against its inference.config ConfigMap when customize related it
    (`render`'s requests have none)."""
    planned, problems = parse_and_plan(parent)
    if (
        planned is not None
        and isinstance(planned.plan, PresetServing)
        and mc.CONFIGMAPS in (request.get("related") or {})
    ):
        problems = inference_config.problems(planned.plan, mc.by_name(mc.related(request, mc.CONFIGMAPS)))
        planned = None if problems else planned
    return planned, problems


def sync(request: dict, settings: Settings, now: str) -> dict:
    parent = require_parent(request)
    planned, problems = _plan(parent, request)
    if planned is None:
        status = decision.invalid_status(parent, problems, now)
        return {"status": status, "children": existing_children(request), "resyncAfterSeconds": 0}

    ws, plan = planned.workspace, planned.plan
    related_pods = list(mc.related(request, mc.PODS).values())
    pods = [p for p in related_pods if not live_adapters.is_fetch_pod(p)]
    nodes = plan_nodes(
        ws,
        plan.node_count,
        mc.related(request, mc.NODES),
        mc.by_name(mc.observed(request, mc.MACHINES)),
        settings,
        nodes_with_pods(pods),
        now,
        plan.scale_down_mode,
    )
    adapter_nodes = live_adapters.fetch_nodes(nodes.worker_nodes, pods)
    children = desired_children(
        ws, plan, nodes.machines, settings, adapter_nodes, nodes.idle, nodes.machine_modes, nodes.deallocated
    )
    seen = decision.Observed(
        workload=workload.observed(request, ws, plan),
        pods=pods,
        fetch_jobs=live_adapters.observed_fetch_jobs(mc.observed(request, mc.JOBS)),
        fetch_pods=[p for p in related_pods if live_adapters.is_fetch_pod(p)],
    )
    status, resync = decision.planned_status(parent, ws, plan, nodes, seen, settings.resync_seconds, now)
    return {"status": status, "children": children, "resyncAfterSeconds": resync}


def customize(request: dict) -> dict:
    parent = require_parent(request)
    meta = parent["metadata"]
    related = []
    selector = (parent.get("resource") or {}).get("labelSelector")
    if isinstance(selector, dict) and (selector.get("matchLabels") or selector.get("matchExpressions")):
        node_selector = {k: selector[k] for k in ("matchLabels", "matchExpressions") if selector.get(k)}
        related.append({"apiVersion": "v1", "resource": "nodes", "labelSelector": node_selector})
    for label in (naming.WORKSPACE_LABEL, live_adapters.FETCH_LABEL):  # the replicas, the adapter fetch pods
        related.append(
            {
                "apiVersion": "v1",
                "resource": "pods",
                "namespace": meta.get("namespace", "default"),
                "labelSelector": {"matchLabels": {label: meta["name"]}},
            }
        )
    if config := inference_config.related_rule(parent):
        related.append(config)
    return {"relatedResources": related}
