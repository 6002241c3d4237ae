"""Kaito's `scaledobject.kaito.sh/*` annotations as the KEDA ScaledObject that scales the InferenceSet.

Kaito names vLLM's metrics; the replicas here run SGLang, so each vLLM metric maps to SGLang's metric of
the same meaning (vllm:num_requests_waiting -> sglang:num_queue_reqs), summed over the set's pods by
Prometheus and divided by the replica count (AverageValue), as examples/autoscaling does for a Workspace.
The ScaledObject is a child only where KEDA is installed: the CompositeController then declares
scaledobjects as a child type (overlays/keda/), and Metacontroller's request says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from hooks import naming
from hooks.inferenceset.api import MAX_REPLICAS, InferenceSet
from hooks.inferenceset.workspace import SCALEDOBJECT_PREFIX
from hooks.workspace.status.conditions import Condition, false, true
from hooks.workspace.validation import Problem

SCALEDOBJECTS = "ScaledObject.keda.sh/v1alpha1"
AUTO_PROVISION = SCALEDOBJECT_PREFIX + "auto-provision"
METRIC_NAME = SCALEDOBJECT_PREFIX + "metricName"
THRESHOLD = SCALEDOBJECT_PREFIX + "threshold"
# Not Kaito's (its own scaler reads the pods directly): where KEDA's prometheus scaler asks.
SERVER_ADDRESS = SCALEDOBJECT_PREFIX + "serverAddress"
DEFAULT_SERVER_ADDRESS = "http://prometheus-operated.monitoring.svc.cluster.local:9090"
KNOWN = (AUTO_PROVISION, METRIC_NAME, THRESHOLD, SERVER_ADDRESS)

# vLLM's metric -> SGLang's metric of the same meaning.
METRICS = {
    "vllm:num_requests_waiting": "sglang:num_queue_reqs",
    "vllm:num_requests_running": "sglang:num_running_reqs",
    "vllm:gpu_cache_usage_perc": "sglang:token_usage",
}
DEFAULT_METRIC = "vllm:num_requests_waiting"
DEFAULT_THRESHOLD = "10"
_SGLANG_METRIC = re.compile(r"^sglang:[a-z_]+$")
_URL = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]+)?(/[A-Za-z0-9._/-]*)?$")


@dataclass(frozen=True)
class Autoscaling:
    metric: str  # SGLang's metric name
    threshold: str
    server_address: str


def _field(key: str) -> str:
    return f"metadata.annotations[{key}]"


def parse(iset: InferenceSet) -> tuple[Autoscaling | None, list[Problem]]:
    """The autoscaling the annotations ask for (None when auto-provision is not "true"), or its problems."""
    ann = iset.annotations
    problems = [
        Problem(
            _field(k),
            f"unknown scaledobject annotation; the known ones are {', '.join(KNOWN)}",
        )
        for k in sorted(ann)
        if k.startswith(SCALEDOBJECT_PREFIX) and k not in KNOWN
    ]
    enabled = ann.get(AUTO_PROVISION, "false").strip().lower()
    if enabled not in ("true", "false"):
        problems.append(Problem(_field(AUTO_PROVISION), f'{enabled!r} must be "true" or "false"'))
    asked = ann.get(METRIC_NAME, DEFAULT_METRIC).strip()
    metric = METRICS.get(asked, asked if _SGLANG_METRIC.match(asked) else None)
    if metric is None:
        problems.append(
            Problem(
                _field(METRIC_NAME),
                f"{asked!r} has no SGLang equivalent; use one of {', '.join(METRICS)} (mapped to "
                f"{', '.join(METRICS.values())}) or an sglang:* metric name",
            )
        )
    threshold = ann.get(THRESHOLD, DEFAULT_THRESHOLD).strip()
    try:
        ok = float(threshold) > 0
    except ValueError:
        ok = False
    if not ok:
        problems.append(Problem(_field(THRESHOLD), f'{threshold!r} must be a positive number, e.g. "10"'))
    address = ann.get(SERVER_ADDRESS, DEFAULT_SERVER_ADDRESS).strip()
    if not _URL.match(address):
        problems.append(Problem(_field(SERVER_ADDRESS), f"{address!r} must be the http(s) URL of a Prometheus server"))
    if problems or enabled != "true" or metric is None:
        return None, problems
    return Autoscaling(metric, threshold, address), []


def scaled_object(iset: InferenceSet, auto: Autoscaling, max_replicas: int) -> dict[str, Any]:
    """The ScaledObject scaling the InferenceSet's scale subresource between 1 and `max_replicas`."""
    series_label = re.sub(r"[^a-zA-Z0-9_]", "_", naming.WORKSPACE_LABEL)
    query = f'sum({auto.metric}{{namespace="{iset.namespace}", {series_label}="{iset.name}"}})'
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": iset.name, "namespace": iset.namespace},
        "spec": {
            "scaleTargetRef": {"apiVersion": "kaito.sh/v1alpha1", "kind": "InferenceSet", "name": iset.name},
            "minReplicaCount": 1,
            "maxReplicaCount": max(1, min(max_replicas, MAX_REPLICAS)),
            "pollingInterval": 15,
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    "behavior": {
                        # Each replica may need a new GPU node: add one at a time, remove slowly.
                        "scaleUp": {
                            "stabilizationWindowSeconds": 0,
                            "policies": [{"type": "Pods", "value": 1, "periodSeconds": 120}],
                        },
                        "scaleDown": {
                            "stabilizationWindowSeconds": 900,
                            "policies": [{"type": "Pods", "value": 1, "periodSeconds": 600}],
                        },
                    }
                }
            },
            "triggers": [
                {
                    "type": "prometheus",
                    "metricType": "AverageValue",
                    "metadata": {"serverAddress": auto.server_address, "query": query, "threshold": auto.threshold},
                }
            ],
        },
    }


def autoscaler_ready(auto: Autoscaling, name: str, observed: dict[str, Any] | None) -> Condition:
    """AutoscalerReady from KEDA's own Ready condition on the ScaledObject (`observed`, None before it
    exists): True only once KEDA has read it and accepted its trigger and target, so a ScaledObject that
    no KEDA operator reads does not pass for a working autoscaler."""
    found = ((observed or {}).get("status") or {}).get("conditions") or []
    ready: dict[str, Any] = next((c for c in found if c.get("type") == "Ready"), {})
    if ready.get("status") == "True":
        return true("AutoscalerReady", "ScaledObjectReady", f"KEDA scales on {auto.metric} from {auto.server_address}")
    if ready.get("status") == "False":
        return false(
            "AutoscalerReady",
            "ScaledObjectNotReady",
            f"KEDA reports ScaledObject {name} not ready ({ready.get('reason', '')}): {ready.get('message', '')}",
        )
    return false(
        "AutoscalerReady",
        "WaitingForKEDA",
        f"ScaledObject {name} on {auto.metric} is created; KEDA has not reported it Ready yet "
        "(is KEDA's operator running?)",
    )
