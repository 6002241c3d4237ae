"""examples/autoscaling/: a Workspace driven by KEDA on SGLang's queue metric.

The Workspace is checked against our CRD (schema and CEL). The ScaledObject and the PodMonitor are checked
against KEDA's and the Prometheus Operator's CRD schemas as packaged on PyPI (cloudcoil-models-keda 2.16.1,
cloudcoil-models-prometheus-operator 0.80.1: pydantic models generated from the projects' CRDs). Those models
ignore unknown fields, so a field the model drops on a round trip is reported as unknown (a misspelt field
would be pruned by the API server).
"""

from __future__ import annotations

import re

import jsonschema
import pytest
import yaml
from crd_support import cel_violations, schema_root, workspace_schema
from workspace_support import REPO

pytestmark = pytest.mark.slow  # loads the KEDA and Prometheus Operator schemas

EXAMPLES = REPO / "examples" / "autoscaling"
WORKSPACE_LABEL = "kaito.sh/workspace"


def load(name: str) -> dict:
    return yaml.safe_load((EXAMPLES / name).read_text())


def dropped_fields(given, kept, path: str = "") -> list[str]:
    """Paths present in `given` but absent from the model's dump `kept`."""
    out = []
    if isinstance(given, dict):
        for key, value in given.items():
            if not isinstance(kept, dict) or key not in kept:
                out.append(f"{path}.{key}")
            else:
                out += dropped_fields(value, kept[key], f"{path}.{key}")
    elif isinstance(given, list) and isinstance(kept, list):
        for i, (a, b) in enumerate(zip(given, kept, strict=False)):
            out += dropped_fields(a, b, f"{path}[{i}]")
    return out


def check_against(model, obj: dict) -> None:
    parsed = model.model_validate(obj)
    assert dropped_fields(obj, parsed.model_dump(mode="json", by_alias=True, exclude_unset=True)) == []


def test_the_workspace_passes_our_crd():
    ws = load("workspace-phi-3-sglang.yaml")
    jsonschema.validate(ws, workspace_schema())
    assert cel_violations(schema_root(), ws) == []


def test_the_scaled_object_passes_kedas_schema_and_targets_the_workspace():
    keda = pytest.importorskip(
        "cloudcoil.models.keda.v1alpha1", reason="cloudcoil-models-keda (test extra) is not installed"
    )
    so = load("keda-scaledobject.yaml")
    check_against(keda.ScaledObject, so)
    ws = load("workspace-phi-3-sglang.yaml")
    assert so["spec"]["scaleTargetRef"] == {
        "apiVersion": ws["apiVersion"],
        "kind": ws["kind"],
        "name": ws["metadata"]["name"],
    }
    assert so["spec"]["minReplicaCount"] >= ws["resource"].get("count", 1), (
        "below resource.count the scaler has no effect"
    )
    (trigger,) = so["spec"]["triggers"]
    query = trigger["metadata"]["query"]
    # The series label Prometheus makes of the pod label (non [a-zA-Z0-9_] -> _), selecting this Workspace's replicas.
    series_label = re.sub(r"[^a-zA-Z0-9_]", "_", WORKSPACE_LABEL)
    assert "sglang:num_queue_reqs{" in query and f'{series_label}="{ws["metadata"]["name"]}"' in query
    assert float(trigger["metadata"]["threshold"]) > 0


def test_the_pod_monitor_passes_the_prometheus_operator_schema_and_selects_the_replicas():
    monitoring = pytest.importorskip(
        "cloudcoil.models.prometheus_operator.v1",
        reason="cloudcoil-models-prometheus-operator (test extra) is not installed",
    )
    pm = load("podmonitor.yaml")
    check_against(monitoring.PodMonitor, pm)
    ws_name = load("workspace-phi-3-sglang.yaml")["metadata"]["name"]
    assert pm["spec"]["selector"] == {"matchLabels": {WORKSPACE_LABEL: ws_name}}
    assert pm["spec"]["podTargetLabels"] == [WORKSPACE_LABEL]
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] == "http"


def test_a_misspelt_field_is_caught():
    keda = pytest.importorskip(
        "cloudcoil.models.keda.v1alpha1", reason="cloudcoil-models-keda (test extra) is not installed"
    )
    so = load("keda-scaledobject.yaml")
    so["spec"]["maxReplicaCounts"] = so["spec"].pop("maxReplicaCount")
    with pytest.raises(AssertionError, match="maxReplicaCounts"):
        check_against(keda.ScaledObject, so)
