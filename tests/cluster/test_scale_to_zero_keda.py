"""KEDA for real on the local control plane: the operator built from github.com/kedacore/keda/v2 v2.21.1 (its
Go module, as the README's scale-to-zero section says how) drives a Workspace through its scale subresource from
a ScaledObject with minReplicaCount 0 and a metrics-api trigger on the front's GET /queue: 0 -> 1 when a
request is held, back to 0 after the cooldown. The front here has no permission of its own (a token of a
ServiceAccount without the Role), so only KEDA can have woken the Workspace; its held request gives up
after its wait limit (no model server runs here) and KEDA scales back to 0. Skipped where the KEDA build is
absent (it is not part of tests/cluster/build.sh)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests
from controlplane import Process
from loopback_support import free_port
from observe import WAIT_S, get
from operator_stack import REPO
from tls_support import self_signed

pytestmark = [pytest.mark.scale_to_zero, pytest.mark.cluster]

KEDA_VERSION = "v2.21.1"
KEDA_DIR = Path(os.environ.get("KAITO_KEDA_DIR", Path.home() / ".cache" / "kaito-sglang" / f"keda-{KEDA_VERSION}"))
OPERATOR = KEDA_DIR / "bin" / "operator"
CRDS = KEDA_DIR / "gomod" / "github.com" / "kedacore" / "keda" / f"v2@{KEDA_VERSION}" / "config" / "crd" / "bases"
NAME = "phi-keda"


def write_self_signed(directory: Path) -> None:
    """tls.crt, tls.key and ca.crt for the operator's metrics gRPC server (cert rotation is off here)."""
    cert_pem, key_pem = self_signed("keda-operator", ca=True)
    (directory / "tls.crt").write_bytes(cert_pem)
    (directory / "ca.crt").write_bytes(cert_pem)
    (directory / "tls.key").write_bytes(key_pem)


@pytest.fixture(scope="module")
def keda(cluster, tmp_path_factory):
    if not OPERATOR.exists() or not CRDS.is_dir():
        pytest.skip(
            f"KEDA {KEDA_VERSION} is not built in {KEDA_DIR} (not part of build.sh): build it from "
            "tests/cluster/go/keda/ with GOTOOLCHAIN=go1.27.4 go build -o <dir>/bin/ "
            "github.com/kedacore/keda/v2/cmd/operator"
        )
    for crd in sorted(CRDS.glob("*.yaml")):
        cluster.kubectl("apply", "--server-side", "-f", str(crd))
    cluster.kubectl("wait", "--for=condition=Established", "crd/scaledobjects.keda.sh", "--timeout=60s")
    cluster.kubectl("create", "namespace", "keda", check=False)
    work = tmp_path_factory.mktemp("keda")
    (work / "certs").mkdir()
    write_self_signed(work / "certs")
    probe = free_port()
    env = {
        **os.environ,
        "KUBECONFIG": str(cluster.kubeconfig),
        "WATCH_NAMESPACE": "",
        "POD_NAMESPACE": "keda",
        "KEDA_CLUSTER_OBJECT_NAMESPACE": "keda",
    }
    process = Process(
        "keda-operator",
        [
            str(OPERATOR),
            f"--metrics-bind-address=127.0.0.1:{free_port()}",
            f"--health-probe-bind-address=127.0.0.1:{probe}",
            f"--metrics-service-bind-address=127.0.0.1:{free_port()}",
            f"--cert-dir={work / 'certs'}",
            "--enable-cert-rotation=false",
            "--enable-webhook-patching=false",
            "--enable-apiservice-patching=false",
            "--zap-log-level=info",
        ],
        work / "keda-operator.log",
        env=env,
    )

    def healthy() -> bool:
        if process.exited():
            raise AssertionError(process.exited())
        try:
            return requests.get(f"http://127.0.0.1:{probe}/readyz", timeout=2).ok
        except requests.RequestException:
            return False

    try:
        cluster.wait_for("KEDA's operator /readyz", healthy, timeout=120)
        yield process
    finally:
        process.stop()


