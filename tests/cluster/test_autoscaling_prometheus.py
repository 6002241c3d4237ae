"""KEDA's `prometheus` trigger for real: examples/autoscaling/ and Kaito's InferenceSet
`scaledobject.kaito.sh/*` annotations on the local control plane, with KEDA's operator and metrics adapter
(built by `make keda`; keda_support.py) and the real Prometheus (Debian's 2.42, /usr/bin/prometheus, as a
process on loopback; prometheus_support.py). The install is overlays/keda/ (AKS mode; the InferenceSet
controller owns ScaledObjects).

What cannot exist here, and what stands in for it:
- The Prometheus server address: the example's `prometheus-operated.monitoring.svc.cluster.local` has no
  cluster DNS where KEDA runs on loopback. Only the trigger's `serverAddress` of the ScaledObject read from
  the example file is rewritten, to the loopback Prometheus; the InferenceSet names it in
  `scaledobject.kaito.sh/serverAddress`, as a user names theirs.
- The PodMonitor: there is no Prometheus Operator, and kwok's pods run no process. Prometheus scrapes a
  test-only stand-in of the replica's /metrics (SGLang's gauge names and text format; the test sets the
  value) through a `static_configs` target with the labels the PodMonitor would have given its series:
  namespace, pod, and kaito_sh_workspace from the pod label kaito.sh/workspace.
The example's HPA behaviour is kept as written: 1 -> 2 is one pod, which its scale-up policy (one pod per
120 s) allows at once, so nothing is shortened.

Skipped where KEDA is not built (`make keda`) or /usr/bin/prometheus is absent (`apt-get install
prometheus`, which `make test-setup` does as root)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml
from observe import WAIT_S, condition, get, wait_condition
from operator_stack import REPO
from prometheus_support import INSTALL_HINT, PROMETHEUS, SGLangMetricsStandIn, Target, prometheus
from workspace_support import KAITO_V012_EXAMPLES, need_shared

pytestmark = [
    pytest.mark.scale_to_zero,
    pytest.mark.cluster,
    # Before the control plane and KEDA start: without Prometheus there is nothing to test.
    pytest.mark.skipif(not PROMETHEUS.exists(), reason=f"{PROMETHEUS} is absent: {INSTALL_HINT}"),
]

EXAMPLE = REPO / "examples" / "autoscaling"
KAITO_INFERENCESET = KAITO_V012_EXAMPLES / "inference" / "kaito_inferenceset_phi_4_mini.yaml"
SERVER_ADDRESS_ANNOTATION = "scaledobject.kaito.sh/serverAddress"


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def scale_replicas(cluster, kind: str, name: str, namespace: str) -> int:
    scale = get(cluster, kind, name, "-n", namespace, "--subresource=scale") or {}
    return (scale.get("spec") or {}).get("replicas") or 0


def scaled_object_ready(cluster, name: str, namespace: str) -> bool:
    so = get(cluster, "scaledobject", name, "-n", namespace)
    return condition(so, "Ready").get("status") == "True"


def hpa_reading(cluster, name: str, namespace: str) -> str | None:
    """The external metric's value KEDA's HPA last read (None before its first reading)."""
    hpa = get(cluster, "hpa", f"keda-hpa-{name}", "-n", namespace) or {}
    for metric in (hpa.get("status") or {}).get("currentMetrics") or []:
        current = (metric.get("external") or {}).get("current") or {}
        if value := current.get("averageValue") or current.get("value"):
            return value
    return None


def trigger_query(cluster, name: str, namespace: str) -> tuple[str, str, str]:
    """(serverAddress, query, threshold) of the ScaledObject's prometheus trigger, as KEDA reads it."""
    so = get(cluster, "scaledobject", name, "-n", namespace)
    assert so, f"no ScaledObject {namespace}/{name}"
    (trigger,) = so["spec"]["triggers"]
    assert trigger["type"] == "prometheus", trigger
    meta = trigger["metadata"]
    return meta["serverAddress"], meta["query"], meta["threshold"]


def drive_to_two(cluster, prom, stand_in, kind: str, name: str, namespace: str, queue: float) -> float:
    """Queue below the threshold (the HPA reads it and stays at 1), then `queue` above it: the seconds
    from the stand-in's value going up to the scale subresource's spec.replicas reaching 2."""
    server, query, threshold = trigger_query(cluster, name, namespace)
    assert server == prom.url
    below = float(threshold) / 2
    stand_in.set("sglang:num_queue_reqs", below)
    cluster.wait_for(
        f"Prometheus answers {query} with {below}",
        lambda: [float(r["value"][1]) for r in prom.query(query)] == [below],
        timeout=60,
    )
    cluster.wait_for("KEDA's HPA reads the metric", lambda: hpa_reading(cluster, name, namespace), timeout=WAIT_S)
    assert scale_replicas(cluster, kind, name, namespace) == 1

    stand_in.set("sglang:num_queue_reqs", queue)
    above = time.monotonic()
    cluster.wait_for(
        f"the HPA takes the {kind} to 2",
        lambda: scale_replicas(cluster, kind, name, namespace) >= 2,
        timeout=WAIT_S,
        every=0.2,
    )
    took = time.monotonic() - above
    assert [float(r["value"][1]) for r in prom.query(query)] == [queue]
    return took


