"""Scaling a Workspace on the real control plane: `kubectl scale workspace` through the CRD's scale
subresource, Machines following the replicas (a new agent pool on the fake ARM per new replica; on a
scale-in a Machine goes once its node has no pod of the Workspace), the router child of several SGLang
replicas, and `kubectl get --subresource=scale` answering with the replica status."""

from __future__ import annotations

import json

import yaml
from observe import WAIT_S, get, items, printed_columns
from operator_stack import REPO

EXAMPLE = REPO / "examples" / "autoscaling" / "workspace-phi-3-sglang.yaml"


def scale_of(cluster, namespace: str, name: str) -> dict:
    scale = get(cluster, "workspace", name, "-n", namespace, "--subresource=scale")
    assert scale is not None and scale["kind"] == "Scale", scale
    return scale


def machines_when(cluster, namespace: str, count: int) -> list[dict]:
    def probe():
        found = items(cluster, "machines", "-n", namespace)
        return found if len(found) == count else None

    return cluster.wait_for(f"{count} Machine(s) in {namespace}", probe, timeout=WAIT_S)


def provision(cluster, arm, simulator, machines: list[dict], done: set[str]) -> None:
    """AKS accepts each new Machine's agent pool and registers its Node."""
    for machine in machines:
        pool = machine["metadata"]["name"]
        if pool in done:
            continue
        cluster.wait_for(f"the agent pool PUT for {pool}", lambda pool=pool: arm.calls("PUT", pool), timeout=WAIT_S)
        simulator.provision(pool)
        done.add(pool)


def deployment_replicas(cluster, namespace: str, name: str, replicas: int, ready: bool = True) -> dict:
    def probe():
        dep = get(cluster, "deployment", name, "-n", namespace)
        status = (dep or {}).get("status") or {}
        if dep and dep["spec"]["replicas"] == replicas and (not ready or status.get("readyReplicas", 0) == replicas):
            return dep
        return None

    return cluster.wait_for(
        f"deployment/{name} with {replicas} {'ready ' if ready else ''}replicas", probe, timeout=WAIT_S
    )


def test_kubectl_scale_drives_replicas_machines_and_the_router(cluster, cluster_arm, aks, simulator, namespace):
    doc = yaml.safe_load(EXAMPLE.read_text())
    name = doc["metadata"]["name"]
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(doc))
    provisioned: set[str] = set()
    provision(cluster, cluster_arm, simulator, machines_when(cluster, namespace, 1), provisioned)
    deployment_replicas(cluster, namespace, name, 1)
    cluster.wait_for(
        "the scale subresource reports 1 ready replica",
        lambda: scale_of(cluster, namespace, name)["status"].get("replicas") == 1,
        timeout=WAIT_S,
    )
    scale = scale_of(cluster, namespace, name)
    assert scale["spec"]["replicas"] == 1 and scale["status"]["selector"] == f"kaito.sh/workspace={name}"

    cluster.kubectl("scale", "workspace", name, "-n", namespace, "--replicas=3")
    assert scale_of(cluster, namespace, name)["spec"]["replicas"] == 3
    three = machines_when(cluster, namespace, 3)
    provision(cluster, cluster_arm, simulator, three, provisioned)
    deployment_replicas(cluster, namespace, name, 3)
    router = cluster.wait_for(
        "the router Deployment", lambda: get(cluster, "deployment", f"{name}-router", "-n", namespace), timeout=WAIT_S
    )
    assert router["spec"]["template"]["spec"]["serviceAccountName"] == f"{name}-router"
    assert get(cluster, "role", f"{name}-router", "-n", namespace)["rules"][0]["resources"] == ["pods"]
    service = get(cluster, "service", name, "-n", namespace)
    assert service["spec"]["selector"] == {"kaito.sh/workspace-router": name}
    cluster.wait_for(
        "status.replicas 3 on the scale subresource",
        lambda: scale_of(cluster, namespace, name)["status"].get("replicas") == 3,
        timeout=WAIT_S,
    )
    # Empty columns (JOBSTARTED of an inference Workspace) must not shift the others.
    wide = printed_columns(cluster, namespace, "workspace", name, "-o", "wide")
    assert wide["REPLICAS"] == "3", wide

    cluster.kubectl("scale", "workspace", name, "-n", namespace, "--replicas=1")
    deployment_replicas(cluster, namespace, name, 1, ready=False)

    # Once the ReplicaSet's surplus pods are gone, their Machines are kept idle for the scale-in grace
    # period (5 s here), then they go: their agent pools are deleted on ARM.
    cluster.wait_for(
        "2 idle Machines",
        lambda: (
            len(
                [
                    m
                    for m in items(cluster, "machines", "-n", namespace)
                    if "kaito.sh/idle-since" in m["metadata"].get("annotations", {})
                ]
            )
            == 2
            or len([m for m in items(cluster, "machines", "-n", namespace) if m["metadata"].get("deletionTimestamp")])
            == 2
        ),
        timeout=WAIT_S,
    )

    def two_leaving():
        leaving = [m for m in items(cluster, "machines", "-n", namespace) if m["metadata"].get("deletionTimestamp")]
        return leaving if len(leaving) == 2 else None

    for machine in cluster.wait_for("2 Machines being deleted", two_leaving, timeout=WAIT_S):
        pool = machine["metadata"]["name"]
        cluster.wait_for(
            f"the DELETE of pool {pool}", lambda pool=pool: cluster_arm.calls("DELETE", pool), timeout=WAIT_S
        )
        simulator.remove(pool)
    one = machines_when(cluster, namespace, 1)
    # The Machine that stays is the one whose node runs the remaining pod.
    pods = [
        p
        for p in items(cluster, "pods", "-n", namespace, "-l", f"kaito.sh/workspace={name}")
        if not p["metadata"].get("deletionTimestamp")
    ]
    assert [p["spec"]["nodeName"] for p in pods] == [one[0]["status"]["nodeName"]]
    assert scale_of(cluster, namespace, name)["spec"]["replicas"] == 1
    cluster.wait_for(
        "the router is removed",
        lambda: get(cluster, "deployment", f"{name}-router", "-n", namespace) is None,
        timeout=WAIT_S,
    )
    assert get(cluster, "service", name, "-n", namespace)["spec"]["selector"] == {"kaito.sh/workspace": name}
