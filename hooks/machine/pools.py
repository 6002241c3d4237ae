"""Agent pools as the Machine hook sees them: what ARM can answer, and the pure pool decisions.

The ARM client (hooks/machine/arm_client.py) returns ``Pool`` and raises these errors; ``PoolsAPI`` is
all the hooks need of it, so tests pass a fake with the same three methods.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Protocol

from hooks import naming
from hooks.machine.request import Machine


class ArmError(Exception):
    """Base class of everything the ARM client raises."""


class PoolNotFound(ArmError):
    """ARM answered 404 for the agent pool."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class PoolAlreadyExists(ArmError):
    """ARM answered 412 to a create-only PUT: the pool exists already (another sync created it)."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ArmThrottled(ArmError):
    """ARM answered 429; ask again after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class ArmRefused(ArmError):
    """ARM understood the request and refused it (quota, SKU not available, invalid name, auth...)."""

    def __init__(self, code: str, message: str, status: int | None = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


class ArmUnreachable(ArmError):
    """No usable answer from ARM: connection refused, timeout, TLS failure or a 5xx."""


class ArmSettingsError(ValueError):
    """The hook server lacks the settings it needs to reach ARM."""


@dataclass(frozen=True)
class Pool:
    """What the Machine hook needs to know about an existing agent pool."""

    name: str
    provisioning_state: str
    vm_size: str = ""
    node_labels: dict[str, str] = field(default_factory=dict)
    error_code: str = ""
    error_message: str = ""
    last_modified: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    count: int | None = None  # the pool's node count as ARM last recorded it (None: ARM did not say)
    scale_down_mode: str = "Delete"


class PoolsAPI(Protocol):
    # This install's identity (KAITO_INSTALL_ID), tagged on every pool it creates: only pools that carry it
    # are ever adopted, deleted or swept, so an install whose ARM settings name another cluster touches none
    # of that cluster's pools.
    install_id: str

    def get(self, name: str) -> Pool | None: ...

    def create(self, name: str, body: dict[str, Any]) -> None: ...

    def update(self, name: str, body: dict[str, Any]) -> None: ...

    def delete(self, name: str) -> bool: ...

    def list(self) -> list[Pool]: ...


# The tags every pool of ours carries (pool_body): the Machine it was created for (a Machine is namespaced,
# a pool name is cluster-wide) and the install that created it.
MACHINE_TAG = "kaito-machine"
MACHINE_NAMESPACE_TAG = "kaito-machine-namespace"
INSTALL_TAG = "kaito-install"
# What KAITO_INSTALL_ID may be: an ARM tag value and a Kubernetes UID (kube-system's, as the README says) both fit.
INSTALL_ID = re.compile(r"^[A-Za-z0-9][-A-Za-z0-9_.]{0,62}$")


def install_id_problem(value: str) -> str | None:
    """Why `value` cannot be this install's identity, or None."""
    if INSTALL_ID.match(value):
        return None
    return (
        f"KAITO_INSTALL_ID {value!r} must be 1-63 letters, digits, '-', '_' or '.' (set it in "
        "metacontroller/aks.env to this cluster's kube-system namespace UID: "
        "kubectl get namespace kube-system -o jsonpath='{.metadata.uid}')"
    )


def pool_body(machine: Machine, install_id: str, count: int = 1) -> dict[str, Any]:
    """The REST body of the agent pool PUT for this Machine, asking for `count` nodes (0 or 1)."""
    node_labels = dict(machine.labels)
    node_labels[naming.MACHINE_LABEL] = machine.name
    tags = {MACHINE_TAG: machine.name, MACHINE_NAMESPACE_TAG: machine.namespace, INSTALL_TAG: install_id}
    if machine.labels.get(naming.WORKSPACE_LABEL):
        tags["kaito-workspace"] = machine.labels[naming.WORKSPACE_LABEL]
    workspace_ns = machine.labels.get(naming.WORKSPACE_NAMESPACE_LABEL) or machine.namespace
    if workspace_ns:
        tags["kaito-workspace-namespace"] = workspace_ns
    body: dict[str, Any] = {
        "properties": {
            "type": "VirtualMachineScaleSets",
            "vmSize": machine.vm_size,
            "count": count,
            "mode": "User",
            "osType": "Linux",
            "osDiskSizeGB": machine.os_disk_gb,
            "nodeLabels": node_labels,
            "nodeTaints": list(machine.taints),
            "tags": tags,
        }
    }
    if machine.gpu_instance_profile:  # MIG: AKS splits the pool's GPUs into this profile's slices
        body["properties"]["gpuInstanceProfile"] = machine.gpu_instance_profile
    if machine.scale_down_mode == "Deallocate":
        # AKS refuses Deallocate with Ephemeral OS disks (the default where the VM size allows them), and
        # osDiskType cannot change after creation: a Deallocate pool is created Managed.
        body["properties"]["scaleDownMode"] = "Deallocate"
        body["properties"]["osDiskType"] = "Managed"
    return body


def pool_is_ours(machine: Machine, pool: Pool, install_id: str) -> bool:
    """The pool was created by this install for this very Machine (namespace and name): only then may the
    Machine adopt or delete it. A same-named Machine in another namespace, or another install, never can."""
    return (
        bool(install_id)
        and pool.tags.get(INSTALL_TAG) == install_id
        and pool.tags.get(MACHINE_TAG) == machine.name
        and pool.tags.get(MACHINE_NAMESPACE_TAG) == machine.namespace
        and pool.node_labels.get(naming.MACHINE_LABEL) == machine.name
    )


def should_create(machine: Machine, pool: Pool | None) -> bool:
    """PUT only for a valid Machine whose pool does not exist: never a second PUT."""
    return machine.problem is None and pool is None


def count_to_put(machine: Machine, pool: Pool | None, install_id: str) -> int | None:
    """The node count to PUT on this Machine's existing pool to deallocate or start its VM, or None.

    Only a Deallocate Machine, only its own pool, only once ARM has finished the last change (Succeeded: a
    second PUT while it is Updating would repeat the first), and only when the count ARM records differs.
    """
    if machine.problem is not None or machine.scale_down_mode != "Deallocate" or pool is None:
        return None
    if not pool_is_ours(machine, pool, install_id) or pool.provisioning_state != "Succeeded":
        return None
    if pool.count is None or pool.count == machine.wanted_count:
        return None
    return machine.wanted_count


def should_delete(machine: Machine, pool: Pool | None, install_id: str) -> bool:
    return pool is not None and pool_is_ours(machine, pool, install_id) and pool.provisioning_state != "Deleting"


@dataclass(frozen=True)
class Refusal:
    code: str
    message: str
    action: str  # "create", "read", "scale" or "delete"

    @classmethod
    def of(cls, error: ArmRefused, action: str) -> Refusal:
        return cls(error.code, error.message, action)

    def text(self, pool_name: str) -> str:
        return f"ARM refused to {self.action} AKS agent pool {pool_name}: {self.code}: {self.message}"
