"""The Workspace hooks: pure functions from a Metacontroller v2 request to its response.

sync: observed Workspace + children + related Nodes/Pods -> desired children + status.
customize: which related objects sync needs (Nodes matching the labelSelector, the workspace's Pods).

Rules (notes/metacontroller.md §6): any observed child we do not return is deleted, so an invalid
Workspace returns the children it already had; the same request gives the same response; feeding
the desired children back as observed gives the same desired children.
"""

from __future__ import annotations

import json

from hooks import conditions, inference_workload, manifests, tuning_workload
from hooks.api import Workspace
from hooks.nodes import plan_nodes
from hooks.planning import WorkloadPlan, plan
from hooks.settings import Settings
from hooks.validation import Problem, field_problems, shape_problems

MACHINES = "Machine.kaito.sh/v1alpha1"
STATEFULSETS = "StatefulSet.apps/v1"
SERVICES = "Service.v1"
JOBS = "Job.batch/v1"
CONFIGMAPS = "ConfigMap.v1"
NODES = "Node.v1"
PODS = "Pod.v1"
CHILD_TYPES = (MACHINES, CONFIGMAPS, STATEFULSETS, JOBS, SERVICES)
LAST_APPLIED = "metacontroller.k8s.io/last-applied-configuration"


class BadRequest(ValueError):
    """The body is not a Metacontroller request."""


def _require_request(request: object, key: str) -> dict:
    if not isinstance(request, dict):
        raise BadRequest(f"expected a JSON object, got {type(request).__name__}")
    parent = request.get(key)
    if not isinstance(parent, dict) or not isinstance(parent.get("metadata"), dict) or not parent["metadata"].get("name"):
        raise BadRequest(f"missing '{key}' with metadata.name: not a Metacontroller request")
    for section in ("children", "related"):
        if section in request and not isinstance(request[section] or {}, dict):
            raise BadRequest(f"'{section}' must be an object keyed by Kind.apiVersion")
    return parent


def parse_workspace(obj: dict) -> tuple[Workspace | None, list[Problem]]:
    """Shape, field and catalogue checks together: a Workspace ready to plan, or every problem found."""
    ws, problems = shape_problems({k: v for k, v in obj.items() if k != "status"})
    if ws is None:
        return None, problems
    problems = field_problems(ws)
    if problems:
        return None, problems
    return ws, []


def _observed(request: dict, kind: str) -> dict[str, dict]:
    return (request.get("children") or {}).get(kind) or {}


def _related(request: dict, kind: str) -> dict[str, dict]:
    return (request.get("related") or {}).get(kind) or {}


def _by_name(objs: dict[str, dict]) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objs.values()}


def _as_previously_desired(child: dict) -> dict:
    """What we last asked for: Metacontroller keeps it in an annotation; otherwise the object minus server fields."""
    applied = ((child.get("metadata") or {}).get("annotations") or {}).get(LAST_APPLIED)
    if applied:
        try:
            return json.loads(applied)
        except ValueError:
            pass
    meta = child.get("metadata") or {}
    keep = {k: meta[k] for k in ("name", "namespace", "labels", "annotations") if k in meta}
    return {**{k: v for k, v in child.items() if k not in ("status", "metadata")}, "metadata": keep}


def _existing_children(request: dict) -> list[dict]:
    out = []
    for kind in CHILD_TYPES:
        for key in sorted(_observed(request, kind)):
            out.append(_as_previously_desired(_observed(request, kind)[key]))
    return out


def desired_children(ws: Workspace, workload: WorkloadPlan, machine_names: tuple[str, ...], settings: Settings) -> list[dict]:
    children = [manifests.machine(ws, name, workload) for name in machine_names]
    if workload.kind == "tuning":
        cm = tuning_workload.config_map(ws)
        if cm is not None:
            children.append(cm)
        children.append(tuning_workload.job(ws, workload, settings))
    else:
        children.append(inference_workload.statefulset(ws, workload, settings))
        children += manifests.services(ws)
    return children


def _pods(request: dict) -> list[dict]:
    return list(_related(request, PODS).values())


def sync(request: dict, settings: Settings, now: str) -> dict:
    parent = _require_request(request, "parent")
    generation = parent["metadata"].get("generation")
    observed_conditions = (parent.get("status") or {}).get("conditions")
    tuning_requested = parent.get("tuning") is not None

    ws, problems = parse_workspace(parent)
    workload = None
    if ws is not None:
        workload, problems = plan(ws)
    if workload is None:
        status = {"conditions": conditions.render(conditions.invalid(problems, tuning_requested), observed_conditions, now, generation)}
        return {"status": status, "children": _existing_children(request), "resyncAfterSeconds": 0}

    nodes = plan_nodes(
        ws, workload.nodes, _related(request, NODES), _by_name(_observed(request, MACHINES)), settings
    )
    children = desired_children(ws, workload, nodes.machines, settings)
    resource = conditions.resource(nodes)
    resource_ready = resource.status == "True"
    conds = [resource]
    if workload.kind == "tuning":
        job = _by_name(_observed(request, JOBS)).get(ws.name)
        conds += conditions.tuning(job, _pods(request))
        done = conds[-1].status == "True" or conds[1].reason == "TuningJobFailed"
    else:
        sts = _by_name(_observed(request, STATEFULSETS)).get(ws.name)
        note = f"runtime {workload.runtime}: {workload.runtime_reason}" if workload.runtime else "runtime: your pod template"
        inference = conditions.inference(resource_ready, sts, _pods(request), note)
        conds += [
            inference,
            conditions.Condition("WorkspaceReady", inference.status, "WorkspaceReady" if inference.status == "True" else inference.reason, inference.message),
        ]
        done = inference.status == "True"
    status = {
        "conditions": conditions.render(conds, observed_conditions, now, generation),
        "workerNodes": nodes.worker_nodes,
    }
    if workload.runtime:
        status["runtime"] = workload.runtime
    return {"status": status, "children": children, "resyncAfterSeconds": 0 if done else settings.resync_seconds}


def customize(request: dict) -> dict:
    parent = _require_request(request, "parent")
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
            "labelSelector": {"matchLabels": {"kaito.sh/workspace": meta["name"]}},
        }
    )
    return {"relatedResources": related}
