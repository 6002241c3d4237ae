"""Machine DecoratorController hooks: one AKS agent pool (one GPU node) per Machine.

``sync`` / ``finalize`` take Metacontroller DecoratorController v2 requests and return response
dicts; ``customize`` relates the Node labelled ``agentpool=<machine name>``. Everything that decides
is a pure function of (Machine, observed pool, related Node); only ``pools`` (hooks.aks.AgentPools
or anything with the same get/create/delete methods) talks to ARM.

Condition semantics (types Launched, Registered, Ready, always all three, in that order):
  status "True"    - done;
  status "Unknown" - still on its way (pool creating, node joining, device plugin starting...);
  status "False"   - will not get better without a change (ARM refused or failed, invalid Machine,
                     name clash, deletion); the message quotes ARM's code and message.
Ready reasons: Ready | Creating | Provisioning | NodeNotFound | NodeNotReady | GPUNotAllocatable |
Deleting (Unknown or False) and InvalidMachine | ProvisioningRefused | ProvisioningFailed |
ProvisioningCanceled | PoolNameConflict | DeletionRefused | Deleted (False).

ArmThrottled / ArmUnreachable are deliberately not caught here: the HTTP layer answers 429 / 500 so
Metacontroller keeps the Machine's status as it was instead of overwriting what is known.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

from hooks.aks import ArmRefused, Pool

INSTANCE_TYPE_KEY = "node.kubernetes.io/instance-type"
MACHINE_LABEL = "kaito.sh/machine"
WORKSPACE_LABEL = "kaito.sh/workspace"
WORKSPACE_NAMESPACE_LABEL = "kaito.sh/workspacenamespace"
MACHINE_TYPE_LABEL = "kaito.sh/machine-type"
AGENTPOOL_LABEL = "agentpool"
GPU_RESOURCE = "nvidia.com/gpu"
NODE_KEY = "Node.v1"
POOL_NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,11}$")
LABEL_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

RESYNC_PROGRESS_S = 15
RESYNC_REFUSED_S = 300
RESYNC_FINALIZE_S = 10
RESYNC_DELETE_REFUSED_S = 60

CONDITION_TYPES = ("Launched", "Registered", "Ready")
EPOCH = "1970-01-01T00:00:00Z"


class InvalidRequest(ValueError):
    """The body is not a Metacontroller DecoratorController request for a Machine."""


class PoolsAPI(Protocol):
    def get(self, name: str) -> Pool | None: ...

    def create(self, name: str, body: dict[str, Any]) -> None: ...

    def delete(self, name: str) -> bool: ...


# --------------------------------------------------------------------------------------------
# Reading the request


@dataclass(frozen=True)
class Machine:
    name: str
    namespace: str
    labels: dict[str, str]
    vm_size: str
    os_disk_gb: int
    taints: tuple[str, ...]
    problem: str | None
    observed_conditions: dict[str, dict[str, Any]]


def machine_object(request: Any) -> dict[str, Any]:
    """The Machine from a sync/finalize request, or InvalidRequest."""
    if not isinstance(request, dict):
        raise InvalidRequest("request body must be a JSON object")
    obj = request.get("object")
    if not isinstance(obj, dict):
        raise InvalidRequest("request has no 'object' (not a DecoratorController sync/finalize request)")
    kind = obj.get("kind")
    if kind not in (None, "Machine"):
        raise InvalidRequest(f"object kind is {kind!r}, expected 'Machine'")
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict) or not isinstance(metadata.get("name"), str) or not metadata["name"]:
        raise InvalidRequest("object.metadata.name is missing")
    for key in ("related", "attachments"):
        if key in request and not isinstance(request[key], (dict, type(None))):
            raise InvalidRequest(f"'{key}' must be an object")
    if "finalizing" in request and not isinstance(request["finalizing"], bool):
        raise InvalidRequest("'finalizing' must be a boolean")
    return obj


_QUANTITY_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E|)$")
_QUANTITY_FACTORS = {
    "": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}


def storage_gib(quantity: Any) -> int | None:
    """Whole GiB in a Kubernetes quantity (truncated, as gpu-provisioner does); None if unparsable."""
    if isinstance(quantity, int) and not isinstance(quantity, bool):
        return quantity >> 30
    match = _QUANTITY_RE.match(str(quantity).strip())
    if not match:
        return None
    number, suffix = match.groups()
    if "." in number:
        whole, frac = number.split(".")
        value = int(whole) * _QUANTITY_FACTORS[suffix] + int(frac) * _QUANTITY_FACTORS[suffix] // 10 ** len(frac)
    else:
        value = int(number) * _QUANTITY_FACTORS[suffix]
    return value >> 30


def read_machine(obj: dict[str, Any]) -> Machine:
    metadata = obj.get("metadata") or {}
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    name = metadata["name"]
    labels = {str(k): str(v) for k, v in (metadata.get("labels") or {}).items()}
    problems: list[str] = []
    if not POOL_NAME_RE.match(name):
        problems.append(
            f"name {name!r} cannot be an AKS agent pool name (1-12 lowercase letters and digits, starting with a letter)"
        )
    vm_size = ""
    for requirement in spec.get("requirements") or []:
        if isinstance(requirement, dict) and requirement.get("key") == INSTANCE_TYPE_KEY:
            values = requirement.get("values") or []
            if requirement.get("operator", "In") == "In" and values:
                vm_size = str(values[0])
            break
    if not vm_size:
        problems.append(f"spec.requirements has no '{INSTANCE_TYPE_KEY} In [<vm size>]' requirement")
    storage = ((spec.get("resources") or {}).get("requests") or {}).get("storage")
    disk = storage_gib(storage) if storage is not None else None
    if storage is None:
        problems.append("spec.resources.requests.storage is missing (it sets the node's OS disk size)")
    elif disk is None or disk <= 0:
        problems.append(f"spec.resources.requests.storage {storage!r} is not a size of at least 1Gi")
    taints = []
    for taint in spec.get("taints") or []:
        if not isinstance(taint, dict) or not taint.get("key") or not taint.get("effect"):
            problems.append(f"spec.taints entry {taint!r} needs key and effect")
            continue
        taints.append(f"{taint['key']}={taint.get('value', '')}:{taint['effect']}")
    observed = {}
    for condition in ((obj.get("status") or {}).get("conditions") or []):
        if isinstance(condition, dict) and condition.get("type") in CONDITION_TYPES:
            observed[condition["type"]] = condition
    return Machine(
        name=name,
        namespace=str(metadata.get("namespace") or ""),
        labels=labels,
        vm_size=vm_size,
        os_disk_gb=disk or 0,
        taints=tuple(taints),
        problem="; ".join(problems) or None,
        observed_conditions=observed,
    )


def related_node(request: dict[str, Any], pool_name: str) -> dict[str, Any] | None:
    """The Node of this pool among the related objects (Ready first, then by name)."""
    nodes = ((request.get("related") or {}).get(NODE_KEY) or {}).values()
    mine = [
        node
        for node in nodes
        if isinstance(node, dict)
        and ((node.get("metadata") or {}).get("labels") or {}).get(AGENTPOOL_LABEL) == pool_name
        and not (node.get("metadata") or {}).get("deletionTimestamp")
    ]
    mine.sort(key=lambda node: (not _node_ready(node)[0], node["metadata"].get("name", "")))
    return mine[0] if mine else None


# --------------------------------------------------------------------------------------------
# Pure decisions


def pool_body(machine: Machine) -> dict[str, Any]:
    """The REST body of the agent pool PUT for this Machine."""
    node_labels = dict(machine.labels)
    node_labels[MACHINE_LABEL] = machine.name
    tags = {"kaito-machine": machine.name}
    if machine.labels.get(WORKSPACE_LABEL):
        tags["kaito-workspace"] = machine.labels[WORKSPACE_LABEL]
    workspace_ns = machine.labels.get(WORKSPACE_NAMESPACE_LABEL) or machine.namespace
    if workspace_ns:
        tags["kaito-workspace-namespace"] = workspace_ns
    return {
        "properties": {
            "type": "VirtualMachineScaleSets",
            "vmSize": machine.vm_size,
            "count": 1,
            "mode": "User",
            "osType": "Linux",
            "osDiskSizeGB": machine.os_disk_gb,
            "nodeLabels": node_labels,
            "nodeTaints": list(machine.taints),
            "tags": tags,
        }
    }


def pool_is_ours(machine: Machine, pool: Pool) -> bool:
    return pool.node_labels.get(MACHINE_LABEL) == machine.name


def should_create(machine: Machine, pool: Pool | None) -> bool:
    """PUT only for a valid Machine whose pool does not exist: never a second PUT."""
    return machine.problem is None and pool is None


def should_delete(machine: Machine, pool: Pool | None) -> bool:
    return pool is not None and pool_is_ours(machine, pool) and pool.provisioning_state != "Deleting"


@dataclass(frozen=True)
class Refusal:
    code: str
    message: str
    action: str  # "create", "read" or "delete"

    @classmethod
    def of(cls, error: ArmRefused, action: str) -> "Refusal":
        return cls(error.code, error.message, action)

    def text(self, pool_name: str) -> str:
        return f"ARM refused to {self.action} AKS agent pool {pool_name}: {self.code}: {self.message}"


def _cond(type_: str, status: str, reason: str, message: str) -> dict[str, str]:
    return {"type": type_, "status": status, "reason": reason, "message": message}


def _node_ready(node: dict[str, Any]) -> tuple[bool, str]:
    for condition in ((node.get("status") or {}).get("conditions") or []):
        if isinstance(condition, dict) and condition.get("type") == "Ready":
            detail = ": ".join(x for x in (condition.get("reason"), condition.get("message")) if x)
            return condition.get("status") == "True", detail
    return False, "no Ready condition reported yet"


def _gpu_count(node: dict[str, Any]) -> int:
    raw = ((node.get("status") or {}).get("allocatable") or {}).get(GPU_RESOURCE, "0")
    try:
        return int(str(raw))
    except ValueError:
        return 0


def _all(status: str, reason: str, message: str) -> list[dict[str, str]]:
    return [_cond(t, status, reason, message) for t in CONDITION_TYPES]


def sync_conditions(
    machine: Machine,
    pool: Pool | None,
    node: dict[str, Any] | None,
    *,
    created: bool = False,
    refusal: Refusal | None = None,
) -> tuple[list[dict[str, str]], dict[str, str], int]:
    """(conditions without timestamps, extra status fields, resync seconds; 0 = none)."""
    name = machine.name
    if machine.problem:
        return _all("False", "InvalidMachine", f"Machine {name}: {machine.problem}"), {}, 0
    if refusal is not None:
        text = refusal.text(name)
        return [
            _cond("Launched", "False", "ProvisioningRefused", text),
            _cond("Registered", "False", "NotLaunched", f"agent pool {name} was not created"),
            _cond("Ready", "False", "ProvisioningRefused", text),
        ], {}, RESYNC_REFUSED_S
    if created or pool is None:
        text = f"creating AKS agent pool {name} (vmSize {machine.vm_size}, 1 node)"
        return [
            _cond("Launched", "Unknown", "Creating", text),
            _cond("Registered", "Unknown", "NotLaunched", f"waiting for agent pool {name}"),
            _cond("Ready", "Unknown", "Creating", text),
        ], {}, RESYNC_PROGRESS_S
    if not pool_is_ours(machine, pool):
        text = (
            f"an AKS agent pool named {name} already exists but was not created for this Machine "
            f"(its nodeLabels lack {MACHINE_LABEL}={name}); it is left untouched"
        )
        return _all("False", "PoolNameConflict", text), {}, RESYNC_REFUSED_S
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
        return [
            _cond("Launched", "False", reason, text),
            _cond("Registered", "False", "NotLaunched", f"agent pool {name} is {state}"),
            _cond("Ready", "False", reason, text),
        ], {}, RESYNC_REFUSED_S
    if state == "Deleting":
        text = f"AKS agent pool {name} is being deleted; it will be created again once gone"
        return _all("Unknown", "Deleting", text), {}, RESYNC_PROGRESS_S
    was_launched = machine.observed_conditions.get("Launched", {}).get("status") == "True"
    if state != "Succeeded" and (state == "Creating" or not was_launched):
        text = f"AKS agent pool {name} is {state}"
        return [
            _cond("Launched", "Unknown", "Provisioning", text),
            _cond("Registered", "Unknown", "NotLaunched", f"waiting for agent pool {name}"),
            _cond("Ready", "Unknown", "Provisioning", text),
        ], {}, RESYNC_PROGRESS_S
    launched = _cond("Launched", "True", "Launched", f"AKS agent pool {name} ({pool.vm_size or machine.vm_size}) is {state}")
    if node is None:
        text = f"no Node labelled {AGENTPOOL_LABEL}={name} has joined yet"
        return [launched, _cond("Registered", "Unknown", "NodeNotFound", text),
                _cond("Ready", "Unknown", "NodeNotFound", text)], {}, RESYNC_PROGRESS_S
    node_name = node["metadata"].get("name", "")
    extra = {"nodeName": node_name}
    provider_id = (node.get("spec") or {}).get("providerID")
    if provider_id:
        extra["providerID"] = provider_id
    registered = _cond("Registered", "True", "Registered", f"node {node_name} joined the cluster")
    ready, detail = _node_ready(node)
    if not ready:
        ready_cond = _cond("Ready", "Unknown", "NodeNotReady", f"node {node_name} is not Ready yet ({detail})")
        return [launched, registered, ready_cond], extra, RESYNC_PROGRESS_S
    gpus = _gpu_count(node)
    needs_gpu = machine.labels.get(MACHINE_TYPE_LABEL, "gpu") != "cpu"
    if needs_gpu and gpus <= 0:
        text = (
            f"node {node_name} is Ready but has no allocatable {GPU_RESOURCE} "
            "(is the NVIDIA device plugin running on it?)"
        )
        return [launched, registered, _cond("Ready", "Unknown", "GPUNotAllocatable", text)], extra, RESYNC_PROGRESS_S
    text = f"node {node_name} is Ready" + (f" with {gpus} {GPU_RESOURCE} allocatable" if needs_gpu else "")
    return [launched, registered, _cond("Ready", "True", "Ready", text)], extra, 0


def finalize_conditions(
    machine: Machine,
    pool: Pool | None,
    *,
    delete_started: bool = False,
    refusal: Refusal | None = None,
) -> tuple[list[dict[str, str]], bool, int]:
    """(conditions without timestamps, finalized, resync seconds) while removing the pool."""
    name = machine.name
    if machine.problem and pool is None and refusal is None:
        return _all("False", "Deleted", f"Machine {name} never had an agent pool ({machine.problem})"), True, 0
    if refusal is not None:
        text = refusal.text(name)
        return _all("False", "DeletionRefused", text), False, RESYNC_DELETE_REFUSED_S
    if pool is None:
        return _all("False", "Deleted", f"AKS agent pool {name} is deleted"), True, 0
    if not pool_is_ours(machine, pool):
        text = f"AKS agent pool {name} was not created for this Machine; left untouched"
        return _all("False", "PoolNameConflict", text), True, 0
    text = f"deleting AKS agent pool {name}" + ("" if delete_started else f" (state {pool.provisioning_state})")
    return _all("False", "Deleting", text), False, RESYNC_FINALIZE_S


# --------------------------------------------------------------------------------------------
# Timestamps: deterministic, derived from the request


_TS_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(\.\d+)?(Z|[+-]\d{2}:?\d{2})?$")


def _parse_time(value: Any) -> datetime | None:
    match = _TS_RE.match(str(value or "").strip())
    if not match:
        return None
    date, clock, _fraction, zone = match.groups()
    zone = zone or "Z"
    if zone == "Z":
        zone = "+00:00"
    elif ":" not in zone:
        zone = zone[:3] + ":" + zone[3:]
    try:
        return datetime.fromisoformat(f"{date}T{clock}{zone}").astimezone(timezone.utc)
    except ValueError:
        return None


def observed_time(obj: dict[str, Any], pool: Pool | None, node: dict[str, Any] | None) -> str:
    """The latest timestamp visible in the inputs: a deterministic stand-in for "now".

    Candidates: the Machine's creation and managedFields times and its conditions, the related
    Node's creation and condition (transition/heartbeat) times, and the pool's ARM systemData
    time. A transition is therefore stamped no earlier than the last thing we saw happen.
    """
    metadata = obj.get("metadata") or {}
    candidates = [metadata.get("creationTimestamp"), pool.last_modified if pool else None]
    candidates += [entry.get("time") for entry in metadata.get("managedFields") or [] if isinstance(entry, dict)]
    candidates += [
        c.get("lastTransitionTime") for c in (obj.get("status") or {}).get("conditions") or [] if isinstance(c, dict)
    ]
    if node:
        candidates.append((node.get("metadata") or {}).get("creationTimestamp"))
        for condition in (node.get("status") or {}).get("conditions") or []:
            if isinstance(condition, dict):
                candidates += [condition.get("lastTransitionTime"), condition.get("lastHeartbeatTime")]
    times = [t for t in map(_parse_time, candidates) if t is not None]
    return max(times).strftime("%Y-%m-%dT%H:%M:%SZ") if times else EPOCH


def stamp(conditions: list[dict[str, str]], machine: Machine, now: str) -> list[dict[str, str]]:
    """Keep the observed lastTransitionTime when a condition's status did not change."""
    stamped = []
    for condition in conditions:
        before = machine.observed_conditions.get(condition["type"], {})
        keep = before.get("status") == condition["status"] and _parse_time(before.get("lastTransitionTime"))
        time = before["lastTransitionTime"] if keep else now
        stamped.append({**condition, "lastTransitionTime": time})
    return stamped


