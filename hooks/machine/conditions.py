"""A Machine's conditions (Launched, Registered, Ready, always all three, in that order).

  status "True"    - done;
  status "Unknown" - still on its way (pool creating, node joining, device plugin starting...);
  status "False"   - will not get better without a change (ARM refused or failed, invalid Machine,
                     name clash, deletion); the message quotes ARM's code and message.
Ready reasons: Ready | Creating | Provisioning | NodeNotFound | NodeNotReady | GPUNotAllocatable |
Deleting | Starting (Unknown or False) and InvalidMachine | ProvisioningRefused | ProvisioningFailed |
ProvisioningCanceled | PoolNameConflict | DeletionRefused | Deleted | ArmSettingsMissing | Deallocated |
ScaleRefused (False).
"""

from __future__ import annotations

from typing import Any

from hooks import kube, naming
from hooks.machine.pools import INSTALL_TAG, MACHINE_NAMESPACE_TAG, MACHINE_TAG, Pool, Refusal, pool_is_ours
from hooks.machine.request import CONDITION_TYPES, DEALLOCATE_ANNOTATION, Machine

RESYNC_PROGRESS_S = 15
RESYNC_REFUSED_S = 300
RESYNC_FINALIZE_S = 10
RESYNC_DELETE_REFUSED_S = 60
RESYNC_SETTINGS_MISSING_S = 300

Conditions = list[dict[str, str]]


def _cond(type_: str, status: str, reason: str, message: str) -> dict[str, str]:
    return {"type": type_, "status": status, "reason": reason, "message": message}


def _all(status: str, reason: str, message: str) -> Conditions:
    return [_cond(t, status, reason, message) for t in CONDITION_TYPES]


def _gpu_count(node: dict[str, Any]) -> int:
    raw = ((node.get("status") or {}).get("allocatable") or {}).get(naming.GPU_RESOURCE, "0")
    try:
        return int(str(raw))
    except ValueError:
        return 0


def conflict_text(machine: Machine, pool: Pool) -> str:
    """Why an existing pool of this Machine's name is not its own (agent pool names are cluster-wide)."""
    owner = pool.tags.get(MACHINE_NAMESPACE_TAG)
    whose = f"Machine {owner}/{pool.tags.get(MACHINE_TAG)}" if owner else "no Machine of this install"
    return (
        f"an AKS agent pool named {machine.name} already exists and was not created by this install for Machine "
        f"{machine.namespace}/{machine.name} (its tags {INSTALL_TAG}, {MACHINE_NAMESPACE_TAG} and {MACHINE_TAG} "
        f"name {whose}); it is left untouched, and this Machine gets no node while that pool exists"
    )


def _not_launched(status: str, reason: str, text: str, registered: str) -> Conditions:
    """Launched and Ready in one state, for one reason; Registered waits for a pool that is not there."""
    return [
        _cond("Launched", status, reason, text),
        _cond("Registered", status, "NotLaunched", registered),
        _cond("Ready", status, reason, text),
    ]


