"""An InferenceSet's one child Workspace, and what the Workspace's own checks say about it.

Kaito's controller makes `replicas` Workspaces of one replica each. Here one Workspace runs all the
replicas: our Workspace already scales (spec.replicas, one Machine per GPU node, replicas packed onto MIG
slices, a cache-aware router in front of several SGLang replicas), so the InferenceSet only has to set
its replica count. Users reach the set through the Workspace's Service, which has the InferenceSet's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from hooks.inferenceset.api import MAX_REPLICAS, InferenceSet
from hooks.workspace.api import DEFAULT_INSTANCE_TYPE, field_path
from hooks.workspace.planning import PlannedWorkspace, parse_and_plan
from hooks.workspace.validation import Problem

INFERENCESET_LABEL = "kaito.sh/inferenceset"
SCALEDOBJECT_PREFIX = "scaledobject.kaito.sh/"
# Annotations that describe the InferenceSet object itself, not the model it serves.
_NOT_INHERITED = ("kubectl.kubernetes.io/", "metacontroller.k8s.io/", SCALEDOBJECT_PREFIX)


@dataclass(frozen=True)
class Checked:
    inference_set: InferenceSet
    workspace: dict[str, Any]
    planned: PlannedWorkspace
    replicas: int
    replicas_note: str


def parse(obj: dict[str, Any]) -> tuple[InferenceSet | None, list[Problem]]:
    try:
        return InferenceSet.model_validate({k: v for k, v in obj.items() if k != "status"}), []
    except ValidationError as err:
        problems = []
        for e in err.errors():
            msg = (
                "unknown field (check its spelling against Kaito's InferenceSet)"
                if e["type"] == "extra_forbidden"
                else e["msg"]
            )
            problems.append(Problem(field_path(tuple(e["loc"])) or "(inferenceset)", msg))
        return None, sorted(set(problems))


def child_workspace(iset: InferenceSet, replicas: int) -> dict[str, Any]:
    template = iset.spec.template
    meta = template.metadata
    annotations = {k: v for k, v in iset.annotations.items() if not k.startswith(_NOT_INHERITED)}
    annotations.update((meta.annotations or {}) if meta else {})
    labels = {**((meta.labels or {}) if meta else {}), INFERENCESET_LABEL: iset.name}
    resource: dict[str, Any] = {
        "instanceType": template.resource.instanceType or DEFAULT_INSTANCE_TYPE,
        "labelSelector": iset.spec.labelSelector.model_dump(exclude_none=True),
    }
    if template.resource.partition is not None:
        resource["partition"] = template.resource.partition.model_dump(exclude_none=True)
    metadata: dict[str, Any] = {"name": iset.name, "namespace": iset.namespace, "labels": dict(sorted(labels.items()))}
    if annotations:
        metadata["annotations"] = dict(sorted(annotations.items()))
    return {
        "apiVersion": "kaito.sh/v1alpha1",
        "kind": "Workspace",
        "metadata": metadata,
        "spec": {"replicas": replicas},
        "resource": resource,
        "inference": template.inference.model_dump(exclude_none=True),
    }


def _as_inferenceset_field(field: str) -> str:
    """A Workspace problem's field, as the InferenceSet's user wrote it."""
    for prefix, theirs in (
        ("resource.labelSelector", "spec.labelSelector"),
        ("resource.", "spec.template.resource."),
        ("inference", "spec.template.inference"),
    ):
        if field.startswith(prefix):
            return theirs + field[len(prefix) :]
    return field


def _capped(replicas: int, nodes_for: Any, limit: int) -> tuple[int, str]:
    """The most replicas up to `replicas` whose GPU nodes stay within nodeCountLimit (0: no limit)."""
    if not limit or nodes_for(replicas) <= limit:
        return replicas, ""
    allowed = replicas
    while allowed > 0 and nodes_for(allowed) > limit:
        allowed -= 1
    return allowed, (
        f"spec.replicas {replicas} would need {nodes_for(replicas)} GPU nodes, above nodeCountLimit {limit}; "
        f"running {allowed} replicas"
    )


def _problems_of_the_set(iset: InferenceSet) -> list[Problem]:
    out = []
    auto = iset.spec.autoUpgrade or {}
    if auto.get("enabled"):
        out.append(
            Problem(
                "spec.autoUpgrade.enabled",
                "the model server image is pinned by the operator's release and changes when you install a new "
                "release; remove autoUpgrade",
            )
        )
    strategy = (iset.spec.updateStrategy or {}).get("type", "RollingUpdate")
    if strategy != "RollingUpdate":
        out.append(
            Problem(
                "spec.updateStrategy.type",
                f"{strategy!r}: replicas are replaced one at a time (RollingUpdate, maxUnavailable 1); "
                "remove updateStrategy or set type: RollingUpdate",
            )
        )
    return out


def check(obj: dict[str, Any]) -> tuple[Checked | None, list[Problem]]:
    """The InferenceSet parsed, its Workspace built and planned, or every problem with the set's field paths."""
    iset, problems = parse(obj)
    if iset is None:
        return None, problems
    problems = _problems_of_the_set(iset)
    first = child_workspace(iset, iset.spec.replicas)
    planned, ws_problems = parse_and_plan(first)
    problems += [Problem(_as_inferenceset_field(p.field), p.message) for p in ws_problems]
    if planned is None or problems:
        return None, sorted(set(problems))
    plan = planned.plan
    per_replica = plan.nodes

    def nodes_for(r: int) -> int:
        return plan.mig.nodes_for(r) if plan.mig is not None else r * per_replica

    replicas, note = _capped(min(iset.spec.replicas, MAX_REPLICAS), nodes_for, iset.spec.nodeCountLimit)
    workspace = child_workspace(iset, replicas)
    if replicas != iset.spec.replicas:
        planned, ws_problems = parse_and_plan(workspace)
        assert planned is not None, ws_problems
    return Checked(iset, workspace, planned, replicas, note), []