def test_the_autoscaling_example_scales_its_workspace_from_1_to_2_on_sglangs_queue_through_prometheus(
    cluster, keda, keda_metrics_adapter, aks_with_keda, tmp_path
):
    workspace = load(EXAMPLE / "workspace-phi-3-sglang.yaml")
    scaled = load(EXAMPLE / "keda-scaledobject.yaml")
    name = workspace["metadata"]["name"]
    # The example's query selects namespace="default": applied, as written, where `kubectl apply -f` puts it.
    namespace = "default"
    stand_in = SGLangMetricsStandIn(workspace["inference"]["preset"]["name"])
    target = Target(stand_in.address, namespace, name, f"{name}-0")
    try:
        with prometheus(cluster, tmp_path / "prometheus", [target]) as prom:
            (trigger,) = scaled["spec"]["triggers"]
            trigger["metadata"]["serverAddress"] = prom.url
            cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(workspace))
            cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(scaled))
            cluster.wait_for(
                "the example's ScaledObject Ready",
                lambda: scaled_object_ready(cluster, name, namespace),
                timeout=WAIT_S,
            )
            took = drive_to_two(cluster, prom, stand_in, "workspace", name, namespace, queue=12)
            hpa = get(cluster, "hpa", f"keda-hpa-{name}", "-n", namespace)
            assert hpa["spec"]["scaleTargetRef"] == {
                "apiVersion": "kaito.sh/v1alpha1",
                "kind": "Workspace",
                "name": name,
            }
            assert hpa["spec"]["behavior"]["scaleUp"]["policies"] == [
                {"type": "Pods", "value": 1, "periodSeconds": 120}
            ]
            assert scaled_object_ready(cluster, name, namespace)
            print(f"examples/autoscaling: queue 12 > threshold 8 -> Workspace at 2 replicas {took:.1f} s later")
    finally:
        stand_in.stop()
        cluster.kubectl("delete", "scaledobject", name, "-n", namespace, "--ignore-not-found", check=False)
        cluster.kubectl("delete", "workspace", name, "-n", namespace, "--ignore-not-found", check=False)


def test_an_inferencesets_keda_annotations_scale_it_up_on_the_mapped_sglang_metric(
    cluster, keda, keda_metrics_adapter, aks_with_keda, namespace, tmp_path
):
    iset = load(need_shared(KAITO_INFERENCESET))
    iset["metadata"].pop("namespace")
    name = iset["metadata"]["name"]
    assert iset["metadata"]["annotations"]["scaledobject.kaito.sh/metricName"] == "vllm:num_requests_waiting"
    stand_in = SGLangMetricsStandIn(iset["spec"]["template"]["inference"]["preset"]["name"])
    target = Target(stand_in.address, namespace, name, f"{name}-0")
    try:
        with prometheus(cluster, tmp_path / "prometheus", [target]) as prom:
            iset["metadata"]["annotations"][SERVER_ADDRESS_ANNOTATION] = prom.url
            cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(iset))
            cluster.wait_for(
                "Metacontroller creates the hook's ScaledObject",
                lambda: get(cluster, "scaledobject", name, "-n", namespace),
                timeout=WAIT_S,
            )
            so = get(cluster, "scaledobject", name, "-n", namespace)
            assert so["spec"]["scaleTargetRef"] == {
                "apiVersion": "kaito.sh/v1alpha1",
                "kind": "InferenceSet",
                "name": name,
            }
            owners = so["metadata"].get("ownerReferences") or []
            assert [(o["kind"], o["name"]) for o in owners] == [("InferenceSet", name)], owners
            cluster.wait_for(
                "the InferenceSet's ScaledObject Ready",
                lambda: scaled_object_ready(cluster, name, namespace),
                timeout=WAIT_S,
            )
            # KEDA's operator has read the ScaledObject and says Ready: the hook reports it on the set.
            autoscaler = condition(
                wait_condition(cluster, namespace, "inferenceset", name, "AutoscalerReady", reason="ScaledObjectReady"),
                "AutoscalerReady",
            )
            assert prom.url in autoscaler["message"] and "sglang:num_queue_reqs" in autoscaler["message"], autoscaler
            took = drive_to_two(cluster, prom, stand_in, "inferenceset", name, namespace, queue=25)
            cluster.wait_for(
                "the InferenceSet's Workspace at 2 replicas",
                lambda: (get(cluster, "workspace", name, "-n", namespace) or {}).get("spec", {}).get("replicas") == 2,
                timeout=WAIT_S,
            )
            print(f"InferenceSet: queue 25 > threshold 10 -> InferenceSet at 2 replicas {took:.1f} s later")
    finally:
        stand_in.stop()
