"""Live adapters on the real control plane: editing a serving Workspace's adapters changes its
desired-set ConfigMap and its fetch Jobs, never the Deployment's pod template (no rollout: same generation,
same pods), and status.adapters follows the fetch Jobs and the replicas' reports.

kwok runs no containers: the fetch Job's pod "completes" by kwok's default stage, and the agent's report
(the gateway patching its own pod's kaito.sh/adapters annotation) is written here with kubectl, as the
agent would write it."""

from __future__ import annotations

import json

import yaml
from observe import WAIT_S, condition, get, items, wait_condition
from operator_stack import REPO, gpu_node
from workspace_support import request

from hooks.settings import Settings
from hooks.workspace.children import live_adapters
from hooks.workspace.sync import sync

DOLLY = "myregistry.azurecr.io/adapters/phi-3-dolly:0.0.1"


def desired_set(cluster, namespace: str, name: str) -> dict:
    cm = get(cluster, "configmap", f"{name}-adapters", "-n", namespace)
    assert cm is not None, "no desired-set ConfigMap"
    return json.loads(cm["data"]["adapters.json"])


def replica_pods(cluster, namespace: str, name: str) -> list[dict]:
    return [
        p
        for p in items(cluster, "pods", "-n", namespace, "-l", f"kaito.sh/workspace={name}")
        if not p["metadata"].get("deletionTimestamp")
    ]


def adapter_state(cluster, namespace: str, name: str, adapter: str) -> dict:
    ws = get(cluster, "workspace", name, "-n", namespace) or {}
    return next((a for a in (ws.get("status") or {}).get("adapters") or [] if a["name"] == adapter), {})


def patch_workspace(cluster, namespace: str, name: str, patch_type: str, patch) -> None:
    """`kubectl patch workspace` with a merge or JSON patch, as a user changes a Workspace."""
    cluster.kubectl("patch", "workspace", name, "-n", namespace, "--type", patch_type, "-p", json.dumps(patch))


def test_editing_adapters_changes_the_desired_set_and_fetch_jobs_not_the_pods(cluster, byo, namespace):
    # Starts as test_operator_byo does on purpose: both put the README's phi-3 example on labelled nodes.
    selector = {"apps": f"live-{namespace}"}
    doc = yaml.safe_load((REPO / "examples" / "inference-phi-3.yaml").read_text())
    doc["resource"]["labelSelector"] = {"matchLabels": selector}
    doc["resource"]["count"] = 1
    name = doc["metadata"]["name"]
    node = gpu_node(f"live-{namespace}", selector, gpus=1)
    node_name = node["metadata"]["name"]
    try:
        cluster.kubectl("apply", "-f", "-", input=json.dumps(node))
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(doc))
        wait_condition(cluster, namespace, "workspace", name, "WorkspaceReady")
        before = get(cluster, "deployment", name, "-n", namespace)
        pods_before = sorted(p["metadata"]["name"] for p in replica_pods(cluster, namespace, name))
        assert desired_set(cluster, namespace, name)["adapters"] == []
        assert condition(get(cluster, "workspace", name, "-n", namespace), "AdaptersReady")["status"] == "True"

        adapters = [{"source": {"name": "phi-3-dolly", "image": DOLLY}, "strength": "0.5"}]
        patch = {"inference": {**doc["inference"], "adapters": adapters}}
        cluster.kubectl("patch", "workspace", name, "-n", namespace, "--type", "merge", "-p", json.dumps(patch))
        cluster.wait_for(
            "the desired set names phi-3-dolly",
            lambda: [a["name"] for a in desired_set(cluster, namespace, name)["adapters"]] == ["phi-3-dolly"],
            timeout=WAIT_S,
        )
        key = desired_set(cluster, namespace, name)["adapters"][0]["key"]
        jobs = cluster.wait_for(
            "a fetch Job for phi-3-dolly",
            lambda: items(
                cluster, "jobs", "-n", namespace, "-l", f"kaito.sh/adapter-fetch={name},kaito.sh/adapter-key={key}"
            ),
            timeout=WAIT_S,
        )
        assert [live_adapters.pinned_node(j["spec"]["template"]["spec"]) for j in jobs] == [node_name]
        assert [c["image"] for c in jobs[0]["spec"]["template"]["spec"]["initContainers"] if c["name"] == "copy"] == [
            DOLLY
        ]

        # A re-weight changes the set, not the Jobs.
        adapters[0]["strength"] = "0.9"
        patch_workspace(cluster, namespace, name, "merge", {"inference": {**doc["inference"], "adapters": adapters}})
        cluster.wait_for(
            "the desired set has strength 0.9",
            lambda: desired_set(cluster, namespace, name)["adapters"][0]["strength"] == 0.9,
            timeout=WAIT_S,
        )
        assert [
            j["metadata"]["uid"] for j in items(cluster, "jobs", "-n", namespace, "-l", f"kaito.sh/adapter-key={key}")
        ] == [jobs[0]["metadata"]["uid"]]

        after = get(cluster, "deployment", name, "-n", namespace)
        assert after["metadata"]["generation"] == before["metadata"]["generation"], "the Deployment's spec changed"
        assert after["spec"]["template"] == before["spec"]["template"], "the pod template changed: a rollout"
        assert sorted(p["metadata"]["name"] for p in replica_pods(cluster, namespace, name)) == pods_before

        # The files are on the node (kwok completes the fetch pod): the adapter waits for the replica's report.
        cluster.wait_for(
            "phi-3-dolly waits for the replicas once fetched",
            lambda: adapter_state(cluster, namespace, name, "phi-3-dolly").get("reason") == "WaitingForReplicas",
            timeout=WAIT_S,
        )
        ws = get(cluster, "workspace", name, "-n", namespace)
        assert condition(ws, "AdaptersReady")["status"] == "False"
        assert condition(ws, "WorkspaceReady")["status"] == "True"

        revision = desired_set(cluster, namespace, name)["revision"]
        report = {"adapters": [{"name": "phi-3-dolly", "state": "Ready"}], "synced": True, "revision": revision}
        for pod in pods_before:
            cluster.kubectl(
                "annotate", "pod", pod, "-n", namespace, "--overwrite", f"kaito.sh/adapters={json.dumps(report)}"
            )
        ws = wait_condition(cluster, namespace, "workspace", name, "AdaptersReady")
        assert ws["status"]["adapters"] == [
            {"name": "phi-3-dolly", "state": "Ready", "reason": "Loaded", "message": "served by 1 of 1 replicas"}
        ]
        assert condition(ws, "WorkspaceReady")["status"] == "True"

        # Removing the adapter removes its Job (Metacontroller deletes the child no longer returned).
        patch_workspace(cluster, namespace, name, "json", [{"op": "remove", "path": "/inference/adapters"}])
        cluster.wait_for(
            "the fetch Job is deleted",
            lambda: (
                not [
                    j
                    for j in items(cluster, "jobs", "-n", namespace, "-l", f"kaito.sh/adapter-fetch={name}")
                    if not j["metadata"].get("deletionTimestamp")
                ]
            ),
            timeout=WAIT_S,
        )
        # Metacontroller deletes the children no longer returned before it updates the others: the desired
        # set follows right after, in the same sync.
        cluster.wait_for(
            "the desired set to be empty",
            lambda: desired_set(cluster, namespace, name)["adapters"] == [],
            timeout=WAIT_S,
        )
        final = get(cluster, "deployment", name, "-n", namespace)
        assert final["metadata"]["generation"] == before["metadata"]["generation"]
    finally:
        cluster.kubectl("delete", "node", node_name, "--ignore-not-found", "--wait=false")


