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
from hooks.workspace import adapter_status, conditions, inference_config, replicas, scale_to_zero
from hooks.workspace.children import desired_children, live_adapters
from hooks.workspace.children.pod_parts import workspace_labels
from hooks.workspace.nodes import plan_nodes
from hooks.workspace.planning import PresetServing, TuningPlan, parse_and_plan
from hooks.workspace.request import existing_children, require_parent


def sync(request: dict, settings: Settings, now: str) -> dict:
    parent = require_parent(request)
    generation = parent["metadata"].get("generation")
    observed_conditions = (parent.get("status") or {}).get("conditions")

    planned, problems = parse_and_plan(parent)
    if (
        planned is not None
        and isinstance(planned.plan, PresetServing)
        and mc.CONFIGMAPS in (request.get("related") or {})
    ):
        # The inference.config ConfigMap, related by customize (absent from `render`'s requests).
        problems = inference_config.problems(planned.plan, mc.by_name(mc.related(request, mc.CONFIGMAPS)))
        planned = None if problems else planned
    if planned is None:
        tuning_requested = parent.get("tuning") is not None
        status = conditions.invalid_status(problems, tuning_requested, observed_conditions, now, generation)
        status.update(replicas.carried_over(parent.get("status")))
        return {"status": status, "children": existing_children(request), "resyncAfterSeconds": 0}

    ws, plan = planned.workspace, planned.plan
    machines = mc.by_name(mc.observed(request, mc.MACHINES))
    related_pods = list(mc.related(request, mc.PODS).values())
    pods = [p for p in related_pods if not live_adapters.is_fetch_pod(p)]
    fetch_pods = [p for p in related_pods if live_adapters.is_fetch_pod(p)]
    nodes = plan_nodes(
        ws,
        plan.node_count,
        mc.related(request, mc.NODES),
        machines,
        settings,
        replicas.nodes_with_pods(pods),
        now,
    )
    adapter_nodes = live_adapters.fetch_nodes(nodes.worker_nodes, pods)
    children = desired_children(ws, plan, nodes.machines, settings, adapter_nodes, nodes.idle)
    if isinstance(plan, TuningPlan):
        workload_kind = mc.JOBS
    else:
        workload_kind = mc.STATEFULSETS if plan.nodes > 1 else mc.DEPLOYMENTS
    workload = mc.by_name(mc.observed(request, workload_kind)).get(ws.name)
    live = isinstance(plan, PresetServing) and live_adapters.enabled(plan)
    adapters = []
    if isinstance(plan, PresetServing) and live:
        jobs = adapter_status.fetch_jobs(mc.observed(request, mc.JOBS))
        adapters = adapter_status.adapter_states(plan, jobs, fetch_pods, pods)
    extra = (adapter_status.adapters_ready(adapters),) if live else ()
    wake = scale_to_zero.enabled(ws)
    status, done = conditions.workspace_status(
        plan, nodes, workload, pods, observed_conditions, now, generation, extra, wakes_on_demand=wake is not None
    )
    if live:
        status["adapters"] = [a.as_dict() for a in adapters]
        done = done and all(a.state in (adapter_status.READY, adapter_status.FAILED) for a in adapters)
    if not isinstance(plan, TuningPlan):
        status.update(replicas.status(plan.replicas, plan.nodes, workload, workspace_labels(ws)))
        observed_state = (parent.get("status") or {}).get("scaleToZero")
        if wake is not None or plan.replicas == 0 or observed_state:
            status["scaleToZero"] = scale_to_zero.state(
                status["replicas"], status["readyReplicas"], status.get("coldStart"), observed_state, now
            )
    resync: float = 0 if done else settings.resync_seconds
    if nodes.release_in_s is not None:  # come back when the first idle Machine's grace period ends
        resync = min(resync or nodes.release_in_s, max(nodes.release_in_s, 1.0))
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
