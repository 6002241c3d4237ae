"""Agent pools as the Machine hook sees them: what ARM can answer, and the pure pool decisions.

The ARM adapter (hooks/adapters/aks.py) returns ``Pool`` and raises these errors; ``PoolsAPI`` is
all the hooks need of it, so tests pass a fake with the same three methods.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from hooks import naming
from hooks.machine.request import Machine


class ArmError(Exception):
    """Base class of everything the ARM adapter raises."""


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


class PoolsAPI(Protocol):
    def get(self, name: str) -> Pool | None: ...

    def create(self, name: str, body: dict[str, Any]) -> None: ...

    def delete(self, name: str) -> bool: ...

    def list(self) -> list[Pool]: ...


# The tag every pool of ours carries (pool_body): the Machine it was created for.
MACHINE_TAG = "kaito-machine"


def pool_body(machine: Machine) -> dict[str, Any]:
    """The REST body of the agent pool PUT for this Machine."""
    node_labels = dict(machine.labels)
    node_labels[naming.MACHINE_LABEL] = machine.name
    tags = {MACHINE_TAG: machine.name}
    if machine.labels.get(naming.WORKSPACE_LABEL):
        tags["kaito-workspace"] = machine.labels[naming.WORKSPACE_LABEL]
    workspace_ns = machine.labels.get(naming.WORKSPACE_NAMESPACE_LABEL) or machine.namespace
    if workspace_ns:
        tags["kaito-workspace-namespace"] = workspace_ns
    body: dict[str, Any] = {
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
    if machine.gpu_instance_profile:  # MIG: AKS splits the pool's GPUs into this profile's slices
        body["properties"]["gpuInstanceProfile"] = machine.gpu_instance_profile
    return body


def pool_is_ours(machine: Machine, pool: Pool) -> bool:
    return pool.node_labels.get(naming.MACHINE_LABEL) == machine.name


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
    def of(cls, error: ArmRefused, action: str) -> Refusal:
        return cls(error.code, error.message, action)

    def text(self, pool_name: str) -> str:
        return f"ARM refused to {self.action} AKS agent pool {pool_name}: {self.code}: {self.message}"
