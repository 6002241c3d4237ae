"""What the operator relies on from Metacontroller v4.17.2, checked on the real program (built from
../shared/third_party) running with the install's ClusterRole, through our own controllers:

- a child deleted behind its back is recreated; an object carrying the Workspace's selector label but
  no owner is adopted and, not being desired, deleted;
- a quiet Workspace is left alone: over a quiet minute no child, no Machine and no status is written
  (dynamic apply's three-way merge must find nothing to change in what the hooks return);
- ARM's 429 reaches Metacontroller as the hook's 429 with Retry-After, and the pool is created after it;
- a hook that cannot be reached changes nothing and leaves a SyncError event a user sees in
  `kubectl describe`.
"""

from __future__ import annotations

import json
import time

import yaml
from observe import WAIT_S, get, items, wait_condition
from operator_stack import REPO, gpu_node

EXAMPLE = REPO / "examples" / "inference-phi-3.yaml"
# Our children, plus the objects whose status the hooks write (Workspace, Machine).
WATCHED = (
    "workspaces",
    "machines",
    "deployments",
    "statefulsets",
    "services",
    "configmaps",
    "jobs",
    "serviceaccounts",
    "roles",
    "rolebindings",
)
QUIET_S = 60


def byo_workspace(cluster, namespace: str, name: str = "quiet") -> dict:
    """Quick start 1 on one labelled node of our own (bring-your-own mode), ready."""
    label = {"apps": namespace[-40:].strip("-")}  # a label value has at most 63 characters
    node = gpu_node(f"gpu-{namespace}", {**label, "node.kubernetes.io/instance-type": "Standard_NC6s_v3"}, gpus=1)
    cluster.kubectl("apply", "-f", "-", input=json.dumps(node))
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["metadata"] = {"name": name, "namespace": namespace}
    doc["resource"]["labelSelector"] = {"matchLabels": label}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(doc))
    return wait_condition(cluster, namespace, "workspace", name, "WorkspaceReady")


def versions(cluster, namespace: str) -> dict[tuple[str, str], str]:
    """(kind, name) -> resourceVersion of every watched object in `namespace`."""
    return {
        (o["kind"], o["metadata"]["name"]): o["metadata"]["resourceVersion"]
        for kind in WATCHED
        for o in items(cluster, kind, "-n", namespace)
    }


def sync_errors(cluster, namespace: str, name: str) -> list[dict]:
    """The SyncError events Metacontroller recorded on the object `name`."""
    selector = f"involvedObject.name={name},reason=SyncError"
    return items(cluster, "events", "-n", namespace, "--field-selector", selector)


def test_a_deleted_child_is_recreated_and_a_stray_with_our_selector_is_adopted_then_deleted(cluster, byo, namespace):
    ws = byo_workspace(cluster, namespace, "owned")
    service = get(cluster, "service", "owned", "-n", namespace)
    assert service["metadata"]["ownerReferences"][0]["uid"] == ws["metadata"]["uid"]
    assert service["metadata"]["labels"]["controller-uid"] == ws["metadata"]["uid"]

    cluster.kubectl("delete", "service", "owned", "-n", namespace)
    cluster.wait_for(
        "the deleted Service to be recreated",
        lambda: (
            (s := get(cluster, "service", "owned", "-n", namespace))
            and s["metadata"]["uid"] != service["metadata"]["uid"]
        ),
        timeout=WAIT_S,
    )

    stray = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "stray", "namespace": namespace, "labels": {"controller-uid": ws["metadata"]["uid"]}},
        "data": {"left": "behind"},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(stray))
    # Adopted (it matches the Workspace's selector), then deleted: the hook does not return it.
    cluster.wait_for(
        "the stray ConfigMap to be adopted and deleted",
        lambda: get(cluster, "configmap", "stray", "-n", namespace) is None,
        timeout=WAIT_S,
    )
    cluster.kubectl("delete", "node", f"gpu-{namespace}", "--wait=false")


