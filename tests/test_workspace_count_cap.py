"""resource.count and spec.replicas are capped by the hook as by the CRD (a Workspace written past the CRD,
e.g. by a stand-in or an older CRD, must not make the hook render thousands of Machines or hang), and the
Machine names for a Workspace are found in time linear in the count."""

from __future__ import annotations

import threading
import time

import pytest
import yaml
from workspace_support import REPO, condition, request, workspace

from hooks.settings import Settings
from hooks.workspace import nodes
from hooks.workspace.api import Workspace
from hooks.workspace.sync import sync


def _crd_maximum(field: str) -> int:
    crd = yaml.safe_load((REPO / "metacontroller" / "workspace-crd.yaml").read_text())
    props = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    return (
        props["resource"]["properties"][field]["maximum"]
        if field == "count"
        else props["spec"]["properties"]["replicas"]["maximum"]
    )


def _sized(count: int) -> dict:
    return workspace(
        resource={
            "instanceType": "Standard_NC24ads_A100_v4",
            "count": count,
            "labelSelector": {"matchLabels": {"apps": "phi-3"}},
        }
    )


def _sync_within(ws: dict, seconds: float) -> dict:
    """The hook's answer, or a failure if it takes longer than `seconds` (the thread is left to finish)."""
    answer: dict = {}
    worker = threading.Thread(target=lambda: answer.update(sync(request(ws), Settings(), "2026-01-01T00:00:00Z")))
    worker.daemon = True
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"the hook took longer than {seconds} s"
    return answer


def test_the_hooks_caps_are_the_crds():
    crd_count = _crd_maximum("count")
    crd_replicas = _crd_maximum("replicas")
    assert Workspace.model_fields["resource"].annotation.model_fields["count"].metadata[-1].le == crd_count
    assert crd_replicas == crd_count == 64


@pytest.mark.parametrize("count", [65, 10_000, 2**31, 2**63])
def test_a_count_above_the_cap_is_refused_naming_the_field_without_machines(count):
    resp = _sync_within(_sized(count), 5.0)
    ready = condition(resp, "ResourceReady")
    assert ready["status"] == "False"
    assert "resource.count" in ready["message"] and "64" in ready["message"]
    assert not [c for c in resp.get("children", []) if c["kind"] == "Machine"]


def test_the_cap_itself_renders_its_machines():
    resp = _sync_within(_sized(64), 5.0)
    assert len([c for c in resp["children"] if c["kind"] == "Machine"]) == 64


def test_machine_names_are_found_in_linear_time():
    ws = Workspace.model_validate(_sized(1))
    started = time.perf_counter()
    plan = nodes.plan_nodes(ws, 100_000, {}, {}, Settings())
    elapsed = time.perf_counter() - started
    assert len(set(plan.machines)) == 100_000
    assert elapsed < 10, f"100,000 Machine names took {elapsed:.1f} s"