def spec_replicas(cluster, namespace: str) -> int:
    scale = get(cluster, "workspace", NAME, "-n", namespace, "--subresource=scale") or {}
    return (scale.get("spec") or {}).get("replicas") or 0


def test_a_scaled_object_on_the_fronts_queue_wakes_the_workspace_and_scales_it_back_to_zero(
    cluster, aks, keda, namespace, tmp_path
):
    doc = {
        "apiVersion": "kaito.sh/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": NAME, "annotations": {"kaito.sh/scale-to-zero-after": "15m"}},
        "spec": {"replicas": 0},
        "resource": {"instanceType": "Standard_NC24ads_A100_v4", "labelSelector": {"matchLabels": {"apps": NAME}}},
        "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}},
    }
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(doc))
    # The front, without the scale permission (the namespace's default ServiceAccount): only KEDA can wake it.
    token = tmp_path / "token"
    token.write_text(cluster.kubectl("create", "token", "default", "-n", namespace).stdout.strip())
    front_port = free_port()
    log = open(tmp_path / "front.log", "wb")  # noqa: SIM115 - the front writes it until it stops
    front = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "inference.wake_front",
            "--served-model-name",
            "phi-3-mini-4k-instruct",
            "--upstream",
            "http://127.0.0.1:9",
            "--host",
            "127.0.0.1",
            "--port",
            str(front_port),
            "--workspace",
            f"{namespace}/{NAME}",
            "--idle-seconds",
            "3600",
            "--max-wait-seconds",
            "40",
            "--apiserver",
            cluster.server,
            "--ca-file",
            str(cluster.ca),
            "--token-file",
            str(token),
        ],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{front_port}"
    try:
        cluster.wait_for("the front", lambda: requests.get(f"{url}/healthz", timeout=2).ok, timeout=30)
        scaled_object = {
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "ScaledObject",
            "metadata": {"name": NAME},
            "spec": {
                "scaleTargetRef": {"apiVersion": "kaito.sh/v1alpha1", "kind": "Workspace", "name": NAME},
                "minReplicaCount": 0,
                "maxReplicaCount": 3,
                "pollingInterval": 2,
                "cooldownPeriod": 10,
                "triggers": [
                    {
                        "type": "metrics-api",
                        "metricType": "AverageValue",
                        "metadata": {
                            "url": f"{url}/queue",
                            "format": "json",
                            "valueLocation": "demand",
                            "targetValue": "8",
                            "activationTargetValue": "0",
                        },
                    }
                ],
            },
        }
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(scaled_object))
        assert spec_replicas(cluster, namespace) == 0
        held: dict = {}

        def ask():
            body = {"model": "phi-3-mini-4k-instruct", "messages": [{"role": "user", "content": "hi"}]}
            held["status"] = requests.post(f"{url}/v1/chat/completions", json=body, timeout=60).status_code

        client = threading.Thread(target=ask, daemon=True)
        client.start()
        cluster.wait_for(
            "KEDA scales the Workspace to 1", lambda: spec_replicas(cluster, namespace) == 1, timeout=WAIT_S
        )
        report = requests.get(f"{url}/queue", timeout=5).json()
        assert report["queued"] == 1 and report["lastAsk"].startswith("error"), report  # the front could not
        so = get(cluster, "scaledobject", NAME, "-n", namespace)
        assert any(c["type"] == "Active" and c["status"] == "True" for c in so["status"]["conditions"]), so["status"]
        client.join(60)  # nothing serves here: the held request gives up after its 40 s, demand falls to 0
        assert held.get("status") == 503
        cluster.wait_for(
            "KEDA scales the Workspace back to 0", lambda: spec_replicas(cluster, namespace) == 0, timeout=WAIT_S
        )
    finally:
        if front.poll() is None:
            front.kill()
        log.close()
        cluster.kubectl("delete", "scaledobject", NAME, "-n", namespace, "--ignore-not-found", check=False)
