"""Names of everything derived from a Workspace, and the Kubernetes name rules they obey."""

from __future__ import annotations

import hashlib
import re

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# A Machine's name is its AKS agent pool's name: 1-12 lowercase letters and digits, a letter first.
MACHINE_NAME = re.compile(r"^[a-z][a-z0-9]{0,11}$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

# The StatefulSet controller labels each pod `controller-revision-hash: <name>-<hash up to 10>`,
# and a label value is at most 63 characters: so the workspace name may have at most 52.
MAX_WORKSPACE_NAME = 52

WORKSPACE_LABEL = "kaito.sh/workspace"
WORKSPACE_NAMESPACE_LABEL = "kaito.sh/workspacenamespace"
MACHINE_LABEL = "kaito.sh/machine"
MACHINE_TYPE_LABEL = "kaito.sh/machine-type"
# Set by AKS on every node of an agent pool: the pool's name.
AGENTPOOL_LABEL = "agentpool"
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
GPU_RESOURCE = "nvidia.com/gpu"


def label_key_problem(key: str) -> str | None:
    """Why `key` is not a Kubernetes label key ([prefix/]name), or None."""
    prefix, slash, name = key.rpartition("/")
    if slash and not is_dns_subdomain(prefix):
        return f"label key {key!r}: the prefix before '/' must be a DNS subdomain (lowercase, at most 253 characters)"
    if not name or len(name) > 63 or not LABEL_VALUE.match(name):
        return (
            f"label key {key!r}: the name must be 1-63 letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit"
        )
    return None


def label_value_problem(value: str) -> str | None:
    """Why `value` is not a Kubernetes label value, or None."""
    if len(value) > 63 or not LABEL_VALUE.match(value):
        return (
            f"label value {value!r} must be at most 63 letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit"
        )
    return None


def is_dns_label(value: str, max_len: int = 63) -> bool:
    return len(value) <= max_len and bool(DNS1123_LABEL.match(value))


def is_dns_subdomain(value: str) -> bool:
    return len(value) <= 253 and bool(DNS1123_SUBDOMAIN.match(value))


def headless_service(workspace: str) -> str:
    return f"{workspace}-headless"


def tuning_config_map(workspace: str) -> str:
    return f"{workspace}-tuning-config"


_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def machine_name(namespace: str, workspace: str, index: int) -> str:
    """The Machine (and AKS agent pool) name, stable for (namespace, workspace, index): a letter and 11 letters
    or digits from a SHA-256, all the entropy a pool name allows (26 x 36^11, about 2^61.6), so finding a
    Workspace name whose Machine collides with another tenant's is out of reach."""
    number = int.from_bytes(hashlib.sha256(f"{namespace}/{workspace}/{index}".encode()).digest(), "big")
    number, first = divmod(number, 26)
    chars = [_BASE36[10 + first]]
    for _ in range(11):
        number, digit = divmod(number, 36)
        chars.append(_BASE36[digit])
    return "".join(chars)


def rank0_address(workspace: str, namespace: str, port: int = 29500) -> str:
    return f"{workspace}-0.{headless_service(workspace)}.{namespace}.svc:{port}"