POLICY = REPO / "metacontroller" / "adapter-report-policy.yaml"


def test_the_adapter_reporter_may_change_only_its_own_pods_report_annotation(cluster, namespace):
    """The pod's report identity on the real kube-apiserver (RBAC on): the rendered Role lets the token get
    and patch pods, and the ValidatingAdmissionPolicy narrows that to setting its own pod's
    kaito.sh/adapters annotation, nothing else."""
    cluster.kubectl("apply", "-f", str(POLICY))
    ws = yaml.safe_load((REPO / "examples" / "inference-phi-3-with-adapters.yaml").read_text())
    ws["metadata"] = {"name": "ws", "namespace": namespace, "uid": "u1", "generation": 1}
    children = sync(request(ws), Settings(), "2026-11-26T12:00:00Z")["children"]
    identity = [
        c
        for c in children
        if c["kind"] in ("ServiceAccount", "Role", "RoleBinding")
        and c["metadata"]["name"].startswith("kaito-adapter-report-")
    ]
    assert {c["kind"] for c in identity} == {"ServiceAccount", "Role", "RoleBinding"}, identity
    cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": identity}))
    reporter = identity[0]["metadata"]["name"]
    for pod in ("replica-a", "replica-b"):
        cluster.kubectl(
            "run",
            pod,
            "-n",
            namespace,
            "--image",
            "registry.k8s.io/pause:3.10",
            "--restart=Never",
            "--overrides",
            json.dumps({"spec": {"serviceAccountName": reporter}}),
        )
    token = cluster.kubectl(
        "create",
        "token",
        reporter,
        "-n",
        namespace,
        "--bound-object-kind",
        "Pod",
        "--bound-object-name",
        "replica-a",
        "--duration",
        "10m",
    ).stdout.strip()
    report = json.dumps({"adapters": [{"name": "fin", "state": "Ready"}], "synced": True})

    def as_reporter(*args: str):
        return cluster.kubectl(f"--token={token}", *args, "-n", namespace, check=False)

    # The policy becomes active a moment after it is created.
    cluster.wait_for(
        "the policy refuses another pod",
        lambda: (
            "bound to"
            in as_reporter("annotate", "pod", "replica-b", "--overwrite", f"kaito.sh/adapters={report}").stderr
        ),
        timeout=WAIT_S,
    )
    own = as_reporter("annotate", "pod", "replica-a", "--overwrite", f"kaito.sh/adapters={report}")
    assert own.returncode == 0, own.stderr
    pod = get(cluster, "pod", "replica-a", "-n", namespace)
    assert json.loads(pod["metadata"]["annotations"]["kaito.sh/adapters"])["adapters"][0]["state"] == "Ready"
    for change in (
        ["label", "pod", "replica-a", "x=y"],
        ["annotate", "pod", "replica-a", "other=1"],
        ["annotate", "pod", "replica-b", f"kaito.sh/adapters={report}", "--overwrite"],
    ):
        refused = as_reporter(*change)
        assert refused.returncode != 0 and "kaito-adapter-report" in refused.stderr, (change, refused.stderr)
    # RBAC: the Role grants get and patch on pods only.
    for refused in (["get", "secrets"], ["delete", "pod", "replica-b"], ["get", "pods", "-n", "kube-system"]):
        out = cluster.kubectl(
            f"--token={token}", *refused, *(["-n", namespace] if "-n" not in refused else []), check=False
        )
        assert out.returncode != 0 and "forbidden" in out.stderr.lower(), (refused, out.stderr)
    # Anyone else is not concerned by the policy.
    cluster.kubectl("label", "pod", "replica-a", "-n", namespace, "x=y")
