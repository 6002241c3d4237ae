"""The router learns a Workspace's replicas from the real Kubernetes API: only Ready pods join, a deleted pod
leaves, and a replica that stops answering its health check gets no traffic.

The real sglang-router runs with the argv the hook renders (pod discovery by the label kaito.sh/workspace=<ws>
in the Workspace's namespace, on the replicas' gateway port), talking to the real kube-apiserver (RBAC on)
as the ServiceAccount the hook renders for it, bound to the rendered Role: a token of that account in a
kubeconfig instead of a pod's in-cluster credentials. The replica pods are Pod objects whose status this test
writes as a kubelet would (there is no kubelet here, and kwok's pod IPs lead nowhere): Running, Ready, with pod
IPs 127.0.0.2 and 127.0.0.3, where two real replica gateways listen in front of a stub SGLang (the GPU engine).

Found here: sglang-router 0.3.2 adds a pod only once it is Ready and removes it when it is deleted, but it keeps
a pod that merely turns not Ready; such a replica leaves the rotation through the router's own health check
(the same /health the readiness probe asks: every 5 s, 2 failures, as the hook configures it).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import requests
from inference_support.stub_sglang import StubSGLang, free_port
from workspace_support import REPO, find, request, workspace

from hooks.settings import Settings
from hooks.workspace.sync import sync

pytest.importorskip("sglang_router", reason="sglang-router (test extra) is not installed")

PRESET = "phi-3-mini-4k-instruct"
REPLICA_IPS = ("127.0.0.2", "127.0.0.3")


def rendered_children(namespace: str) -> list[dict]:
    ws = workspace(
        resource={"instanceType": "Standard_NC24ads_A100_v4", "count": 2, "labelSelector": {"matchLabels": {"a": "b"}}}
    )
    ws["metadata"]["namespace"] = namespace
    return sync(request(ws), Settings(), "2026-11-26T12:00:00Z")["children"]


def router_identity(cluster, namespace: str) -> Path:
    """The router's ServiceAccount, Role and RoleBinding as rendered, applied; a kubeconfig with a token
    of that ServiceAccount (what its pod would mount)."""
    children = rendered_children(namespace)
    deployment = find(children, "Deployment", "ws1-router")
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    identity = [find(children, kind, account) for kind in ("ServiceAccount", "Role", "RoleBinding")]
    cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": identity}))
    return cluster.service_account_kubeconfig(namespace, account)


def rendered_router_args(namespace: str, port: int) -> list[str]:
    router = find(rendered_children(namespace), "Deployment", "ws1-router")["spec"]["template"]["spec"]["containers"][1]
    args = list(router["args"])
    for flag, value in (
        ("--port", str(free_port())),
        ("--prometheus-host", "127.0.0.1"),
        ("--prometheus-port", str(free_port())),
        ("--service-discovery-port", str(port)),
    ):
        args[args.index(flag) + 1] = value
    return args


def replica_pod(cluster, namespace: str, name: str, ip: str, ready: bool) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"kaito.sh/workspace": "ws1"}},
        # A node no kwok manages: nothing but this test writes the pod's status.
        "spec": {"nodeName": "no-kubelet", "containers": [{"name": "ws1", "image": "runtime"}]},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(pod))
    set_ready(cluster, namespace, name, ip, ready)


def set_ready(cluster, namespace: str, name: str, ip: str, ready: bool) -> None:
    status = {
        "status": {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        }
    }
    cluster.kubectl(
        "patch", "pod", name, "-n", namespace, "--subresource=status", "--type=merge", "-p", json.dumps(status)
    )


def workers(router_url: str, healthy_only: bool = True) -> set[str]:
    try:
        body = requests.get(f"{router_url}/workers", timeout=5).json()
    except (requests.RequestException, ValueError):
        return set()
    return {w["url"] for w in body.get("workers", []) if w.get("is_healthy") or not healthy_only}


def test_router_follows_the_replica_pods(cluster, namespace):
    stub = StubSGLang(PRESET).start()
    port = free_port()
    started = []
    try:
        for i, ip in enumerate(REPLICA_IPS):
            name = f"replica-gateway-{namespace}-{i}"
            cluster.spawn(
                name,
                [
                    sys.executable,
                    "-m",
                    "inference.gateway",
                    "--served-model-name",
                    PRESET,
                    "--upstream",
                    stub.url,
                    "--host",
                    ip,
                    "--port",
                    str(port),
                ],
                cwd=REPO,
            )
            started.append(name)
        args = rendered_router_args(namespace, port)
        router_url = f"http://127.0.0.1:{args[args.index('--port') + 1]}"
        name = f"router-{namespace}"
        cluster.spawn(
            name,
            [sys.executable, "-m", "sglang_router.launch_router", *args],
            env={**os.environ, "KUBECONFIG": str(router_identity(cluster, namespace))},
        )
        started.append(name)

        replica_pod(cluster, namespace, "ws1-a", REPLICA_IPS[0], ready=True)
        replica_pod(cluster, namespace, "ws1-b", REPLICA_IPS[1], ready=False)
        urls = [f"http://{ip}:{port}" for ip in REPLICA_IPS]
        cluster.wait_for(
            "the router to add the Ready replica only",
            lambda: workers(router_url, healthy_only=False) == {urls[0]},
            timeout=120,
        )

        set_ready(cluster, namespace, "ws1-b", REPLICA_IPS[1], ready=True)
        cluster.wait_for(
            "the router to add the replica that became Ready", lambda: workers(router_url) == set(urls), timeout=120
        )
        r = requests.post(
            f"{router_url}/v1/chat/completions",
            timeout=30,
            json={"model": PRESET, "messages": [{"role": "user", "content": "hi"}]},
        )
        assert r.status_code == 200, r.text

        # Replica a's server goes away (its readiness probe would fail too): the router's health check stops its traffic.
        cluster.processes.pop(started.pop(0)).stop()
        set_ready(cluster, namespace, "ws1-a", REPLICA_IPS[0], ready=False)
        cluster.wait_for(
            "the router to stop routing to the replica that stopped answering",
            lambda: workers(router_url) == {urls[1]},
            timeout=120,
        )
        for _ in range(4):
            r = requests.post(
                f"{router_url}/v1/chat/completions",
                timeout=30,
                json={"model": PRESET, "messages": [{"role": "user", "content": "hi"}]},
            )
            assert r.status_code == 200, r.text
        cluster.kubectl("delete", "pod", "ws1-b", "-n", namespace, "--wait=false")
        cluster.wait_for(
            "the router to remove the deleted replica",
            lambda: urls[1] not in workers(router_url, healthy_only=False),
            timeout=120,
        )
    finally:
        for name in started:
            cluster.processes.pop(name).stop()
        stub.stop()


def test_the_router_identity_reads_pods_of_its_own_namespace_only(cluster, namespace):
    """RBAC on the real authorizer: the rendered Role lets the router's token list pods in its Workspace's
    namespace, and nothing grants it more, so the same token is refused in another namespace and for any
    other verb or kind."""
    kubeconfig = router_identity(cluster, namespace)

    def as_router(*args: str):
        return cluster.kubectl(f"--kubeconfig={kubeconfig}", *args, check=False)

    assert as_router("get", "pods", "-n", namespace).returncode == 0
    for refused in (
        ("get", "pods", "-n", "kube-system"),
        ("get", "pods", "-A"),
        ("get", "secrets", "-n", namespace),
        ("delete", "pod", "ws1-a", "-n", namespace),
        ("get", "workspaces", "-n", namespace),
    ):
        out = as_router(*refused)
        assert out.returncode != 0 and "forbidden" in out.stderr.lower(), (refused, out.stdout, out.stderr)
        assert "system:serviceaccount:" + namespace in out.stderr, out.stderr