def _status(conditions, machine, now, extra=None) -> dict[str, Any]:
    status: dict[str, Any] = dict(extra or {})
    status["conditions"] = stamp(conditions, machine, now)
    return status


# --------------------------------------------------------------------------------------------
# Hooks


def sync(request: dict[str, Any], pools: PoolsAPI) -> dict[str, Any]:
    obj = machine_object(request)
    machine = read_machine(obj)
    node = related_node(request, machine.name)
    pool: Pool | None = None
    created = False
    refusal: Refusal | None = None
    if machine.problem is None:
        try:
            pool = pools.get(machine.name)
        except ArmRefused as error:
            refusal = Refusal.of(error, "read")
        if refusal is None and should_create(machine, pool):
            try:
                pools.create(machine.name, pool_body(machine))
                created = True
            except ArmRefused as error:
                refusal = Refusal.of(error, "create")
    conditions, extra, resync = sync_conditions(machine, pool, node, created=created, refusal=refusal)
    response: dict[str, Any] = {"status": _status(conditions, machine, observed_time(obj, pool, node), extra)}
    if resync:
        response["resyncAfterSeconds"] = resync
    return response


def settings_missing(request: dict[str, Any], problem: str) -> dict[str, Any] | None:
    """The hook server cannot reach ARM at all (its AKS settings are incomplete). A Machine that was never
    launched says so in its status, which the Workspace shows; for one that was, nothing new is known,
    so the caller answers 500 and the status stays as it was."""
    obj = machine_object(request)
    machine = read_machine(obj)
    if machine.observed_conditions.get("Launched", {}).get("status") == "True":
        return None
    message = f"the hook server cannot provision nodes: {problem}; fill in metacontroller/aks.env and re-apply"
    conditions = _all("False", "ArmSettingsMissing", message)
    return {"status": _status(conditions, machine, observed_time(obj, None, None)), "resyncAfterSeconds": 300}


