"""examples/scale-to-zero/: the Workspace passes our CRD and opts in; the KEDA ScaledObject passes KEDA's schema
(cloudcoil-models-keda, as in test_autoscaling_example), starts at 0, and reads a value the front really
reports at the path the front really serves, through the Service the hook points at the front."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml
from crd_support import cel_violations, schema_root, workspace_schema
from test_autoscaling_example import check_against
from workspace_support import REPO, find, request

from hooks.settings import Settings
from hooks.workspace.sync import sync
from inference.wake_front import Front, HeldRequests

pytestmark = [pytest.mark.scale_to_zero, pytest.mark.slow]

EXAMPLES = REPO / "examples" / "scale-to-zero"


def load(name: str) -> dict:
    return yaml.safe_load((EXAMPLES / name).read_text())


def test_the_workspace_passes_our_crd_and_gets_a_front():
    ws = load("workspace-phi-3-scale-to-zero.yaml")
    jsonschema.validate(ws, workspace_schema())
    assert cel_violations(schema_root(), ws) == []
    resp = sync(
        request({**ws, "metadata": {**ws["metadata"], "namespace": "default", "uid": "u"}}),
        Settings(),
        "2026-12-06T05:00:00Z",
    )
    assert find(resp["children"], "Deployment", "workspace-phi-3-scale-to-zero-front")


def test_the_scaled_object_starts_at_zero_and_reads_the_fronts_queue():
    keda = pytest.importorskip(
        "cloudcoil.models.keda.v1alpha1", reason="cloudcoil-models-keda (test extra) is not installed"
    )
    so, ws = load("keda-scaledobject.yaml"), load("workspace-phi-3-scale-to-zero.yaml")
    check_against(keda.ScaledObject, so)
    assert so["spec"]["scaleTargetRef"] == {
        "apiVersion": ws["apiVersion"],
        "kind": ws["kind"],
        "name": ws["metadata"]["name"],
    }
    assert so["spec"]["minReplicaCount"] == 0
    (trigger,) = so["spec"]["triggers"]
    assert trigger["type"] == "metrics-api"
    url = urlsplit(trigger["metadata"]["url"])
    assert url.hostname == f"{ws['metadata']['name']}.default.svc" and url.path == "/queue"

    async def report() -> dict:
        return Front(HeldRequests(1, 1), 60).report()

    assert isinstance(asyncio.run(report())[trigger["metadata"]["valueLocation"]], int)
