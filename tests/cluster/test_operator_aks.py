"""The user's path with node auto-provisioning, on the real control plane: `kubectl apply` of the
quick starts, Metacontroller calling our hooks over HTTP, Machines becoming AKS agent pools on the
fake ARM server (Azure itself cannot be reached), the Node AKS would register (kwok), the pods
scheduled by the real scheduler and run by kwok, the status a user reads with kubectl, deletion
through the Machine's finalizer, and a hook server that dies mid-reconcile."""

from __future__ import annotations

import json
import time

import yaml
from observe import WAIT_S, condition, get, items, printed_columns, wait_condition
from operator_stack import REPO

EXAMPLES = REPO / "examples"


def apply_example(cluster, namespace: str, name: str, **resource) -> dict:
    doc = yaml.safe_load((EXAMPLES / name).read_text())
    doc["resource"].update(resource)
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(doc))
    return doc


def the_machine(cluster, namespace: str) -> dict:
    """Wait for the Workspace's one Machine; return it."""
    return cluster.wait_for(
        f"a Machine in {namespace}", lambda: (items(cluster, "machines", "-n", namespace) or [None])[0], timeout=WAIT_S
    )


def wait_for_put(cluster, arm, pool: str) -> None:
    cluster.wait_for(f"the agent pool PUT for {pool} on the fake ARM", lambda: arm.calls("PUT", pool), timeout=WAIT_S)


def provisioned_machine(cluster, arm, simulator, namespace: str) -> tuple[dict, dict]:
    """The Machine's pool PUT reaches ARM, AKS registers its Node, the Machine goes Ready."""
    machine = the_machine(cluster, namespace)
    pool = machine["metadata"]["name"]
    wait_for_put(cluster, arm, pool)
    node = simulator.provision(pool)
    wait_condition(cluster, namespace, "machine", pool, "Ready")
    return machine, node


def running_pod(cluster, namespace: str, node: dict, phase: str = "Running") -> dict:
    def probe():
        pods = items(cluster, "pods", "-n", namespace)
        return next((p for p in pods if p["status"].get("phase") == phase), None)

    pod = cluster.wait_for(f"a {phase} pod in {namespace}", probe, timeout=WAIT_S)
    assert pod["spec"]["nodeName"] == node["metadata"]["name"]
    return pod


def assert_ready_columns(cluster, namespace: str, name: str, instance: str, inference: bool = True) -> None:
    wait_condition(cluster, namespace, "workspace", name, "WorkspaceReady")
    columns = printed_columns(cluster, namespace, "workspace", name)
    expected = {"NAME": name, "INSTANCE": instance, "RESOURCEREADY": "True", "WORKSPACEREADY": "True"}
    if inference:
        expected["INFERENCEREADY"] = "True"
    assert {k: columns.get(k) for k in expected} == expected, columns


