"""Pod pieces shared by the workload and the tuning Job: scheduling onto GPU nodes, GPUs, volumes, copiers,
the init container that hands a hostPath folder to the images' user."""

from __future__ import annotations

import math
from typing import Any

from hooks import naming
from hooks.workspace.api import Workspace
from hooks.workspace.planning import PresetServing, WorkloadPlan

HTTP_PORT = 5000
DIST_PORT = 29500
TOOLS_DIR = "/kaito-tools"
COPY_PROGRAM = f"{TOOLS_DIR}/kaito-copy"
IMAGE_UID = 65532  # the user the runtime and tuning images run as (their Dockerfiles' numeric USER)


def workspace_labels(ws: Workspace) -> dict[str, str]:
    return {naming.WORKSPACE_LABEL: ws.name}


def tolerations() -> list[dict]:
    return [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"},
    ]


def node_affinity(ws: Workspace) -> dict:
    sel = ws.resource.labelSelector
    exprs: list[dict[str, Any]] = [
        {"key": k, "operator": "In", "values": [v]} for k, v in sorted((sel.matchLabels or {}).items())
    ]
    for req in sel.matchExpressions or []:
        expr: dict[str, Any] = {"key": req.key, "operator": req.operator}
        if req.values is not None:
            expr["values"] = list(req.values)
        exprs.append(expr)
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": exprs}]}
        }
    }


def gpu_resources(plan: WorkloadPlan) -> dict:
    gpus = str(plan.gpus_per_node)
    return {"requests": {plan.gpu_resource: gpus}, "limits": {plan.gpu_resource: gpus}}


# The model server's host memory beyond its share of the weights: the runtime's own processes (tokenizer,
# scheduler, detokenizer), the gateway and adapter copies, and per GPU one worker with its CUDA context.
MODEL_SERVER_BASE_GIB = 8
MODEL_SERVER_PER_GPU_GIB = 4


def model_server_memory_gib(weights_gib: float, nodes: int, gpus_per_node: int) -> int:
    """Host memory one model server pod may use: its node's share of the weights (read once into memory
    on their way to the GPUs) plus the runtime's own footprint. A limit, so a runaway read (an adapter
    file that never ends) ends this pod, not whatever the node's OOM killer would pick."""
    share = weights_gib / max(1, nodes)
    return math.ceil(share + MODEL_SERVER_BASE_GIB + MODEL_SERVER_PER_GPU_GIB * gpus_per_node)


def model_server_resources(plan: PresetServing) -> dict:
    """GPUs, and a memory limit the preset's footprint justifies (the request defaults to it: every node
    that holds the preset's GPUs has that much memory)."""
    resources = gpu_resources(plan)
    memory = model_server_memory_gib(plan.preset.weights, plan.nodes, plan.gpus_per_node)
    resources["limits"]["memory"] = f"{memory}Gi"
    return resources


def shm_volume() -> tuple[dict, dict]:
    return {"name": "dshm", "emptyDir": {"medium": "Memory"}}, {"name": "dshm", "mountPath": "/dev/shm"}


def tools_volume() -> dict:
    return {"name": "kaito-tools", "emptyDir": {}}


def copier_init_container(image: str) -> dict:
    """Places our static copy program where images without a shell (FROM scratch) can run it."""
    return {
        "name": "install-copier",
        "image": image,
        "command": ["/usr/local/bin/kaito-copy", "/usr/local/bin/kaito-copy", COPY_PROGRAM],
        "volumeMounts": [{"name": "kaito-tools", "mountPath": TOOLS_DIR}],
    }


def copy_from_image(name: str, image: str, dest_volume: str, dest_mount: str, dest_dir: str) -> dict:
    """An init container that runs `image` itself and copies its /data to `dest_dir`."""
    return {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": [COPY_PROGRAM, "/data", dest_dir],
        "volumeMounts": [
            {"name": "kaito-tools", "mountPath": TOOLS_DIR, "readOnly": True},
            {"name": dest_volume, "mountPath": dest_mount},
        ],
    }


def harden(spec: dict) -> dict:
    """The pod spec with the restricted defaults our own pods run under: no service account token (nothing in
    them talks to the Kubernetes API), seccomp RuntimeDefault, and per container no privilege escalation and
    no capabilities. A container that states its capabilities itself (the root chown step) keeps them."""
    spec.setdefault("automountServiceAccountToken", False)
    pod_security = spec.setdefault("securityContext", {})
    pod_security.setdefault("seccompProfile", {"type": "RuntimeDefault"})
    for container in [*spec.get("initContainers", []), *spec.get("containers", [])]:
        security = container.setdefault("securityContext", {})
        security.setdefault("allowPrivilegeEscalation", False)
        security.setdefault("capabilities", {"drop": ["ALL"]})
    return spec


def unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def identity(name: str, namespace: str, labels: dict[str, str], rules: list[dict], **account: Any) -> list[dict]:
    """A pod identity of a Workspace: ServiceAccount `name`, a Role with `rules` and the RoleBinding between them
    (`account`: extra ServiceAccount fields, e.g. automountServiceAccountToken)."""
    metadata = {"name": name, "namespace": namespace, "labels": labels}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": dict(metadata), **account},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": dict(metadata), "rules": rules},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": dict(metadata),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        },
    ]


def chown_container(name: str, image: str, mount: dict) -> dict:
    """A hostPath folder is created root-owned: this init container hands the folder at `mount` to the
    images' user. Only this step runs as root, with no capability but changing ownership."""
    return {
        "name": name,
        "image": image,
        "command": ["python", "-c", f"import os; os.chown({mount['mountPath']!r}, {IMAGE_UID}, {IMAGE_UID})"],
        "securityContext": {
            "runAsUser": 0,
            "runAsNonRoot": False,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"], "add": ["CHOWN"]},
        },
        "volumeMounts": [mount],
    }
