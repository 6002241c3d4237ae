"""KEDA for real on the local control plane: its operator and metrics adapter, built from
github.com/kedacore/keda/v2 (`make keda`, tests/cluster/go/keda/), run as processes on loopback.

The operator runs without certificate rotation, webhook or APIService patching (no in-cluster Service
exists for them); its metrics gRPC server and the adapter's client share one self-signed certificate.
The adapter is served to the HPA controller as external.metrics.k8s.io through the apiserver's
aggregation layer. Both skip, naming `make keda`, where the build is absent.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from controlplane import Process
from loopback_support import free_port
from observe import condition, get
from tls_support import self_signed

KEDA_VERSION = "v2.21.1"
KEDA_DIR = Path(os.environ.get("KAITO_KEDA_DIR", Path.home() / ".cache" / "kaito-sglang" / f"keda-{KEDA_VERSION}"))
OPERATOR = KEDA_DIR / "bin" / "operator"
ADAPTER = KEDA_DIR / "bin" / "adapter"
CRDS = KEDA_DIR / "gomod" / "github.com" / "kedacore" / "keda" / f"v2@{KEDA_VERSION}" / "config" / "crd" / "bases"
EXTERNAL_METRICS = "v1beta1.external.metrics.k8s.io"
BUILD_HINT = "build it with `make keda` (about 30 minutes cold; tests/cluster/go/keda/)"


def write_self_signed(directory: Path) -> None:
    """tls.crt, tls.key and ca.crt for the operator's metrics gRPC server (cert rotation is off here)."""
    cert_pem, key_pem = self_signed("keda-operator", ca=True)
    (directory / "tls.crt").write_bytes(cert_pem)
    (directory / "ca.crt").write_bytes(cert_pem)
    (directory / "tls.key").write_bytes(key_pem)


@dataclass
class Keda:
    operator: Process
    certs: Path  # tls.crt, tls.key, ca.crt: the operator's gRPC server and the adapter's client, one CA
    grpc_port: int
    env: dict[str, str]
    work: Path


def serving(process: Process, url: str, **kwargs) -> bool:
    if reason := process.exited():
        raise AssertionError(reason)
    try:
        return requests.get(url, timeout=2, **kwargs).ok
    except requests.RequestException:
        return False


def install_crds(cluster) -> None:
    for crd in sorted(CRDS.glob("*.yaml")):
        cluster.kubectl("apply", "--server-side", "-f", str(crd))
    # Polled: `kubectl wait` fails at once on a CRD the apiserver has not yet given any condition.
    cluster.wait_for(
        "KEDA's CRDs Established",
        lambda: all(
            condition(get(cluster, "crd", crd), "Established").get("status") == "True"
            for crd in ("scaledobjects.keda.sh", "triggerauthentications.keda.sh")
        ),
        timeout=60,
    )


@contextmanager
def keda_operator(cluster, work: Path) -> Iterator[Keda]:
    """KEDA's CRDs installed and its operator running on loopback, watching every namespace."""
    if not OPERATOR.exists() or not CRDS.is_dir():
        pytest.skip(f"KEDA {KEDA_VERSION} is not built in {KEDA_DIR} (not part of build.sh): {BUILD_HINT}")
    install_crds(cluster)
    cluster.kubectl("create", "namespace", "keda", check=False)
    (work / "certs").mkdir()
    write_self_signed(work / "certs")
    probe, grpc_port = free_port(), free_port()
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
            f"--metrics-service-bind-address=127.0.0.1:{grpc_port}",
            f"--cert-dir={work / 'certs'}",
            "--enable-cert-rotation=false",
            "--enable-webhook-patching=false",
            "--enable-apiservice-patching=false",
            "--zap-log-level=info",
        ],
        work / "keda-operator.log",
        env=env,
    )
    try:
        cluster.wait_for(
            "KEDA's operator /readyz", lambda: serving(process, f"http://127.0.0.1:{probe}/readyz"), timeout=120
        )
        yield Keda(process, work / "certs", grpc_port, env, work)
    finally:
        process.stop()


def external_metrics_apiservice(port: int) -> list[dict]:
    """The adapter registered with the aggregation layer. The aggregator verifies the serving certificate
    against the name <service>.<namespace>.svc, which a process on loopback does not hold: the adapter's
    certificate is its own self-signed one and the APIService skips verification."""
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "keda-metrics-apiserver", "namespace": "keda"},
            "spec": {"type": "ExternalName", "externalName": "localhost", "ports": [{"name": "https", "port": port}]},
        },
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": EXTERNAL_METRICS},
            "spec": {
                "group": "external.metrics.k8s.io",
                "version": "v1beta1",
                "service": {"name": "keda-metrics-apiserver", "namespace": "keda", "port": port},
                "insecureSkipTLSVerify": True,
                "groupPriorityMinimum": 100,
                "versionPriority": 100,
            },
        },
    ]


@contextmanager
def keda_metrics_adapter(cluster, keda: Keda) -> Iterator[Process]:
    """KEDA's metrics adapter on loopback, served to the HPA controller as external.metrics.k8s.io."""
    if not ADAPTER.exists():
        pytest.skip(f"KEDA {KEDA_VERSION}'s metrics adapter is not built in {KEDA_DIR}: {BUILD_HINT}")
    port = free_port()
    process = Process(
        "keda-adapter",
        [
            str(ADAPTER),
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            # Also where its gRPC client finds tls.crt, tls.key and ca.crt for the operator's metrics service.
            f"--cert-dir={keda.certs}",
            f"--lister-kubeconfig={cluster.kubeconfig}",
            f"--authentication-kubeconfig={cluster.kubeconfig}",
            f"--authorization-kubeconfig={cluster.kubeconfig}",
            f"--metrics-service-address=localhost:{keda.grpc_port}",
            f"--port={free_port()}",
            "--zap-log-level=info",
        ],
        keda.work / "keda-adapter.log",
        env=keda.env,
    )
    registration = json.dumps({"apiVersion": "v1", "kind": "List", "items": external_metrics_apiservice(port)})
    try:
        cluster.wait_for(
            "KEDA's metrics adapter /readyz",
            lambda: serving(process, f"https://127.0.0.1:{port}/readyz", verify=False),
            timeout=120,
        )
        cluster.kubectl("apply", "-f", "-", input=registration)
        cluster.kubectl(
            "wait", "--for=condition=Available", f"apiservice/{EXTERNAL_METRICS}", "--timeout=60s", timeout=90
        )
        yield process
    finally:
        cluster.kubectl("delete", "-f", "-", "--ignore-not-found", input=registration, check=False)
        process.stop()