def finalize(request: dict[str, Any], pools: PoolsAPI) -> dict[str, Any]:
    obj = machine_object(request)
    machine = read_machine(obj)
    node = related_node(request, machine.name)
    pool: Pool | None = None
    refusal: Refusal | None = None
    started = False
    # An invalid name was never PUT, so there is nothing in ARM to remove.
    if POOL_NAME_RE.match(machine.name):
        try:
            pool = pools.get(machine.name)
            if should_delete(machine, pool):
                started = pools.delete(machine.name)
        except ArmRefused as error:
            refusal = Refusal.of(error, "read" if pool is None else "delete")
    conditions, finalized, resync = finalize_conditions(machine, pool, delete_started=started, refusal=refusal)
    extra = {}
    if node is not None and not finalized:
        extra["nodeName"] = node["metadata"].get("name", "")
    response: dict[str, Any] = {
        "status": _status(conditions, machine, observed_time(obj, pool, node), extra),
        "finalized": finalized,
    }
    if resync:
        response["resyncAfterSeconds"] = resync
    return response


def customize(request: Any) -> dict[str, Any]:
    """Relate the Node(s) of this Machine's agent pool (cluster-scoped: needs hook version v2)."""
    if not isinstance(request, dict) or not isinstance(request.get("parent"), dict):
        raise InvalidRequest("request has no 'parent' (not a customize request)")
    name = (request["parent"].get("metadata") or {}).get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequest("parent.metadata.name is missing")
    if len(name) > 63 or not LABEL_VALUE_RE.match(name):
        return {"relatedResources": []}
    return {
        "relatedResources": [
            {"apiVersion": "v1", "resource": "nodes", "labelSelector": {"matchLabels": {AGENTPOOL_LABEL: name}}}
        ]
    }
