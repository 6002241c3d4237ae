"""Scale to zero that keeps the node's disk, on the real control plane: a Workspace with
`kaito.sh/scale-down-mode: Deallocate` at 1 replica is scaled to 0 through its scale subresource; its Machine is
kept and marked, the Machine hook sends one count-0 PUT, the fake ARM deallocates the VM and keeps its OS disk,
the kwok node stays registered NotReady. Scaled to 1: one count-1 PUT, the same VM started again, the node Ready
and the replica pod scheduled on it. No pool is deleted or created along the way."""

from __future__ import annotations

import json

import pytest
from observe import WAIT_S, get, items
from operator_stack import node_name_for_pool

pytestmark = [pytest.mark.scale_to_zero, pytest.mark.cluster]

NAME = "phi-dealloc"


def workspace() -> dict:
    return {
        "apiVersion": "kaito.sh/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": NAME, "annotations": {"kaito.sh/scale-down-mode": "Deallocate"}},
        "spec": {"replicas": 1},
        "resource": {"instanceType": "Standard_NC24ads_A100_v4", "labelSelector": {"matchLabels": {"apps": NAME}}},
        "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}},
    }


def node_ready(cluster, name: str) -> str | None:
    node = get(cluster, "node", name) or {}
    return next((c["status"] for c in (node.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"), None)


def machine_ready(cluster, namespace: str, name: str) -> dict:
    machine = get(cluster, "machine", name, "-n", namespace) or {}
    return next((c for c in (machine.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"), {})


def ready_replicas(cluster, namespace: str) -> int:
    return ((get(cluster, "deployment", NAME, "-n", namespace) or {}).get("status") or {}).get("readyReplicas") or 0


def scale_to_zero(cluster, namespace: str) -> dict:
    return ((get(cluster, "workspace", NAME, "-n", namespace) or {}).get("status") or {}).get("scaleToZero") or {}


def counts(arm, pool: str) -> list[int]:
    return [call.body["properties"]["count"] for call in arm.calls("PUT", pool)]


def test_zero_deallocates_the_node_and_one_starts_the_same_vm(cluster, cluster_arm, aks, simulator, namespace):
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(workspace()))
    (machine,) = cluster.wait_for("one Machine", lambda: items(cluster, "machines", "-n", namespace) or None)
    pool = machine["metadata"]["name"]
    assert machine["spec"]["scaleDownMode"] == "Deallocate"
    cluster.wait_for(f"the agent pool PUT for {pool}", lambda: cluster_arm.calls("PUT", pool), timeout=WAIT_S)
    assert cluster_arm.calls("PUT", pool)[0].body["properties"]["osDiskType"] == "Managed"
    simulator.provision(pool)
    node = node_name_for_pool(pool)
    cluster.wait_for("the replica pod Ready", lambda: ready_replicas(cluster, namespace) == 1, timeout=WAIT_S)
    cluster_arm.write_disk(pool, "weights:phi-3")

    cluster.kubectl("scale", "workspace", NAME, "-n", namespace, "--replicas=0")
    cluster.wait_for("the count-0 PUT", lambda: counts(cluster_arm, pool) == [1, 0], timeout=WAIT_S)
    (vm,) = cluster_arm.pool_nodes(pool)
    assert vm["power"] == "Deallocated" and vm["disk"] == {"weights:phi-3": True}
    # NotReady: False as the simulator leaves it, or Unknown once the node lifecycle controller misses its heartbeats.
    cluster.wait_for("the node NotReady, still registered", lambda: node_ready(cluster, node) in ("False", "Unknown"))
    cluster.wait_for(
        "the Machine Deallocated", lambda: machine_ready(cluster, namespace, pool).get("reason") == "Deallocated"
    )
    status = cluster.wait_for(
        "status.scaleToZero with the deallocated node",
        lambda: (s := scale_to_zero(cluster, namespace)).get("deallocatedNodes") == 1 and s,
        timeout=WAIT_S,
    )
    assert status["state"] == "ScaledToZero"
    assert [m["metadata"]["name"] for m in items(cluster, "machines", "-n", namespace)] == [pool]
    assert counts(cluster_arm, pool) == [1, 0]  # no second count-0 PUT

    cluster.kubectl("scale", "workspace", NAME, "-n", namespace, "--replicas=1")
    cluster.wait_for("the count-1 PUT", lambda: counts(cluster_arm, pool) == [1, 0, 1], timeout=WAIT_S)
    (vm,) = cluster_arm.pool_nodes(pool)
    assert vm["power"] == "Running" and vm["starts"] == 2 and "weights:phi-3" in vm["disk"]
    cluster.wait_for("the node Ready again", lambda: node_ready(cluster, node) == "True", timeout=WAIT_S)
    cluster.wait_for("the replica pod Ready", lambda: ready_replicas(cluster, namespace) == 1, timeout=WAIT_S)
    (pod,) = [p for p in items(cluster, "pods", "-n", namespace) if not p["metadata"].get("deletionTimestamp")]
    assert pod["spec"]["nodeName"] == node
    assert counts(cluster_arm, pool) == [1, 0, 1] and cluster_arm.calls("DELETE", pool) == []