def test_a_quiet_workspace_gets_no_writes(cluster, byo, namespace):
    """Every resync (2 s here) calls the hook and applies its answer; none of it may change anything."""
    byo_workspace(cluster, namespace)
    # Let the pods' first status changes settle (kwok), then watch a quiet minute.
    cluster.wait_for(
        "the replicas to be Ready",
        lambda: (
            (d := get(cluster, "deployment", "quiet", "-n", namespace))
            and (d.get("status") or {}).get("readyReplicas") == d["spec"]["replicas"]
        ),
        timeout=WAIT_S,
    )
    time.sleep(5)
    before = versions(cluster, namespace)
    time.sleep(QUIET_S)
    after = versions(cluster, namespace)
    changed = {
        key: (before.get(key), after.get(key))
        for key in before.keys() | after.keys()
        if before.get(key) != after.get(key)
    }
    assert not changed, f"written during a quiet minute (kind, name): (before, after): {changed}"
    cluster.kubectl("delete", "node", f"gpu-{namespace}", "--wait=false")


def test_arm_throttling_is_retried_after_its_retry_after(cluster, cluster_arm, aks, simulator, namespace):
    cluster_arm.throttle(count=1, retry_after=3)
    doc = yaml.safe_load(EXAMPLE.read_text())
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(doc))
    machine = cluster.wait_for(
        "a Machine", lambda: (items(cluster, "machines", "-n", namespace) or [None])[0], timeout=WAIT_S
    )
    pool = machine["metadata"]["name"]
    cluster.wait_for(
        f"the pool PUT for {pool} after the throttled one", lambda: cluster_arm.calls("PUT", pool), timeout=WAIT_S
    )
    assert not cluster_arm.state.failures, "ARM never throttled: the test did not test the retry"
    simulator.provision(pool)
    wait_condition(cluster, namespace, "workspace", doc["metadata"]["name"], "ResourceReady")


def test_an_unreachable_hook_changes_nothing_and_leaves_a_sync_error_event(cluster, byo, namespace):
    byo_workspace(cluster, namespace, "lonely")
    before = versions(cluster, namespace)
    byo.hooks.kill()
    try:
        cluster.kubectl("annotate", "workspace", "lonely", "-n", namespace, "touched=1")
        events = cluster.wait_for(
            "a SyncError event on the Workspace",
            lambda: sync_errors(cluster, namespace, "lonely"),
            timeout=WAIT_S,
        )
        assert events[0]["type"] == "Warning", events[0]
        after = versions(cluster, namespace)
        children = {k: v for k, v in before.items() if k[0] != "Workspace"}
        assert {k: after.get(k) for k in children} == children, "a child changed while the hook was unreachable"
        described = cluster.kubectl("describe", "workspace", "lonely", "-n", namespace).stdout
        assert "SyncError" in described, described
    finally:
        byo.hooks.start()
    wait_condition(cluster, namespace, "workspace", "lonely", "WorkspaceReady")
    cluster.kubectl("delete", "node", f"gpu-{namespace}", "--wait=false")


def test_a_frozen_hook_server_times_out_and_nothing_is_deleted(cluster, byo, namespace):
    """A hook server that accepts connections but does not answer (stopped, overloaded, restarting): each
    of Metacontroller's calls ends in its client timeout (the webhook's 10 s), which must change nothing;
    once the hooks answer again the Workspace converges with the same children."""
    import os
    import signal

    byo_workspace(cluster, namespace, "frozen")
    before = {k: v for k, v in versions(cluster, namespace).items() if k[0] != "Workspace"}
    group = byo.hooks.process.proc.pid
    os.killpg(group, signal.SIGSTOP)
    try:
        cluster.kubectl("annotate", "workspace", "frozen", "-n", namespace, "touched=1")
        cluster.wait_for(
            "a SyncError event naming the client timeout",
            lambda: [
                e
                for e in sync_errors(cluster, namespace, "frozen")
                if "Client.Timeout" in e["message"] or "deadline" in e["message"]
            ],
            timeout=WAIT_S,
        )
        after = versions(cluster, namespace)
        assert {k: after.get(k) for k in before} == before, "a child changed while the hook server was frozen"
    finally:
        os.killpg(group, signal.SIGCONT)
    wait_condition(cluster, namespace, "workspace", "frozen", "WorkspaceReady")
    after = versions(cluster, namespace)
    assert set(before) <= set(after), "a child was deleted after the hook server came back"
    cluster.kubectl("delete", "node", f"gpu-{namespace}", "--wait=false")
