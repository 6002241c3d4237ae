"""KEDA for real on the local control plane: the operator and the metrics adapter built from
github.com/kedacore/keda/v2 v2.21.1 (its Go module, as the README's scale-to-zero section says how) drive a
Workspace through its scale subresource from a ScaledObject with minReplicaCount 0 and a metrics-api trigger
on the front's GET /queue (its `demand`: held plus in-flight requests).

- 0 -> 1 -> 0: the operator alone. The front here has no permission of its own (a token of a ServiceAccount
  without the Role), so only KEDA can have woken the Workspace; its held request gives up after its wait
  limit (no model server runs) and KEDA scales back to 0.
- 0 -> 1 -> 2 -> 0: KEDA's HPA. Above 1 replica KEDA only sets up a HorizontalPodAutoscaler; the
  controller-manager's HPA controller reads the demand from external.metrics.k8s.io, which the apiserver's
  aggregation layer proxies to the metrics adapter on loopback (an APIService on an ExternalName Service
  `localhost`), which asks the operator over mutual-TLS gRPC. A stand-in model server on loopback holds
  every request until the test lets the load go.

The operator and the adapter are the `keda` and `keda_metrics_adapter` fixtures (conftest.py,
keda_support.py). Skipped where the KEDA build is absent (it is not part of tests/cluster/build.sh)."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from loopback_support import free_port, send_json
from observe import WAIT_S, condition, get
from operator_stack import REPO
from scale_to_zero_support import scale_to_zero_workspace, wake_front_argv

pytestmark = [pytest.mark.scale_to_zero, pytest.mark.cluster]

NAME = "phi-keda"
MODEL = "phi-3-mini-4k-instruct"


def spec_replicas(cluster, namespace: str) -> int:
    scale = get(cluster, "workspace", NAME, "-n", namespace, "--subresource=scale") or {}
    return (scale.get("spec") or {}).get("replicas") or 0


def apply_workspace(cluster, namespace: str, replicas: int) -> None:
    doc = scale_to_zero_workspace(NAME, MODEL, replicas)
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(doc))


def start_front(cluster, namespace: str, tmp_path: Path, upstream: str, max_wait_s: float):
    """The wake front as a process on loopback, without the scale permission (a token of the namespace's
    default ServiceAccount): only KEDA can change the Workspace's replicas. Returns (process, url, log)."""
    token = tmp_path / "token"
    token.write_text(cluster.kubectl("create", "token", "default", "-n", namespace).stdout.strip())
    port = free_port()
    log = open(tmp_path / "front.log", "wb")  # noqa: SIM115 - the front writes it until it stops
    flags = ["--idle-seconds", "3600", "--max-wait-seconds", str(max_wait_s), "--ca-file", str(cluster.ca)]
    front = subprocess.Popen(
        wake_front_argv(MODEL, upstream, port, f"{namespace}/{NAME}", cluster.server, token, *flags),
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    cluster.wait_for("the front", lambda: requests.get(f"{url}/healthz", timeout=2).ok, timeout=30)
    return front, url, log


def scaled_object(front_url: str, target: int, scale_down_window_s: int | None = None) -> dict:
    spec: dict = {
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
                    "url": f"{front_url}/queue",
                    "format": "json",
                    "valueLocation": "demand",
                    "targetValue": str(target),
                    "activationTargetValue": "0",
                },
            }
        ],
    }
    if scale_down_window_s is not None:
        spec["advanced"] = {
            "horizontalPodAutoscalerConfig": {
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": scale_down_window_s}}
            }
        }
    return {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": NAME}, "spec": spec}


def ask(url: str, answers: list, timeout: float) -> threading.Thread:
    def run():
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
        answers.append(requests.post(f"{url}/v1/chat/completions", json=body, timeout=timeout).status_code)

    client = threading.Thread(target=run, daemon=True)
    client.start()
    return client


def test_a_scaled_object_on_the_fronts_queue_wakes_the_workspace_and_scales_it_back_to_zero(
    cluster, aks, keda, namespace, tmp_path
):
    apply_workspace(cluster, namespace, 0)
    front, url, log = start_front(cluster, namespace, tmp_path, "http://127.0.0.1:9", max_wait_s=40)
    try:
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(scaled_object(url, target=8)))
        assert spec_replicas(cluster, namespace) == 0
        answers: list = []
        client = ask(url, answers, timeout=60)
        cluster.wait_for(
            "KEDA scales the Workspace to 1", lambda: spec_replicas(cluster, namespace) == 1, timeout=WAIT_S
        )
        report = requests.get(f"{url}/queue", timeout=5).json()
        assert report["queued"] == 1 and report["lastAsk"].startswith("error"), report  # the front could not
        # KEDA writes the Active condition after it has patched the scale subresource, so it may lag by a moment.
        cluster.wait_for(
            "KEDA reports the ScaledObject Active",
            lambda: condition(get(cluster, "scaledobject", NAME, "-n", namespace), "Active").get("status") == "True",
            timeout=30,
        )
        client.join(60)  # nothing serves here: the held request gives up after its 40 s, demand falls to 0
        assert answers == [503]
        cluster.wait_for(
            "KEDA scales the Workspace back to 0", lambda: spec_replicas(cluster, namespace) == 0, timeout=WAIT_S
        )
    finally:
        if front.poll() is None:
            front.kill()
        log.close()
        cluster.kubectl("delete", "scaledobject", NAME, "-n", namespace, "--ignore-not-found", check=False)


