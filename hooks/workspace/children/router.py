"""The cache-aware router in front of a Workspace's replicas (SGLang runtime, more than one replica).

One pod, two containers. Our gateway listens on the pod port (the Workspace Service's target) and serves
Kaito's /chat, the adapter-name check and /v1/models with the adapters, as each replica's gateway does. It
relays to sglang-router on loopback, which learns the replica pods from the Kubernetes API (label
kaito.sh/workspace=<ws>: only Ready pods join, a pod that stops being Ready leaves) and sends each request to
the replica most likely to hold its prompt's prefix in SGLang's cache. The router reaches each replica through
that replica's gateway (SGLang listens on the pod's loopback only), which checks adapter names again.

Hooks never call the Kubernetes API; the router pod does, as its own ServiceAccount, which may only
get/list/watch pods in the Workspace's namespace.
"""

from __future__ import annotations

from typing import TypeGuard

from hooks.settings import Settings
from hooks.workspace.api import Workspace
from hooks.workspace.children import live_adapters, pod_parts
from hooks.workspace.children.pod_parts import HTTP_PORT, workspace_labels
from hooks.workspace.planning import PresetServing, WorkloadPlan
from workload_contract.adapter_names import COMBINED_ADAPTER

ROUTER_LABEL = "kaito.sh/workspace-router"
# sglang-router on loopback: its admin API (/add_worker, /remove_worker, /flush_cache) stays inside the pod.
ROUTER_PORT = 30000
METRICS_PORT = 29000
# A replica that stops answering leaves the rotation after ~10 s instead of the defaults' ~3 minutes
# (sglang-router 0.3.2 checks every 60 s and needs 3 failures: measured 126 s with a killed worker).
HEALTH_INTERVAL_SECONDS = 5
HEALTH_FAILURES = 2
# Our gateway relays every replica's traffic here: several processes on the port (SO_REUSEPORT), so one
# event loop is not what limits the Workspace (benchmarks/bench_router.py measures its cost per event).
GATEWAY_WORKERS = 4


def uses_router(plan: WorkloadPlan) -> TypeGuard[PresetServing]:
    """SGLang replicas, more than one: the transformers runtime and single instances are reached directly."""
    return isinstance(plan, PresetServing) and plan.runtime == "sglang" and plan.nodes == 1 and plan.replicas > 1


def name(ws: Workspace) -> str:
    return f"{ws.name}-router"


def pod_labels(ws: Workspace) -> dict[str, str]:
    # Not kaito.sh/workspace: the router pod is no replica (scale selector, service discovery, related pods).
    return {ROUTER_LABEL: ws.name}


def router_args(ws: Workspace) -> list[str]:
    return [
        "--host",
        "127.0.0.1",
        "--port",
        str(ROUTER_PORT),
        "--policy",
        "cache_aware",
        "--service-discovery",
        "--selector",
        *[f"{k}={v}" for k, v in sorted(workspace_labels(ws).items())],
        "--service-discovery-namespace",
        ws.namespace,
        "--service-discovery-port",
        str(HTTP_PORT),
        "--health-check-endpoint",
        "/health",
        "--health-check-interval-secs",
        str(HEALTH_INTERVAL_SECONDS),
        "--health-failure-threshold",
        str(HEALTH_FAILURES),
        "--prometheus-host",
        "0.0.0.0",
        "--prometheus-port",
        str(METRICS_PORT),
    ]


def served_adapters(plan: PresetServing) -> tuple[list[str], str | None]:
    """The adapter names each replica serves and the one Kaito's /chat uses when a request names none, as the
    replica's launcher derives them (inference.adapters): with several adapters also their weighted sum."""
    names = [adapter.name for adapter in plan.adapters]
    if len(names) > 1:
        return [*names, COMBINED_ADAPTER], COMBINED_ADAPTER
    return names, (names[0] if names else None)


def gateway_args(plan: PresetServing) -> list[str]:
    # Ready (and so in the Service) once the router has a healthy replica: sglang-router's /readiness.
    args = [
        "--served-model-name",
        plan.preset.name,
        "--upstream",
        f"http://127.0.0.1:{ROUTER_PORT}",
        "--upstream-health-path",
        "/readiness",
        "--workers",
        str(GATEWAY_WORKERS),
        "--port",
        str(HTTP_PORT),
    ]
    if plan.live_adapters:
        # The names follow the replicas' desired set (the same ConfigMap): no restart when adapters change.
        return [*args, "--adapter-names-from", f"{live_adapters.DESIRED_DIR}/{live_adapters.DESIRED_FILE}"]
    names, chat_default = served_adapters(plan)
    for name in names:
        args += ["--adapter", name]
    if chat_default:
        args += ["--chat-default-adapter", chat_default]
    return args


def _security_context() -> dict:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def deployment(ws: Workspace, plan: PresetServing, settings: Settings) -> dict:
    labels = pod_labels(ws)
    gateway = {
        "name": "gateway",
        "image": settings.router_image,
        "command": ["python", "-m", "inference.gateway"],
        "args": gateway_args(plan),
        "ports": [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": "/health", "port": HTTP_PORT},
            "periodSeconds": 5,
            "failureThreshold": 2,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": HTTP_PORT},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "resources": {"requests": {"cpu": "1", "memory": "512Mi"}, "limits": {"memory": "2Gi"}},
        "securityContext": _security_context(),
    }
    volumes: list[dict] = [{"name": "tmp", "emptyDir": {}}]
    if plan.live_adapters:
        gateway["volumeMounts"] = [
            {"name": live_adapters.DESIRED_VOLUME, "mountPath": live_adapters.DESIRED_DIR, "readOnly": True}
        ]
        volumes.append(
            {"name": live_adapters.DESIRED_VOLUME, "configMap": {"name": live_adapters.config_map_name(ws.name)}}
        )
    router = {
        "name": "router",
        "image": settings.router_image,
        "command": ["python", "-m", "sglang_router.launch_router"],
        "args": router_args(ws),
        "ports": [{"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}],
        "livenessProbe": {"tcpSocket": {"port": METRICS_PORT}, "periodSeconds": 10, "failureThreshold": 3},
        "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"memory": "2Gi"}},
        "securityContext": _security_context(),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name(ws), "namespace": ws.namespace, "labels": labels},
        "spec": {
            # One router: its prefix tree lives in the process, so two routers would each learn half the traffic.
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": name(ws),
                    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [gateway, router],
                    "volumes": volumes,
                },
            },
        },
    }


def identity(ws: Workspace) -> list[dict]:
    """ServiceAccount, Role and RoleBinding of this Deployment's pods."""
    rules = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
    return pod_parts.identity(name(ws), ws.namespace, pod_labels(ws), rules)


def children(ws: Workspace, plan: PresetServing, settings: Settings) -> list[dict]:
    return [*identity(ws), deployment(ws, plan, settings)]
