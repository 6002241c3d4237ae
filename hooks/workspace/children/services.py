"""The serving Services: `<name>` (port 80, the rank-0 pod) and `<name>-headless` (pod DNS for multi-node)."""

from __future__ import annotations

from hooks import naming
from hooks.workspace.api import Workspace
from hooks.workspace.children.pod_parts import DIST_PORT, HTTP_PORT, workspace_labels


def services(ws: Workspace) -> list[dict]:
    labels = workspace_labels(ws)
    lb = ws.annotations.get("kaito.sh/enablelb") == "True"
    main = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": ws.name, "namespace": ws.namespace, "labels": labels},
        "spec": {
            "type": "LoadBalancer" if lb else "ClusterIP",
            "selector": {**labels, "statefulset.kubernetes.io/pod-name": f"{ws.name}-0"},
            "ports": [
                {"name": "http", "port": 80, "targetPort": HTTP_PORT, "protocol": "TCP"},
                {"name": "torch-dist", "port": DIST_PORT, "targetPort": DIST_PORT, "protocol": "TCP"},
            ],
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
    return [main, headless]
