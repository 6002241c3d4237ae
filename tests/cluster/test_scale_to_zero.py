"""Scale to zero on the real control plane: a Workspace at 0 holds no Machine and no pod; its front (a real
process on loopback, with the token of the ServiceAccount the hook created and the Role that allows only
`patch` on this Workspace's `workspaces/scale`) holds a request, patches the real apiserver's scale
subresource to 1; a Machine and one agent pool PUT appear on the fake ARM, a kwok node joins, the pod is
Ready; the held request is answered by a real model server on loopback (the transformers runtime, standing
in for the pod kwok cannot run); after the idle period the front scales to 0 and the Machine's pool is
deleted."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest
import requests
from inference_support.launcher import ONE_NODE, transformers_launch
from observe import WAIT_S, get, items, printed_columns
from operator_stack import REPO
from scale_to_zero_support import scale_to_zero_workspace, stand_in_weights

pytestmark = [pytest.mark.scale_to_zero, pytest.mark.cluster]

NAME = "phi-zero"
SERVED = "phi-3-mini-4k-instruct"


def workspace(replicas: int) -> dict:
    return scale_to_zero_workspace(NAME, SERVED, replicas)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    return stand_in_weights(tmp_path_factory.mktemp("zero-weights"))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args: list[str], log) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", *args], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def spec_replicas(cluster, namespace: str) -> int:
    scale = get(cluster, "workspace", NAME, "-n", namespace, "--subresource=scale") or {}
    return (scale.get("spec") or {}).get("replicas") or 0


def can_i(cluster, namespace: str, *what: str) -> bool:
    out = cluster.kubectl(
        "auth", "can-i", *what, "-n", namespace, "--as", f"system:serviceaccount:{namespace}:{NAME}-front", check=False
    )
    return out.stdout.strip() == "yes"


def test_a_request_wakes_a_workspace_at_zero_and_idle_releases_the_pool(
    cluster, cluster_arm, aks, simulator, namespace, model_dir, tmp_path
):
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(workspace(0)))
    ws = cluster.wait_for(
        "status.scaleToZero ScaledToZero",
        lambda: (
            (w := get(cluster, "workspace", NAME, "-n", namespace))
            and ((w.get("status") or {}).get("scaleToZero") or {}).get("state") == "ScaledToZero"
            and w
        ),
        timeout=WAIT_S,
    )
    assert items(cluster, "machines", "-n", namespace) == []
    assert printed_columns(cluster, namespace, "workspace", NAME)["SCALE"] == "ScaledToZero"
    front_sa = cluster.wait_for(
        "the front's ServiceAccount", lambda: get(cluster, "serviceaccount", f"{NAME}-front", "-n", namespace)
    )
    assert front_sa and ws["status"]["replicas"] == 0
    cluster.wait_for("the front's RoleBinding", lambda: get(cluster, "rolebinding", f"{NAME}-front", "-n", namespace))
    # The front's identity, checked by the real authorizer: patch this Workspace's scale, nothing else.
    assert can_i(cluster, namespace, "patch", f"workspaces.kaito.sh/{NAME}", "--subresource=scale")
    assert not can_i(cluster, namespace, "get", f"workspaces.kaito.sh/{NAME}", "--subresource=scale")
    assert not can_i(cluster, namespace, "patch", f"workspaces.kaito.sh/{NAME}")
    assert not can_i(cluster, namespace, "patch", "workspaces.kaito.sh/other", "--subresource=scale")
    assert not can_i(cluster, namespace, "list", "pods")

    token = tmp_path / "token"
    token.write_text(cluster.kubectl("create", "token", f"{NAME}-front", "-n", namespace).stdout.strip())
    model_port, runtime_port, front_port = free_port(), free_port(), free_port()
    log = open(tmp_path / "processes.log", "wb")  # noqa: SIM115 - the processes write it until they stop
    front = start(
        [
            "inference.wake_front",
            "--served-model-name",
            SERVED,
            "--upstream",
            f"http://127.0.0.1:{model_port}",
            "--host",
            "127.0.0.1",
            "--port",
            str(front_port),
            "--workspace",
            f"{namespace}/{NAME}",
            "--idle-seconds",
            "20",
            "--max-wait-seconds",
            "300",
            "--apiserver",
            cluster.server,
            "--ca-file",
            str(cluster.ca),
            "--token-file",
            str(token),
        ],
        log,
    )
    model = None
    try:
        url = f"http://127.0.0.1:{front_port}"
        cluster.wait_for("the front", lambda: requests.get(f"{url}/healthz", timeout=2).ok, timeout=30)
        answer: dict = {}

        def ask():
            body = {"model": SERVED, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}
            r = requests.post(f"{url}/v1/chat/completions", json=body, timeout=400)
            answer["status"], answer["body"] = r.status_code, r.text

        client = threading.Thread(target=ask)
        client.start()
        cluster.wait_for("the scale subresource at 1", lambda: spec_replicas(cluster, namespace) == 1, timeout=30)
        (machine,) = cluster.wait_for(
            "one Machine", lambda: items(cluster, "machines", "-n", namespace) or None, timeout=WAIT_S
        )
        pool = machine["metadata"]["name"]
        cluster.wait_for(f"the agent pool PUT for {pool}", lambda: cluster_arm.calls("PUT", pool), timeout=WAIT_S)
        simulator.provision(pool)  # AKS: the pool succeeds, its node joins (kwok)
        cluster.wait_for(
            "the replica pod Ready",
            lambda: (
                ((get(cluster, "deployment", NAME, "-n", namespace) or {}).get("status") or {}).get("readyReplicas")
                == 1
            ),
            timeout=WAIT_S,
        )
        assert not answer  # still held: nothing serves yet
        (tmp_path / "adapters").mkdir()
        model = start(
            transformers_launch(
                SERVED, model_dir, tmp_path / "adapters", model_port, runtime_port, tmp_path / "work", *ONE_NODE
            ),
            log,
        )
        client.join(300)
        assert answer.get("status") == 200, answer
        assert json.loads(answer["body"])["choices"][0]["message"]["content"]
        assert len(cluster_arm.calls("PUT", pool)) == 1

        # Idle: the front scales the Workspace to 0; the pod goes, then the Machine and its agent pool.
        cluster.wait_for("the idle front's scale to 0", lambda: spec_replicas(cluster, namespace) == 0, timeout=90)
        cluster.wait_for(
            "the Machine released", lambda: items(cluster, "machines", "-n", namespace) == [], timeout=WAIT_S
        )
        assert cluster_arm.calls("DELETE", pool)
        cluster.wait_for(
            "status ScaledToZero again",
            lambda: (
                ((get(cluster, "workspace", NAME, "-n", namespace) or {}).get("status") or {})
                .get("scaleToZero", {})
                .get("state")
                == "ScaledToZero"
            ),
            timeout=WAIT_S,
        )
    finally:
        stop(front)
        stop(model)
        log.close()