class SlowModel:
    """A stand-in model server on loopback: healthy once `up` is set (the replica is Ready), and it holds
    every chat request until `release` is set, so held-then-relayed requests stay in flight at the front."""

    def __init__(self):
        self.up, self.release = threading.Event(), threading.Event()
        model = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self._answer(200 if self.path == "/health" and model.up.is_set() else 404, {})

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                model.release.wait(300)
                message = {"role": "assistant", "content": "hello"}
                self._answer(200, {"object": "chat.completion", "model": MODEL, "choices": [{"message": message}]})

            def _answer(self, status: int, body: dict):
                send_json(self, status, body)

            def log_message(self, *_args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


class ReplicaLog:
    """spec.replicas of the Workspace's scale subresource, sampled every half second from a thread."""

    def __init__(self, cluster, namespace: str):
        self.cluster, self.namespace = cluster, namespace
        self.samples: list[tuple[float, int]] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.done.is_set():
            self.samples.append((time.monotonic(), spec_replicas(self.cluster, self.namespace)))
            self.done.wait(0.5)

    def reached(self, replicas: int, after: float = 0.0) -> float | None:
        """When spec.replicas was first seen at `replicas` (at or after monotonic time `after`), or None."""
        return next((t for t, n in list(self.samples) if n == replicas and t >= after), None)

    def path(self) -> list[int]:
        """The distinct values in order, e.g. [0, 1, 2, 1, 0]."""
        seen: list[int] = []
        for _t, n in list(self.samples):
            if not seen or seen[-1] != n:
                seen.append(n)
        return seen


LOAD = 6  # concurrent requests; with targetValue 4 per replica the HPA wants ceil(6 / 4) = 2 replicas


def test_keda_and_the_hpa_take_the_workspace_from_1_to_2_under_load_and_back_to_0_when_it_goes(
    cluster, aks, keda, keda_metrics_adapter, namespace, tmp_path
):
    apply_workspace(cluster, namespace, 0)
    model = SlowModel()
    front, url, log = start_front(cluster, namespace, tmp_path, model.url, max_wait_s=300)
    replicas = ReplicaLog(cluster, namespace)
    try:
        cluster.kubectl(
            "apply", "-n", namespace, "-f", "-", input=json.dumps(scaled_object(url, target=4, scale_down_window_s=0))
        )
        cluster.wait_for(
            "KEDA's HPA for the Workspace",
            lambda: get(cluster, "hpa", f"keda-hpa-{NAME}", "-n", namespace),
            timeout=60,
        )
        answers: list = []
        clients = [ask(url, answers, timeout=600) for _ in range(LOAD)]
        one = cluster.wait_for("KEDA scales the Workspace to 1", lambda: replicas.reached(1), timeout=WAIT_S)
        model.up.set()  # the replica is Ready: the front relays the held requests, which stay in flight
        cluster.wait_for(
            f"{LOAD} requests in flight at the front",
            lambda: requests.get(f"{url}/queue", timeout=5).json()["inFlight"] == LOAD,
            timeout=60,
        )
        two = cluster.wait_for("the HPA scales the Workspace to 2", lambda: replicas.reached(2), timeout=WAIT_S)
        hpa = get(cluster, "hpa", f"keda-hpa-{NAME}", "-n", namespace)
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "kaito.sh/v1alpha1", "kind": "Workspace", "name": NAME}
        assert hpa["status"]["desiredReplicas"] == 2, hpa["status"]
        scale = get(cluster, "workspace", NAME, "-n", namespace, "--subresource=scale")
        assert scale["status"]["selector"], scale  # the HPA refuses a scale target without a selector
        time.sleep(12)  # a few HPA rounds: the load asks for 2, not more
        assert spec_replicas(cluster, namespace) == 2

        released = time.monotonic()
        model.release.set()
        for client in clients:
            client.join(60)
        assert answers == [200] * LOAD
        zero = cluster.wait_for(
            "KEDA scales the Workspace back to 0", lambda: replicas.reached(0, after=released), timeout=WAIT_S
        )
        replicas.done.set()
        replicas.thread.join(5)
        print(
            f"KEDA+HPA: 1 -> 2 in {two - one:.1f} s after the Workspace reached 1 with {LOAD} requests waiting; "
            f"back to 0 {zero - released:.1f} s after the load went; replicas {replicas.path()}"
        )
        assert replicas.path()[:3] == [0, 1, 2] and replicas.path()[-1] == 0, replicas.path()
    finally:
        replicas.done.set()
        model.stop()
        if front.poll() is None:
            front.kill()
        log.close()
        cluster.kubectl("delete", "scaledobject", NAME, "-n", namespace, "--ignore-not-found", check=False)