def sync_conditions(
    machine: Machine,
    pool: Pool | None,
    node: dict[str, Any] | None,
    *,
    install_id: str,
    created: bool = False,
    refusal: Refusal | None = None,
    scaled_to: int | None = None,
) -> tuple[Conditions, dict[str, str], int]:
    """(conditions without timestamps, extra status fields, resync seconds; 0 = none).

    `scaled_to`: the node count this sync PUT on the existing pool (deallocate or start its VM), if any."""
    name = machine.name
    if machine.problem:
        return _all("False", "InvalidMachine", f"Machine {name}: {machine.problem}"), {}, 0
    if refusal is not None and refusal.action == "scale" and pool is not None:
        return _scale_refused(machine, pool, node, refusal)
    if refusal is not None:
        text = refusal.text(name)
        return (
            _not_launched("False", "ProvisioningRefused", text, f"agent pool {name} was not created"),
            {},
            RESYNC_REFUSED_S,
        )
    if created or pool is None:
        text = f"creating AKS agent pool {name} (vmSize {machine.vm_size}, 1 node)"
        return (
            _not_launched("Unknown", "Creating", text, f"waiting for agent pool {name}"),
            {},
            RESYNC_PROGRESS_S,
        )
    if not pool_is_ours(machine, pool, install_id):
        return _all("False", "PoolNameConflict", conflict_text(machine, pool)), {}, RESYNC_REFUSED_S
    state = pool.provisioning_state or "Unknown"
    if state in ("Failed", "Canceled"):
        reason = "ProvisioningFailed" if state == "Failed" else "ProvisioningCanceled"
        if pool.error_code or pool.error_message:
            text = f"AKS agent pool {name} is {state}: {pool.error_code}: {pool.error_message}"
        else:
            text = f"AKS agent pool {name} is {state} (ARM gave no error details)"
        # A failed pool is never replaced behind the user's back (each try costs VM time and may hit the
        # same capacity error); deleting the Machine is the retry: finalize removes the pool and the
        # workspace hook creates the Machine again.
        text += f"; to retry, delete the Machine (kubectl delete machine {name} -n {machine.namespace})"
        return (
            _not_launched("False", reason, text, f"agent pool {name} is {state}"),
            {},
            RESYNC_REFUSED_S,
        )
    if state == "Deleting":
        text = f"AKS agent pool {name} is being deleted; it will be created again once gone"
        return _all("Unknown", "Deleting", text), {}, RESYNC_PROGRESS_S
    if machine.scale_down_mode == "Deallocate":
        deallocation = _deallocation_conditions(machine, pool, node, scaled_to)
        if deallocation is not None:
            return deallocation
    was_launched = machine.observed_conditions.get("Launched", {}).get("status") == "True"
    if state != "Succeeded" and (state == "Creating" or not was_launched):
        text = f"AKS agent pool {name} is {state}"
        return (
            _not_launched("Unknown", "Provisioning", text, f"waiting for agent pool {name}"),
            {},
            RESYNC_PROGRESS_S,
        )
    launched = _cond(
        "Launched", "True", "Launched", f"AKS agent pool {name} ({pool.vm_size or machine.vm_size}) is {state}"
    )
    if node is None:
        text = f"no Node labelled {naming.AGENTPOOL_LABEL}={name} has joined yet"
        return (
            [
                launched,
                _cond("Registered", "Unknown", "NodeNotFound", text),
                _cond("Ready", "Unknown", "NodeNotFound", text),
            ],
            {},
            RESYNC_PROGRESS_S,
        )
    node_name = node["metadata"].get("name", "")
    extra = {"nodeName": node_name}
    provider_id = (node.get("spec") or {}).get("providerID")
    if provider_id:
        extra["providerID"] = provider_id
    registered = _cond("Registered", "True", "Registered", f"node {node_name} joined the cluster")
    ready, detail = kube.node_readiness(node)
    if not ready:
        ready_cond = _cond("Ready", "Unknown", "NodeNotReady", f"node {node_name} is not Ready yet ({detail})")
        return [launched, registered, ready_cond], extra, RESYNC_PROGRESS_S
    gpus = _gpu_count(node)
    needs_gpu = machine.labels.get(naming.MACHINE_TYPE_LABEL, "gpu") != "cpu"
    if needs_gpu and gpus <= 0:
        text = (
            f"node {node_name} is Ready but has no allocatable {naming.GPU_RESOURCE} "
            "(is the NVIDIA device plugin running on it?)"
        )
        return [launched, registered, _cond("Ready", "Unknown", "GPUNotAllocatable", text)], extra, RESYNC_PROGRESS_S
    text = f"node {node_name} is Ready" + (f" with {gpus} {naming.GPU_RESOURCE} allocatable" if needs_gpu else "")
    return [launched, registered, _cond("Ready", "True", "Ready", text)], extra, 0


def _node_fields(node: dict[str, Any] | None) -> dict[str, str]:
    if node is None:
        return {}
    extra = {"nodeName": node["metadata"].get("name", "")}
    provider_id = (node.get("spec") or {}).get("providerID")
    if provider_id:
        extra["providerID"] = provider_id
    return extra


