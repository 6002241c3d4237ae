"""The Machine and its Node, read from a DecoratorController request; problems a Machine can have.

``read_request`` is the one place a request body becomes a typed ``MachineRequest``: the server reads it
before it touches ARM (a malformed body is a 400), and the hook functions take the typed value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from hooks import kube, metacontroller, naming
from hooks.workspace import catalog

# The conditions a Machine's status always has, in this order.
CONDITION_TYPES = ("Launched", "Registered", "Ready")

# AKS's bounds for an agent pool's osDiskSizeGB. The hook checks every Machine itself, whoever created it:
# the Machine CRD can be written by anyone with RBAC on it, and a pool costs money by the hour.
MIN_OS_DISK_GIB = 30
MAX_OS_DISK_GIB = 2048

# How a Machine's pool gives its GPU back at count 0 (ARM's scaleDownMode enum). Delete removes the VM and its
# OS disk; Deallocate stops the VM and keeps its OS disk (images, the node's weights cache), billing only the disk.
SCALE_DOWN_MODES = ("Delete", "Deallocate")
# Set by the Workspace hook on a Deallocate Machine whose node it does not need: the pool goes to count 0 and the
# VM is deallocated. The spec is immutable, so the wish lives in an annotation; removing it starts the VM again.
DEALLOCATE_ANNOTATION = "kaito.sh/deallocate"


class InvalidRequest(metacontroller.BadRequest):
    """The body is not a Metacontroller DecoratorController request for a Machine."""


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
    gpu_instance_profile: str | None = None  # ARM's MIG profile of the pool (MIG1g..MIG7g)
    scale_down_mode: str = "Delete"  # one of SCALE_DOWN_MODES
    deallocate: bool = False  # a Deallocate Machine asked to hold no running VM (DEALLOCATE_ANNOTATION)

    @property
    def wanted_count(self) -> int:
        """The pool's node count this Machine asks for: 0 only for a Deallocate Machine marked to deallocate."""
        return 0 if self.scale_down_mode == "Deallocate" and self.deallocate else 1


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
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
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
    spec = obj["spec"] if isinstance(obj.get("spec"), dict) else {}
    name = metadata["name"]
    labels = {str(k): str(v) for k, v in (metadata.get("labels") or {}).items()}
    problems: list[str] = []
    if not naming.MACHINE_NAME.match(name):
        problems.append(
            f"name {name!r} cannot be an AKS agent pool name (1-12 lowercase letters and digits, starting with a letter)"
        )
    vm_size = ""
    for requirement in spec.get("requirements") or []:
        if isinstance(requirement, dict) and requirement.get("key") == naming.INSTANCE_TYPE_LABEL:
            values = requirement.get("values") or []
            if requirement.get("operator", "In") == "In" and values:
                vm_size = str(values[0])
            break
    if not vm_size:
        problems.append(f"spec.requirements has no '{naming.INSTANCE_TYPE_LABEL} In [<vm size>]' requirement")
    else:
        sku = catalog.find_sku(vm_size)
        if sku is None or not sku.nvidia:
            known = ", ".join(name for name, s in catalog.skus().items() if s.nvidia)
            problems.append(
                f"instance type {vm_size!r} is not an NVIDIA GPU size this operator provisions "
                f"(hooks/data/skus.yaml: {known})"
            )
    storage = ((spec.get("resources") or {}).get("requests") or {}).get("storage")
    disk = storage_gib(storage) if storage is not None else None
    if storage is None:
        problems.append("spec.resources.requests.storage is missing (it sets the node's OS disk size)")
    elif disk is None or not MIN_OS_DISK_GIB <= disk <= MAX_OS_DISK_GIB:
        problems.append(
            f"spec.resources.requests.storage {storage!r} must be an OS disk size between "
            f"{MIN_OS_DISK_GIB}Gi and {MAX_OS_DISK_GIB}Gi (AKS's limits)"
        )
    taints = []
    for taint in spec.get("taints") or []:
        if not isinstance(taint, dict) or not taint.get("key") or not taint.get("effect"):
            problems.append(f"spec.taints entry {taint!r} needs key and effect")
            continue
        taints.append(f"{taint['key']}={taint.get('value', '')}:{taint['effect']}")
    scale_down_mode = spec.get("scaleDownMode", "Delete")
    if scale_down_mode not in SCALE_DOWN_MODES:
        problems.append(f"spec.scaleDownMode {scale_down_mode!r} must be one of {', '.join(SCALE_DOWN_MODES)}")
        scale_down_mode = "Delete"
    annotations = metadata.get("annotations") or {}
    observed = {}
    for condition in (obj.get("status") or {}).get("conditions") or []:
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
        gpu_instance_profile=str(spec["gpuInstanceProfile"]) if spec.get("gpuInstanceProfile") else None,
        scale_down_mode=scale_down_mode,
        deallocate=str(annotations.get(DEALLOCATE_ANNOTATION, "")).lower() == "true",
    )


def related_node(request: dict[str, Any], pool_name: str) -> dict[str, Any] | None:
    """The Node of this pool among the related objects (Ready first, then by name)."""
    nodes = metacontroller.related(request, metacontroller.NODES).values()
    mine = [
        node
        for node in nodes
        if isinstance(node, dict)
        and ((node.get("metadata") or {}).get("labels") or {}).get(naming.AGENTPOOL_LABEL) == pool_name
        and not (node.get("metadata") or {}).get("deletionTimestamp")
    ]
    mine.sort(key=lambda node: (not kube.node_is_ready(node), node["metadata"].get("name", "")))
    return mine[0] if mine else None


@dataclass(frozen=True)
class MachineRequest:
    """A sync or finalize request, read: the Machine object as sent, its typed fields, and its pool's Node."""

    object: dict[str, Any]
    machine: Machine
    node: dict[str, Any] | None


def read_request(request: Any) -> MachineRequest:
    """The typed Machine request from a sync/finalize body, or InvalidRequest."""
    obj = machine_object(request)
    machine = read_machine(obj)
    return MachineRequest(object=obj, machine=machine, node=related_node(request, machine.name))
