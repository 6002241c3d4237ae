"""Bring your own nodes (overlays/byo/'s install) on the real control plane: the Workspace runs on
the GPU nodes labelled with its selector, no Machine is ever made, and too few nodes is a status
that says so (NotEnoughNodes) until one more node is labelled."""

from __future__ import annotations

import json

import yaml
from observe import WAIT_S, condition, items, printed_columns, wait_condition
from operator_stack import REPO, gpu_node


def test_byo_uses_labelled_nodes_and_says_when_too_few(cluster, byo, namespace):
    selector = {"apps": f"byo-{namespace}"}
    doc = yaml.safe_load((REPO / "examples" / "inference-phi-3.yaml").read_text())
    doc["resource"]["labelSelector"] = {"matchLabels": selector}
    doc["resource"]["count"] = 2
    name = doc["metadata"]["name"]
    nodes = [gpu_node(f"byo-{namespace}-{i}", selector, gpus=1) for i in range(2)]
    try:
        cluster.kubectl("apply", "-f", "-", input=json.dumps(nodes[0]))
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(doc))
        ws = wait_condition(cluster, namespace, "workspace", name, "ResourceReady", "False", reason="NotEnoughNodes")
        assert "found 1 ready node(s)" in condition(ws, "ResourceReady")["message"]
        assert printed_columns(cluster, namespace, "workspace", name)["RESOURCEREADY"] == "False"

        cluster.kubectl("apply", "-f", "-", input=json.dumps(nodes[1]))
        wait_condition(cluster, namespace, "workspace", name, "ResourceReady")
        pods = cluster.wait_for(
            "two Running pods",
            lambda: (
                len([p for p in items(cluster, "pods", "-n", namespace) if p["status"].get("phase") == "Running"]) == 2
                and items(cluster, "pods", "-n", namespace)
            ),
            timeout=WAIT_S,
        )
        assert {p["spec"]["nodeName"] for p in pods} == {n["metadata"]["name"] for n in nodes}
        wait_condition(cluster, namespace, "workspace", name, "WorkspaceReady")
        assert items(cluster, "machines", "-n", namespace) == [], "bring-your-own mode must never make Machines"
    finally:
        for node in nodes:
            cluster.kubectl("delete", "node", node["metadata"]["name"], "--ignore-not-found", "--wait=false")