def test_quick_start_1_goes_to_workspace_ready(cluster, cluster_arm, aks, simulator, namespace):
    doc = apply_example(cluster, namespace, "inference-phi-3.yaml")
    name = doc["metadata"]["name"]
    machine, node = provisioned_machine(cluster, cluster_arm, simulator, namespace)
    pool = machine["metadata"]["name"]
    # The pool carries the Workspace's selector labels, so the Node AKS registers matches it.
    assert node["metadata"]["labels"]["apps"] == "phi-3"
    assert node["status"]["capacity"]["nvidia.com/gpu"] == "1"
    owner = machine["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("Workspace", name, True)

    pod = running_pod(cluster, namespace, node)
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet"  # a single-node preset: a Deployment
    assert_ready_columns(cluster, namespace, name, "Standard_NC6s_v3")

    ports = {p["port"] for s in items(cluster, "services", "-n", namespace) for p in s["spec"]["ports"]}
    assert {80, 29500} <= ports, ports
    assert len(cluster_arm.calls("PUT", pool)) == 1, "the pool must be created once, never re-PUT"


def test_quick_start_2_adapters(cluster, cluster_arm, aks, simulator, namespace):
    doc = apply_example(cluster, namespace, "inference-phi-3-with-adapters.yaml")
    _, node = provisioned_machine(cluster, cluster_arm, simulator, namespace)
    running_pod(cluster, namespace, node)

    # Each adapter image is pulled on the model's node by a pod the hook asks for, with the adapter's
    # pull secrets: the model pod's init containers, or a fetch Job's pod pinned to that node.
    def pulls() -> dict[str, set[str]]:
        images: dict[str, set[str]] = {}
        for pod in items(cluster, "pods", "-n", namespace):
            if pod["spec"].get("nodeName") != node["metadata"]["name"]:
                continue
            secrets = {s["name"] for s in pod["spec"].get("imagePullSecrets") or []}
            for c in (pod["spec"].get("initContainers") or []) + pod["spec"]["containers"]:
                images.setdefault(c["image"], set()).update(secrets)
        return images

    wanted = {
        a["source"]["image"]: set(a["source"].get("imagePullSecrets") or []) for a in doc["inference"]["adapters"]
    }
    found = cluster.wait_for(
        "the adapter images pulled on the model's node",
        lambda: (p := pulls()) and set(wanted) <= set(p) and p,
        timeout=WAIT_S,
    )
    for image, secrets in wanted.items():
        assert secrets <= found[image], (image, found[image])
    assert_ready_columns(cluster, namespace, doc["metadata"]["name"], "Standard_NC24ads_A100_v4")


def test_quick_start_3_tuning_job_completes(cluster, cluster_arm, aks, simulator, namespace):
    doc = apply_example(cluster, namespace, "tuning-phi-3.yaml")
    _, node = provisioned_machine(cluster, cluster_arm, simulator, namespace)
    pod = running_pod(cluster, namespace, node, phase="Succeeded")
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "Job"
    assert_ready_columns(cluster, namespace, doc["metadata"]["name"], "Standard_NC6s_v3", inference=False)


def test_arm_quota_refusal_shows_in_describe(cluster, cluster_arm, aks, namespace):
    message = (
        "Operation could not be completed as it results in exceeding approved standardNCSv3Family Cores "
        "quota. Current Limit: 0, Current Usage: 0, Additional Required: 12"
    )
    cluster_arm.refuse_vm_size("Standard_NC12s_v3", "QuotaExceeded", message)
    try:
        doc = apply_example(cluster, namespace, "inference-phi-3.yaml", instanceType="Standard_NC12s_v3")
        name = doc["metadata"]["name"]
        ws = cluster.wait_for(
            "ResourceReady False with ARM's message",
            lambda: (
                (w := get(cluster, "workspace", name, "-n", namespace))
                and condition(w, "ResourceReady").get("status") == "False"
                and "QuotaExceeded" in condition(w, "ResourceReady").get("message", "")
                and w
            ),
            timeout=WAIT_S,
        )
        assert message in condition(ws, "ResourceReady")["message"]
        described = cluster.kubectl("describe", "workspace", name, "-n", namespace).stdout
        assert "QuotaExceeded" in described and "standardNCSv3Family" in described, described
    finally:
        cluster_arm.state.refused_vm_sizes.pop("Standard_NC12s_v3", None)


def test_delete_garbage_collects_and_the_finalizer_deletes_the_pool(cluster, cluster_arm, aks, simulator, namespace):
    doc = apply_example(cluster, namespace, "inference-phi-3.yaml", instanceType="Standard_NC24s_v3")
    name = doc["metadata"]["name"]
    machine, node = provisioned_machine(cluster, cluster_arm, simulator, namespace)
    pool = machine["metadata"]["name"]
    running_pod(cluster, namespace, node)
    wait_condition(cluster, namespace, "workspace", name, "WorkspaceReady")

    simulator.finish_deletes = False  # ARM keeps the pool (Deleting) until this test says otherwise
    try:
        cluster.kubectl("delete", "workspace", name, "-n", namespace, "--wait=false")
        for kind in ("deployments", "replicasets", "pods", "services", "configmaps"):
            cluster.wait_for(
                f"{kind} of the Workspace to be garbage-collected",
                lambda kind=kind: (
                    not [
                        o
                        for o in items(cluster, kind, "-n", namespace)
                        if o["metadata"].get("labels", {}).get("kaito.sh/workspace") == name
                    ]
                ),
                timeout=WAIT_S,
            )
        cluster.wait_for(
            f"DELETE of pool {pool} on the fake ARM", lambda: cluster_arm.calls("DELETE", pool), timeout=WAIT_S
        )
        # ARM still has the pool (Deleting): the Machine must wait for the 404.
        time.sleep(3)
        held = get(cluster, "machine", pool, "-n", namespace)
        assert held is not None and held["metadata"].get("deletionTimestamp"), "Machine vanished before ARM's 404"
        simulator.remove(pool)
    finally:
        simulator.finish_deletes = True
    cluster.wait_for(
        f"Machine {pool} to disappear after ARM's 404",
        lambda: get(cluster, "machine", pool, "-n", namespace) is None,
        timeout=WAIT_S,
    )


def test_hook_server_restart_while_reconciling(cluster, cluster_arm, aks, simulator, namespace):
    doc = apply_example(cluster, namespace, "inference-phi-3.yaml", instanceType="Standard_NC24rs_v3")
    name = doc["metadata"]["name"]
    machine = the_machine(cluster, namespace)
    wait_for_put(cluster, cluster_arm, machine["metadata"]["name"])

    def children() -> dict:
        return {
            (o["kind"], o["metadata"]["name"]): o["metadata"]["uid"]
            for kind in ("machines", "deployments", "statefulsets", "services", "configmaps")
            for o in items(cluster, kind, "-n", namespace)
        }

    before = cluster.wait_for(
        "the Deployment", lambda: (c := children()) and any(k == "Deployment" for k, _ in c) and c, timeout=WAIT_S
    )

    aks.hooks.kill()
    node = simulator.provision(machine["metadata"]["name"])  # the world moves on while the hooks are down
    time.sleep(8)  # Metacontroller's syncs fail meanwhile (connection refused)
    assert children() == before, "a child was deleted or replaced while the hook server was down"
    aks.hooks.start()

    running_pod(cluster, namespace, node)
    wait_condition(cluster, namespace, "workspace", name, "WorkspaceReady")
    after = children()
    assert {k: after.get(k) for k in before} == before, "children were recreated instead of kept"
