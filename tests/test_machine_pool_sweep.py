"""The orphaned-pool sweep: pools we created whose Machine is gone are deleted after a
grace period, and the sweep says what it did. Real SDK against the local fake ARM (tests/arm_support/fake_arm.py);
the DecoratorController is checked against Metacontroller v4.17.2's CRD schema."""

from __future__ import annotations

import datetime
import json

import pytest
import yaml
from arm_support.fake_arm import INSTALL_ID
from arm_support.pools import agent_pools
from machine_support import hook_request, make_machine
from workspace_support import METACONTROLLER_CRDS, REPO

pytest.importorskip("azure.mgmt.containerservice", reason="azure-mgmt-containerservice is not installed")

from hooks.machine import sweep
from hooks.machine import sync as machine_sync
from hooks.machine.pools import pool_body
from hooks.machine.request import read_machine
from hooks.server.app import create_app

pytestmark = pytest.mark.integration

ARM_NOW = datetime.datetime(2026, 11, 26, 12, 0, tzinfo=datetime.UTC)  # the fake ARM's clock
AFTER_GRACE = ARM_NOW + datetime.timedelta(seconds=sweep.GRACE_SECONDS + 60)
NAMESPACE = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kaito-system"}}
HOOK_SERVICE = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kaito-hooks", "namespace": "kaito-system"}}


def sweep_request(machines=(), proof=True):
    related = {
        "Machine.kaito.sh/v1alpha1": {f"{m['metadata']['namespace']}/{m['metadata']['name']}": m for m in machines}
    }
    if proof:
        related["Service.v1"] = {"kaito-system/kaito-hooks": HOOK_SERVICE}
    return {"controller": {"kind": "DecoratorController"}, "object": NAMESPACE, "attachments": {}, "related": related}


def create_pool(arm, name):
    agent_pools(arm.base_url).create(name, pool_body(read_machine(make_machine(name=name)), INSTALL_ID))
    arm.set_state(name, "Succeeded")


def report(response):
    return json.loads(response["annotations"][sweep.REPORT_ANNOTATION])


def test_a_pool_whose_put_landed_after_its_machine_was_finalized_is_swept(arm):
    machine = make_machine(name="wslate000001")
    # finalize ran first: no pool yet, so the Machine was finalized ...
    assert machine_sync.finalize(hook_request(machine, finalizing=True), agent_pools(arm.base_url))["finalized"] is True
    # ... then the slow PUT of an earlier sync landed: a pool with no Machine
    create_pool(arm, "wslate000001")
    kept = sweep.sweep(sweep_request(), agent_pools(arm.base_url), now=ARM_NOW + datetime.timedelta(minutes=1))
    assert not arm.calls("DELETE") and "grace" in report(kept)["kept"][0]
    swept = sweep.sweep(sweep_request(), agent_pools(arm.base_url), now=AFTER_GRACE)
    assert [c.path.rsplit("/", 1)[1] for c in arm.calls("DELETE")] == ["wslate000001"]
    assert report(swept)["deleted"][0].startswith("wslate000001: no Machine")
    assert swept["resyncAfterSeconds"] == sweep.RESYNC_SECONDS


def test_pools_with_a_machine_and_foreign_pools_are_never_touched(arm):
    create_pool(arm, "wsalive00001")
    arm.add_foreign_pool("nodepool1")
    create_pool(arm, "wshandmade01")
    arm.state.pools["wshandmade01"]["properties"]["nodeLabels"] = {"team": "x"}  # our tag, not our node label
    response = sweep.sweep(
        sweep_request([make_machine(name="wsalive00001")]), agent_pools(arm.base_url), now=AFTER_GRACE
    )
    assert not arm.calls("DELETE")
    assert report(response) == {"deleted": [], "kept": []}


def test_the_same_pools_give_the_same_answer_whatever_the_time(arm):
    """The report is an annotation on the parent: if it changed on every call (a timestamp), each answer
    would be a watch event that makes Metacontroller call the sweep again at once (on a real
    control plane: one Namespace write a second)."""
    create_pool(arm, "wsorphan0001")
    arm.set_state("wsorphan0001", "Deleting")
    answers = [
        sweep.sweep(sweep_request(), agent_pools(arm.base_url), now=AFTER_GRACE + datetime.timedelta(seconds=s))
        for s in (0, 1, 3600)
    ]
    assert answers[0] == answers[1] == answers[2]
    unproven = [
        sweep.sweep(
            sweep_request(proof=False), agent_pools(arm.base_url), now=AFTER_GRACE + datetime.timedelta(seconds=s)
        )
        for s in (0, 1)
    ]
    assert unproven[0] == unproven[1]


def test_without_proof_that_the_machines_were_listed_nothing_is_deleted(arm):
    create_pool(arm, "wsorphan0001")
    response = sweep.sweep(sweep_request(proof=False), agent_pools(arm.base_url), now=AFTER_GRACE)
    assert not arm.calls("DELETE") and "skipped" in report(response)


def test_the_sweep_is_served_and_deletes_at_most_a_few_pools_per_call(arm):
    for i in range(sweep.MAX_DELETIONS_PER_SWEEP + 2):
        create_pool(arm, f"wsorphan{i:04d}")
    client = create_app(pools_provider=lambda: agent_pools(arm.base_url)).test_client()
    customize = client.post("/customize/pool-sweep", json={"parent": NAMESPACE}).get_json()
    assert {r["resource"] for r in customize["relatedResources"]} == {"machines", "services"}
    arm.tick(minutes=0)
    answer = client.post("/sync/pool-sweep", json=sweep_request())
    assert answer.status_code == 200, answer.get_json()
    # the fake's pools were modified at its clock (12:00); the hook's own clock is now, long after
    assert len(arm.calls("DELETE")) == sweep.MAX_DELETIONS_PER_SWEEP
    assert len(report(answer.get_json())["kept"]) == 2


def test_the_sweep_controller_matches_metacontrollers_schema_and_is_left_out_of_byo():
    if not METACONTROLLER_CRDS.exists():
        pytest.skip(f"{METACONTROLLER_CRDS} is absent (needs the shared reference checkout)")
    import jsonschema

    crd = next(
        d
        for d in yaml.safe_load_all(METACONTROLLER_CRDS.read_text())
        if d and d["spec"]["names"]["kind"] == "DecoratorController"
    )
    schema = next(v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1")["schema"]["openAPIV3Schema"]
    controller = yaml.safe_load((REPO / "metacontroller" / "pool-sweep-controller.yaml").read_text())
    jsonschema.validate(controller, schema)
    assert "pool-sweep-controller.yaml" in (REPO / "metacontroller" / "kustomization.yaml").read_text()
    assert "delete-pool-sweep-controller.yaml" in (REPO / "overlays" / "byo" / "kustomization.yaml").read_text()
