"""The wake-on-demand front of a Workspace that opts in to scale-to-zero (kaito.sh/scale-to-zero-after).

A CPU Deployment `<ws>-front` running our gateway with its held-request queue (inference/wake_front.py) is
what the Workspace Service `<ws>` selects, so a Service with no model server behind it still answers. The
front relays to `<ws>-backend`, a Service selecting what `<ws>` would select without it (the replicas, the
router, or rank 0). At 0 replicas it holds requests and patches the Workspace's scale subresource to 1; after
the idle period it patches it to 0.

Its ServiceAccount may do exactly that: `patch` on `workspaces/scale` of this one Workspace (resourceNames),
nothing else: no get, no other Workspace, no other resource.
"""

from __future__ import annotations

from hooks.settings import Settings
from hooks.workspace.api import Workspace
from hooks.workspace.children import live_adapters, pod_parts, router
from hooks.workspace.children.pod_parts import HTTP_PORT, workspace_labels
from hooks.workspace.planning import PresetServing
from hooks.workspace.scale_to_zero import ScaleToZero

FRONT_LABEL = "kaito.sh/workspace-front"
# One process: the held-request queue and the idle clock live in it.
FRONT_REPLICAS = 1


def name(ws: Workspace) -> str:
    return f"{ws.name}-front"


def backend_name(ws: Workspace) -> str:
    return f"{ws.name}-backend"


def pod_labels(ws: Workspace) -> dict[str, str]:
    # Not kaito.sh/workspace: the front is no replica (scale selector, related pods, router discovery).
    return {FRONT_LABEL: ws.name}


def backend_service(ws: Workspace, selector: dict[str, str]) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": backend_name(ws), "namespace": ws.namespace, "labels": workspace_labels(ws)},
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": "http", "port": 80, "targetPort": HTTP_PORT, "protocol": "TCP"}],
        },
    }


def front_args(ws: Workspace, plan: PresetServing, wake: ScaleToZero) -> list[str]:
    names, chat_default = router.served_adapters(plan)
    args = [
        "--served-model-name",
        plan.preset.name,
        "--upstream",
        f"http://{backend_name(ws)}.{ws.namespace}.svc",
        "--port",
        str(HTTP_PORT),
        "--workspace",
        f"{ws.namespace}/{ws.name}",
        "--idle-seconds",
        str(wake.idle_seconds),
        "--queue-size",
        str(wake.queue_size),
        "--max-wait-seconds",
        str(wake.max_wait_seconds),
    ]
    if plan.live_adapters:
        # The names follow the replicas' desired set, as the router pod's gateway does.
        return [*args, "--adapter-names-from", f"{live_adapters.DESIRED_DIR}/{live_adapters.DESIRED_FILE}"]
    for adapter in names:
        args += ["--adapter", adapter]
    if chat_default:
        args += ["--chat-default-adapter", chat_default]
    return args


def deployment(ws: Workspace, plan: PresetServing, wake: ScaleToZero, settings: Settings) -> dict:
    labels = pod_labels(ws)
    container = {
        "name": "front",
        "image": settings.router_image,  # no torch, no CUDA: runs on any node
        "command": ["python", "-m", "inference.wake_front"],
        "args": front_args(ws, plan, wake),
        "ports": [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}],
        # Ready whether or not a model server runs: it is the one endpoint of the Service at 0 replicas.
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": HTTP_PORT}, "periodSeconds": 5},
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": HTTP_PORT},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    pod_spec: dict = {
        "serviceAccountName": name(ws),
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
    }
    if plan.live_adapters:
        container["volumeMounts"] = [
            {"name": live_adapters.DESIRED_VOLUME, "mountPath": live_adapters.DESIRED_DIR, "readOnly": True}
        ]
        pod_spec["volumes"] = [
            {"name": live_adapters.DESIRED_VOLUME, "configMap": {"name": live_adapters.config_map_name(ws.name)}}
        ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name(ws), "namespace": ws.namespace, "labels": labels},
        "spec": {
            "replicas": FRONT_REPLICAS,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


def identity(ws: Workspace) -> list[dict]:
    """ServiceAccount, Role and RoleBinding of this Deployment's pods."""
    rules = [
        {
            "apiGroups": ["kaito.sh"],
            "resources": ["workspaces/scale"],
            "resourceNames": [ws.name],
            "verbs": ["patch"],
        }
    ]
    return pod_parts.identity(name(ws), ws.namespace, pod_labels(ws), rules)


def children(ws: Workspace, plan: PresetServing, wake: ScaleToZero, settings: Settings) -> list[dict]:
    return [*identity(ws), deployment(ws, plan, wake, settings)]
