"""The serving Services: `<name>` (port 80 only: the replicas, their router, or rank 0 of a multi-node instance)
and `<name>-headless` (pod DNS and the torch-dist port 29500 for multi-node)."""

from __future__ import annotations

from hooks import naming
from hooks.workspace.api import Workspace
from hooks.workspace.children import router, wake_front
from hooks.workspace.children.pod_parts import DIST_PORT, HTTP_PORT, workspace_labels
from hooks.workspace.planning import PresetServing, TemplateServing


def _selector(ws: Workspace, plan: PresetServing | TemplateServing) -> dict[str, str]:
    if plan.nodes > 1:  # one instance across nodes: its API is on rank 0
        return {**workspace_labels(ws), "statefulset.kubernetes.io/pod-name": f"{ws.name}-0"}
    if router.uses_router(plan):
        return router.pod_labels(ws)
    return workspace_labels(ws)


def services(ws: Workspace, plan: PresetServing | TemplateServing) -> list[dict]:
    labels = workspace_labels(ws)
    wakes = isinstance(plan, PresetServing) and plan.scale_to_zero is not None
    lb = ws.annotations.get("kaito.sh/enablelb") == "True"
    main = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": ws.name, "namespace": ws.namespace, "labels": labels},
        "spec": {
            "type": "LoadBalancer" if lb else "ClusterIP",
            # A Workspace that scales to zero is reached through its front, which relays to <ws>-backend.
            "selector": wake_front.pod_labels(ws) if wakes else _selector(ws, plan),
            # Clients get the API only: the ranks of a multi-node instance reach each other's port 29500
            # through the headless Service's pod DNS (naming.rank0_address), never through this one.
            "ports": [{"name": "http", "port": 80, "targetPort": HTTP_PORT, "protocol": "TCP"}],
        },
    }
    headless = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": naming.headless_service(ws.name), "namespace": ws.namespace, "labels": labels},
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": labels,
            "ports": [{"name": "torch-dist", "port": DIST_PORT, "targetPort": DIST_PORT, "protocol": "TCP"}],
        },
    }
    if wakes:
        return [main, headless, wake_front.backend_service(ws, _selector(ws, plan))]
    return [main, headless]
