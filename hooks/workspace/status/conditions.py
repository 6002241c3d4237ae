"""The Workspace's status: conditions computed from the observed children (and related pods) only,
and whether it is done (no resync needed)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hooks import kube
from hooks.workspace.nodes import NodePlan
from hooks.workspace.planning import PresetServing, TuningPlan, WorkloadPlan
from hooks.workspace.status import cold_start
from hooks.workspace.validation import Problem

MAX_MESSAGE = 1024


@dataclass(frozen=True)
class Condition:
    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str


def true(kind: str, reason: str, message: str) -> Condition:
    return Condition(kind, "True", reason, message)


def false(kind: str, reason: str, message: str) -> Condition:
    return Condition(kind, "False", reason, message)


def render(conditions: list[Condition], observed: list[dict] | None, now: str, generation: int | None) -> list[dict]:
    """As metav1.Conditions; lastTransitionTime is kept from the observed condition while its status holds."""
    items = [
        {"type": c.type, "status": c.status, "reason": c.reason, "message": c.message[:MAX_MESSAGE]} for c in conditions
    ]
    out = kube.stamp_transition_times(items, observed, now)
    if generation is not None:
        for item in out:
            item["observedGeneration"] = generation
    return out


def invalid_status(
    problems: list[Problem], tuning: bool, observed: list[dict] | None, now: str, generation: int | None
) -> dict:
    """The status of a Workspace that failed validation or planning: every problem, on ResourceReady."""
    return {"conditions": render(invalid(problems, tuning), observed, now, generation)}


def workspace_status(
    plan: WorkloadPlan,
    nodes: NodePlan,
    workload: dict | None,
    pods: list[dict],
    observed: list[dict] | None,
    now: str,
    generation: int | None,
    extra: tuple[Condition, ...] = (),
    wakes_on_demand: bool = False,
) -> tuple[dict[str, Any], bool]:
    """(status, done) of a planned Workspace; `workload` is its observed Deployment, StatefulSet or Job; `extra`:
    conditions that do not decide WorkspaceReady (AdaptersReady).

    Done means nothing will change without an event: served and ready, or tuning finished.
    """
    resource_ready = resource(nodes)
    if nodes.byo and plan.scale_down_mode == "Deallocate":
        resource_ready = byo_ignores_scale_down_mode(resource_ready)
    conds = [resource_ready]
    if isinstance(plan, TuningPlan):
        conds += tuning(workload, pods)
        done = conds[-1].status == "True" or conds[1].reason == "TuningJobFailed"
    elif plan.replicas == 0:
        serving = scaled_to_zero(wakes_on_demand)
        conds += [serving, Condition("WorkspaceReady", serving.status, serving.reason, serving.message)]
        done = not nodes.machines  # resync until the last Machine is released
    else:
        serving = inference(resource_ready.status == "True", workload, pods, runtime_note(plan))
        reason = "WorkspaceReady" if serving.status == "True" else serving.reason
        conds += [serving, Condition("WorkspaceReady", serving.status, reason, serving.message)]
        done = serving.status == "True"
    conds += extra
    status: dict[str, Any] = {"conditions": render(conds, observed, now, generation), "workerNodes": nodes.worker_nodes}
    if isinstance(plan, PresetServing):
        status["runtime"] = plan.runtime
    phases = cold_start.cold_start(pods)
    if phases and not isinstance(plan, TuningPlan):
        status["coldStart"] = {**phases, "summary": cold_start.summary(phases)}
    return status, done


def runtime_note(plan: WorkloadPlan) -> str:
    note = (
        f"runtime {plan.runtime}: {plan.runtime_reason}"
        if isinstance(plan, PresetServing)
        else "runtime: your pod template"
    )
    return f"{note}; {plan.replicas_note}" if plan.replicas_note else note


def invalid(problems: list[Problem], tuning: bool) -> list[Condition]:
    message = "; ".join(str(p) for p in problems)
    conds = [false("ResourceReady", "InvalidWorkspace", message)]
    if tuning:
        conds.append(false("JobStarted", "InvalidWorkspace", "the workspace is invalid; see ResourceReady"))
    else:
        conds.append(false("InferenceReady", "InvalidWorkspace", "the workspace is invalid; see ResourceReady"))
    conds.append(false("WorkspaceReady", "InvalidWorkspace", "the workspace is invalid; see ResourceReady"))
    return conds


def scaled_to_zero(wakes_on_demand: bool) -> Condition:
    """InferenceReady at spec.replicas 0: no model server runs, so not ready; what a request gets meanwhile."""
    then = (
        "the front holds requests and asks for one replica (kaito.sh/scale-to-zero-after)"
        if wakes_on_demand
        else "requests fail until it is scaled up (kubectl scale workspace --replicas=1)"
    )
    return false("InferenceReady", "ScaledToZero", f"spec.replicas is 0: no model server runs; {then}")


def byo_ignores_scale_down_mode(condition: Condition) -> Condition:
    """Bring-your-own nodes are not ours to deallocate: the opt-in is accepted (the Workspace may move to a
    cluster that provisions nodes) and the status says it does nothing here."""
    note = (
        "; kaito.sh/scale-down-mode Deallocate has no effect with bring-your-own nodes (no agent pool is created, "
        "deallocated or deleted)"
    )
    return Condition(condition.type, condition.status, condition.reason, condition.message + note)


def resource(nodes: NodePlan) -> Condition:
    ready, target = nodes.ready_count, nodes.target
    if target == 0:
        held = f"; releasing {', '.join(nodes.machines)} once no pod runs there" if nodes.machines else ""
        if nodes.idle:  # a wake within the scale-in grace period re-uses these nodes
            held += (
                f"; {len(nodes.idle)} idle GPU node(s) kept for the scale-in grace period, the first released in "
                f"{nodes.release_in_s:.0f} s"
            )
        if nodes.deallocated:  # a wake starts these VMs instead of creating nodes
            held += (
                f"; {len(nodes.deallocated)} GPU node(s) deallocated ({', '.join(nodes.deallocated)}): no compute is "
                "billed, their OS disks with the weights cache are kept and started again on a scale-up; delete "
                "those Machines to release the disks"
            )
        what = "no pod runs" if nodes.machines or nodes.idle or nodes.deallocated else "no GPU node is held"
        return true("ResourceReady", "ScaledToZero", f"scaled to zero: {what}{held}")
    if ready >= target:
        return true(
            "ResourceReady", "NodesReady", f"{ready} of {target} GPU nodes ready: {', '.join(nodes.worker_nodes)}"
        )
    failed = nodes.failed_machines
    if failed:
        detail = "; ".join(f"machine {f.name}: {f.reason}: {f.message}" for f in failed)
        return false("ResourceReady", "MachineFailed", f"{ready} of {target} GPU nodes ready; {detail}")
    if nodes.byo:
        return false(
            "ResourceReady",
            "NotEnoughNodes",
            f"found {ready} ready node(s) matching resource.labelSelector, need {target}; node auto-provisioning is "
            "off (bring your own nodes), so label more GPU nodes with the selector's labels",
        )
    waiting = [m for m in nodes.machine_states if m.name in nodes.machines and not m.ready]
    pending = len(nodes.machines) - sum(1 for m in nodes.machine_states if m.name in nodes.machines)
    parts = [f"machine {m.name}: {m.reason}: {m.message}" for m in waiting]
    if pending:
        parts.append(f"creating {pending} machine(s)")
    return false("ResourceReady", "ProvisioningNodes", f"{ready} of {target} GPU nodes ready; " + "; ".join(parts))


_WAITING_REASONS = {
    "ErrImagePull": "ImagePullError",
    "ImagePullBackOff": "ImagePullError",
    "InvalidImageName": "ImagePullError",
    "CrashLoopBackOff": "ContainerCrashLoopBackOff",
    "CreateContainerConfigError": "ContainerStartError",
    "CreateContainerError": "ContainerStartError",
    "RunContainerError": "ContainerStartError",
}


def pod_trouble(pods: list[dict]) -> tuple[str, str] | None:
    """The first reason a pod of ours is stuck, classified like Kaito does, or None."""
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        name = pod["metadata"]["name"]
        status = pod.get("status") or {}
        for cond in status.get("conditions") or []:
            if (
                cond.get("type") == "PodScheduled"
                and cond.get("status") == "False"
                and cond.get("reason") == "Unschedulable"
            ):
                return "Unschedulable", f"pod {name}: {cond.get('message', '')}"
        statuses = (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or [])
        for cs in statuses:
            state = cs.get("state") or {}
            waiting = state.get("waiting") or {}
            if waiting.get("reason") in _WAITING_REASONS:
                return _WAITING_REASONS[
                    waiting["reason"]
                ], f"pod {name} container {cs.get('name')}: {waiting.get('reason')}: {waiting.get('message', '')}"
            last = (cs.get("lastState") or {}).get("terminated") or {}
            if last.get("reason") == "OOMKilled":
                return "ContainerOOMKilled", f"pod {name} container {cs.get('name')} was OOMKilled"
        if status.get("reason") == "Evicted":
            return "PodEvicted", f"pod {name}: {status.get('message', '')}"
    return None


def inference(resource_ready: bool, sts: dict | None, pods: list[dict], runtime_note: str) -> Condition:
    spec_replicas = ((sts or {}).get("spec") or {}).get("replicas")
    ready = ((sts or {}).get("status") or {}).get("readyReplicas") or 0
    if sts is not None and spec_replicas is not None and ready >= spec_replicas and resource_ready:
        return true("InferenceReady", "InferenceReady", f"{ready} of {spec_replicas} pods ready; {runtime_note}")
    trouble = pod_trouble(pods)
    if trouble:
        return false("InferenceReady", trouble[0], trouble[1])
    if sts is None:
        return false("InferenceReady", "Creating", f"creating the inference workload; {runtime_note}")
    return false("InferenceReady", "InferencePending", f"{ready} of {spec_replicas} pods ready; {runtime_note}")


def tuning(job: dict | None, pods: list[dict]) -> list[Condition]:
    status = (job or {}).get("status") or {}
    if status.get("succeeded"):
        return [
            true("JobStarted", "JobStarted", "the tuning job ran"),
            true("WorkspaceReady", "TuningSucceeded", "the tuning job succeeded; the adapter is pushed"),
        ]
    if status.get("failed"):
        trouble = pod_trouble(pods)
        failure: dict = next((c for c in status.get("conditions") or [] if c.get("type") == "Failed"), {})
        why = (
            trouble[1]
            if trouble
            else f"{failure.get('reason', 'JobFailed')}: {failure.get('message', 'the tuning pod failed')}"
        )
        why = _pod_failure(pods) or why
        return [
            false("JobStarted", "TuningJobFailed", why),
            false("WorkspaceReady", "TuningJobFailed", why),
        ]
    if status.get("active") or status.get("ready"):
        trouble = pod_trouble(pods)
        started = true("JobStarted", "JobStarted", "the tuning job is running")
        if trouble:
            return [started, false("WorkspaceReady", trouble[0], trouble[1])]
        return [started, false("WorkspaceReady", "TuningRunning", "the tuning job is running")]
    what = "creating the tuning job" if job is None else "the tuning job has not started"
    return [false("JobStarted", "JobPending", what), false("WorkspaceReady", "TuningPending", what)]


def _pod_failure(pods: list[dict]) -> str | None:
    """The terminated container's reason and message in a failed tuning pod (e.g. an OOMKilled trainer)."""
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        status = pod.get("status") or {}
        for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
            term = (cs.get("state") or {}).get("terminated") or {}
            if term and term.get("exitCode", 0) != 0:
                detail = term.get("message") or f"exit code {term.get('exitCode')}"
                return (
                    f"pod {pod['metadata']['name']} container {cs.get('name')}: {term.get('reason', 'Error')}: {detail}"
                )
    return None