def _deallocation_conditions(
    machine: Machine, pool: Pool, node: dict[str, Any] | None, scaled_to: int | None
) -> tuple[Conditions, dict[str, str], int] | None:
    """A Deallocate Machine's pool on its way to count 0, at 0, or just asked to start again; None otherwise."""
    name = machine.name
    extra = _node_fields(node)
    if machine.wanted_count == 0 and (scaled_to == 0 or pool.count == 0):
        settled = scaled_to is None and pool.provisioning_state == "Succeeded"
        state = "deallocated" if settled else "being deallocated"
        text = (
            f"the VM of AKS agent pool {name} is {state} (count 0): no compute is billed, and its OS disk, with "
            f"the container images and the node's weights cache, is kept (the disk is billed). It starts again "
            f"when the {DEALLOCATE_ANNOTATION} annotation goes (the Workspace scales above 0); to release the disk "
            f"for good, delete the Machine (kubectl delete machine {name} -n {machine.namespace})"
        )
        launched = _cond("Launched", "True", "Launched", f"AKS agent pool {name} is at count 0 ({state})")
        if node is not None:
            registered = _cond(
                "Registered",
                "True",
                "Registered",
                f"node {extra['nodeName']} stays registered (NotReady) while deallocated",
            )
        else:
            registered = _cond("Registered", "False", "Deallocated", f"agent pool {name} has no running VM")
        return (
            [launched, registered, _cond("Ready", "False", "Deallocated", text)],
            extra,
            (0 if settled else RESYNC_PROGRESS_S),
        )
    if machine.wanted_count == 1 and scaled_to == 1:
        text = f"starting the deallocated VM of AKS agent pool {name} (count 1; its OS disk was kept)"
        launched = _cond("Launched", "True", "Launched", f"AKS agent pool {name} is scaling to count 1")
        registered = (
            _cond("Registered", "True", "Registered", f"node {extra['nodeName']} is registered")
            if node is not None
            else _cond("Registered", "Unknown", "NodeNotFound", f"waiting for the node of agent pool {name}")
        )
        return [launched, registered, _cond("Ready", "Unknown", "Starting", text)], extra, RESYNC_PROGRESS_S
    return None


def _scale_refused(
    machine: Machine, pool: Pool, node: dict[str, Any] | None, refusal: Refusal
) -> tuple[Conditions, dict[str, str], int]:
    """ARM refused the count change of an existing pool: it stays as it was, and the Machine says why."""
    extra = _node_fields(node)
    text = refusal.text(machine.name) + f" (to count {machine.wanted_count})"
    launched = _cond("Launched", "True", "Launched", f"AKS agent pool {machine.name} is {pool.provisioning_state}")
    registered = (
        _cond("Registered", "True", "Registered", f"node {extra['nodeName']} joined the cluster")
        if node is not None
        else _cond("Registered", "Unknown", "NodeNotFound", f"no node of agent pool {machine.name}")
    )
    return [launched, registered, _cond("Ready", "False", "ScaleRefused", text)], extra, RESYNC_REFUSED_S


def finalize_conditions(
    machine: Machine,
    pool: Pool | None,
    *,
    install_id: str,
    delete_started: bool = False,
    refusal: Refusal | None = None,
) -> tuple[Conditions, bool, int]:
    """(conditions without timestamps, finalized, resync seconds) while removing the pool."""
    name = machine.name
    if machine.problem and pool is None and refusal is None:
        return _all("False", "Deleted", f"Machine {name} never had an agent pool ({machine.problem})"), True, 0
    if refusal is not None:
        text = refusal.text(name)
        return _all("False", "DeletionRefused", text), False, RESYNC_DELETE_REFUSED_S
    if pool is None:
        return _all("False", "Deleted", f"AKS agent pool {name} is deleted"), True, 0
    if not pool_is_ours(machine, pool, install_id):
        return _all("False", "PoolNameConflict", conflict_text(machine, pool)), True, 0
    text = f"deleting AKS agent pool {name}" + ("" if delete_started else f" (state {pool.provisioning_state})")
    return _all("False", "Deleting", text), False, RESYNC_FINALIZE_S


def settings_missing_conditions(problem: str) -> Conditions:
    message = f"the hook server cannot provision nodes: {problem}; fill in metacontroller/aks.env and re-apply"
    return _all("False", "ArmSettingsMissing", message)


def status(conditions: Conditions, machine: Machine, now: str, extra: dict[str, str] | None = None) -> dict[str, Any]:
    """The Machine's status: extra fields, then the conditions with their transition times."""
    result: dict[str, Any] = dict(extra or {})
    result["conditions"] = kube.stamp_transition_times(conditions, machine.observed_conditions.values(), now)
    return result
