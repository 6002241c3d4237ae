"""The Machine hook's decisions, driven through the real SDK against a local fake ARM.

Each test plays Metacontroller: it builds the DecoratorController v2 request, calls the hook, and
writes the returned status back onto the Machine before the next call, as Metacontroller would.
Azure's servers are the only thing faked (tests/arm_support/fake_arm.py), being unreachable from here.
"""

import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

pytest.importorskip("azure.mgmt.containerservice", reason="azure-mgmt-containerservice is not installed")

from arm_support.fake_arm import INSTALL_ID
from arm_support.pools import agent_pools
from loopback_support import free_port
from machine_support import NAME, VM, conditions, hook_request, make_machine, make_node

from hooks.machine import conditions as machine_conditions
from hooks.machine import sync as machine_sync
from hooks.machine.arm_client import ArmThrottled, ArmUnreachable
from hooks.machine.request import InvalidRequest, machine_object, storage_gib

pytestmark = pytest.mark.integration  # starts a local HTTPS fake ARM server

REPO = Path(__file__).resolve().parents[1]
TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


@pytest.fixture
def pools(arm):
    return agent_pools(arm.base_url)


@pytest.fixture(scope="module")
def machine_schema():
    crd = yaml.safe_load((REPO / "metacontroller" / "machine-crd.yaml").read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


class Metacontroller:
    """Calls a hook and writes the returned status back, as Metacontroller does."""

    def __init__(self, pools, schema, machine=None):
        self.pools = pools
        self.schema = schema
        self.machine = machine or make_machine()
        self.nodes = []

    def call(self, hook, finalizing=False):
        response = hook(hook_request(self.machine, self.nodes, finalizing), self.pools)
        self.check(response)
        self.machine["status"] = response["status"]
        return response

    def sync(self):
        return self.call(machine_sync.sync)

    def finalize(self):
        return self.call(machine_sync.finalize, finalizing=True)

    def check(self, response):
        allowed = {"labels", "annotations", "status", "attachments", "resyncAfterSeconds", "finalized"}
        assert set(response) <= allowed
        assert [c["type"] for c in response["status"]["conditions"]] == ["Launched", "Registered", "Ready"]
        for condition in response["status"]["conditions"]:
            assert TIME_RE.match(condition["lastTransitionTime"]), condition
            assert re.match(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$", condition["reason"]), condition
        # The status must survive the API server's structural schema (no pruning, no rejection).
        jsonschema.validate({**self.machine, "status": response["status"]}, self.schema)


def test_contract_machine_matches_the_crd_schema(machine_schema):
    jsonschema.validate(make_machine(), machine_schema)
    bad = make_machine()
    bad["spec"]["taints"][0]["effect"] = "Sometimes"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, machine_schema)


def test_full_lifecycle(arm, pools, machine_schema):
    mc = Metacontroller(pools, machine_schema)

    first = mc.sync()
    (put,) = arm.calls("PUT", NAME)
    assert put.body == {
        "properties": {
            "type": "VirtualMachineScaleSets",
            "vmSize": VM,
            "count": 1,
            "mode": "User",
            "osType": "Linux",
            "osDiskSizeGB": 120,
            "nodeLabels": {
                "kaito.sh/workspace": "workspace-phi-3",
                "kaito.sh/workspacenamespace": "default",
                "kaito.sh/machine-type": "gpu",
                "apps": "phi-3",
                "kaito.sh/machine": NAME,
            },
            "nodeTaints": ["sku=gpu:NoSchedule"],
            "tags": {
                "kaito-machine": NAME,
                "kaito-machine-namespace": "default",
                "kaito-install": INSTALL_ID,
                "kaito-workspace": "workspace-phi-3",
                "kaito-workspace-namespace": "default",
            },
        }
    }
    c = conditions(first)
    assert (c["Launched"]["status"], c["Launched"]["reason"]) == ("Unknown", "Creating")
    assert c["Ready"]["status"] == "Unknown"
    assert first["resyncAfterSeconds"] == machine_conditions.RESYNC_PROGRESS_S
    assert "finalized" not in first

    # Still creating: reported, never PUT again.
    second = mc.sync()
    assert len(arm.calls("PUT")) == 1
    assert (conditions(second)["Launched"]["reason"], conditions(second)["Launched"]["message"]) == (
        "Provisioning",
        f"AKS agent pool {NAME} is Creating",
    )
    # Same status as before: lastTransitionTime carried over.
    assert conditions(second)["Launched"]["lastTransitionTime"] == c["Launched"]["lastTransitionTime"]

    arm.tick(12)
    arm.set_state(NAME, "Succeeded")
    third = mc.sync()
    c3 = conditions(third)
    assert c3["Launched"]["status"] == "True"
    assert (c3["Registered"]["status"], c3["Registered"]["reason"]) == ("Unknown", "NodeNotFound")
    # The transition is stamped with the newest time in the inputs: ARM's lastModifiedAt (12:12).
    assert c3["Launched"]["lastTransitionTime"] == "2026-11-26T12:12:00Z"
    assert "nodeName" not in third["status"]

    mc.nodes = [make_node(ready=False, gpus=None)]
    fourth = mc.sync()
    c4 = conditions(fourth)
    assert c4["Registered"]["status"] == "True"
    assert (c4["Ready"]["status"], c4["Ready"]["reason"]) == ("Unknown", "NodeNotReady")
    assert "container runtime network not ready" in c4["Ready"]["message"]
    assert fourth["status"]["nodeName"] == f"aks-{NAME}-12345678-vmss000000"
    assert fourth["status"]["providerID"] == mc.nodes[0]["spec"]["providerID"]

    mc.nodes = [make_node(ready=True, gpus=None)]
    fifth = mc.sync()
    assert conditions(fifth)["Ready"]["reason"] == "GPUNotAllocatable"

    mc.nodes = [make_node(ready=True, gpus="1")]
    ready = mc.sync()
    cr = conditions(ready)
    assert (cr["Ready"]["status"], cr["Ready"]["reason"]) == ("True", "Ready")
    assert "resyncAfterSeconds" not in ready
    assert len(arm.calls("PUT")) == 1

    # Identical requests give byte-identical responses.
    request = hook_request(mc.machine, mc.nodes)
    assert json.dumps(machine_sync.sync(request, pools), sort_keys=True) == json.dumps(
        machine_sync.sync(copy.deepcopy(request), pools), sort_keys=True
    )

    # Finalize: DELETE once, wait through Deleting, finalized only after GET answers 404.
    gone = mc.finalize()
    assert gone["finalized"] is False and gone["resyncAfterSeconds"] == machine_conditions.RESYNC_FINALIZE_S
    assert len(arm.calls("DELETE", NAME)) == 1
    assert conditions(gone)["Ready"]["reason"] == "Deleting"
    still = mc.finalize()
    assert still["finalized"] is False
    assert len(arm.calls("DELETE", NAME)) == 1  # already Deleting: no second DELETE
    arm.finish_delete(NAME)
    done = mc.finalize()
    assert done["finalized"] is True
    assert conditions(done)["Ready"]["reason"] == "Deleted"
    assert len(arm.calls("PUT")) == 1


def test_quota_refusal_is_visible_and_retried_later(arm, pools, machine_schema):
    message = (
        "Operation could not be completed as it results in exceeding approved standardNCADSA100v4Family "
        "Cores quota. Additional details - Deployment Model: Resource Manager, Location: eastus, "
        "Current Limit: 0, Current Usage: 0, Additional Required: 24, (Minimum) New Limit Required: 24."
    )
    arm.refuse_vm_size(VM, "QuotaExceeded", message)
    mc = Metacontroller(pools, machine_schema)
    response = mc.sync()
    ready = conditions(response)["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "ProvisioningRefused")
    assert ready["message"] == f"ARM refused to create AKS agent pool {NAME}: QuotaExceeded: {message}"
    assert conditions(response)["Launched"]["status"] == "False"
    assert response["resyncAfterSeconds"] == machine_conditions.RESYNC_REFUSED_S
    assert NAME not in arm.state.pools

    # Quota granted: the next resync creates the pool.
    arm.state.refused_vm_sizes.clear()
    after = mc.sync()
    assert len(arm.calls("PUT", NAME)) == 2
    assert conditions(after)["Launched"]["reason"] == "Creating"

    # Nothing was created, so finalize does not need a DELETE.
    arm.finish_delete(NAME)
    assert mc.finalize()["finalized"] is True
    assert arm.calls("DELETE") == []


def test_failed_pool_reports_arm_error_without_recreating(arm, pools, machine_schema):
    mc = Metacontroller(pools, machine_schema)
    mc.sync()
    arm.set_state(
        NAME,
        "Failed",
        (
            "OverconstrainedAllocationRequest",
            "Allocation failed. VM(s) with the following constraints cannot be allocated.",
        ),
    )
    response = mc.sync()
    c = conditions(response)
    assert (c["Launched"]["status"], c["Launched"]["reason"]) == ("False", "ProvisioningFailed")
    assert c["Ready"]["message"] == (
        f"AKS agent pool {NAME} is Failed: OverconstrainedAllocationRequest: "
        "Allocation failed. VM(s) with the following constraints cannot be allocated."
        f"; to retry, delete the Machine (kubectl delete machine {NAME} -n default)"
    )
    assert response["resyncAfterSeconds"] == machine_conditions.RESYNC_REFUSED_S
    mc.sync()
    assert len(arm.calls("PUT")) == 1

    # The retry the message names: deleting the Machine finalizes (DELETE of the failed pool, held until
    # ARM answers 404), then the recreated Machine (same name) creates the pool afresh.
    assert mc.finalize()["finalized"] is False
    assert len(arm.calls("DELETE", NAME)) == 1
    arm.finish_delete(NAME)
    assert mc.finalize()["finalized"] is True
    recreated = Metacontroller(pools, machine_schema)
    assert conditions(recreated.sync())["Launched"]["reason"] == "Creating"
    assert len(arm.calls("PUT", NAME)) == 2


def test_throttling_and_outage_escape_to_the_http_layer(arm, pools, machine_schema):
    arm.throttle(count=1, retry_after=30)
    with pytest.raises(ArmThrottled) as caught:
        machine_sync.sync(hook_request(make_machine()), pools)
    assert caught.value.retry_after == 30
    # Throttled on the PUT after a successful GET: still no status, and the PUT did not happen.
    arm.fail_next(429, "TooManyRequests", "throttled", {"Retry-After": "5"}, count=1)
    arm.state.failures.insert(0, (404, {}, {"error": {"code": "NotFound", "message": "Agent Pool not found"}}))
    with pytest.raises(ArmThrottled):
        machine_sync.sync(hook_request(make_machine()), pools)
    assert NAME not in arm.state.pools

    down = agent_pools(f"https://127.0.0.1:{free_port()}")
    with pytest.raises(ArmUnreachable):
        machine_sync.sync(hook_request(make_machine()), down)
    with pytest.raises(ArmUnreachable):
        machine_sync.finalize(hook_request(make_machine(), finalizing=True), down)


def test_invalid_machine_never_reaches_arm(arm, pools, machine_schema):
    machine = make_machine()
    machine["spec"]["requirements"] = machine["spec"]["requirements"][1:]
    response = Metacontroller(pools, machine_schema, machine).sync()
    ready = conditions(response)["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "InvalidMachine")
    assert "node.kubernetes.io/instance-type" in ready["message"]
    assert arm.state.requests == []

    bad_name = make_machine(name="Workspace-Phi-3-0")
    response = machine_sync.sync(hook_request(bad_name), pools)
    assert "cannot be an AKS agent pool name" in conditions(response)["Ready"]["message"]
    final = machine_sync.finalize(hook_request(bad_name, finalizing=True), pools)
    assert final["finalized"] is True
    assert arm.state.requests == []


def test_foreign_pool_with_the_same_name_is_never_touched(arm, pools, machine_schema):
    arm.add_foreign_pool(NAME)
    mc = Metacontroller(pools, machine_schema)
    response = mc.sync()
    assert conditions(response)["Ready"]["reason"] == "PoolNameConflict"
    assert arm.calls("PUT") == []
    assert mc.finalize()["finalized"] is True
    assert arm.calls("DELETE") == []
    assert arm.state.pools[NAME]["properties"]["provisioningState"] == "Succeeded"


def test_aks_upgrade_of_a_launched_pool_keeps_it_launched(arm, pools, machine_schema):
    mc = Metacontroller(pools, machine_schema)
    mc.sync()
    arm.set_state(NAME, "Succeeded")
    mc.nodes = [make_node()]
    assert conditions(mc.sync())["Ready"]["status"] == "True"
    arm.set_state(NAME, "Upgrading")
    c = conditions(mc.sync())
    assert c["Launched"]["status"] == "True" and c["Ready"]["status"] == "True"
    assert "is Upgrading" in c["Launched"]["message"]


def test_delete_refused_keeps_the_finalizer(arm, pools, machine_schema):
    mc = Metacontroller(pools, machine_schema)
    mc.sync()
    # GET answers normally, the DELETE is refused.
    real_answer = arm.answer

    def answer(method, path, query, headers, body):
        if method == "DELETE":
            return 409, {}, {"error": {"code": "OperationNotAllowed", "message": "Another operation is in progress."}}
        return real_answer(method, path, query, headers, body)

    arm.answer = answer
    response = mc.finalize()
    assert response["finalized"] is False
    ready = conditions(response)["Ready"]
    assert (ready["reason"], ready["message"]) == (
        "DeletionRefused",
        f"ARM refused to delete AKS agent pool {NAME}: OperationNotAllowed: Another operation is in progress.",
    )
    assert response["resyncAfterSeconds"] == machine_conditions.RESYNC_DELETE_REFUSED_S


def test_transition_times_are_deterministic_and_stable():
    machine = make_machine()
    machine["metadata"]["managedFields"] = [{"manager": "metacontroller", "time": "2026-11-26T11:30:00Z"}]

    class NoPool:
        install_id = INSTALL_ID

        def get(self, name):
            return None

        def create(self, name, body):
            pass

        def delete(self, name):
            return False

    first = machine_sync.sync(hook_request(machine), NoPool())
    assert {c["lastTransitionTime"] for c in first["status"]["conditions"]} == {"2026-11-26T11:30:00Z"}
    machine["status"] = first["status"]
    machine["metadata"]["managedFields"][0]["time"] = "2026-11-26T11:31:00Z"
    again = machine_sync.sync(hook_request(machine), NoPool())
    assert again["status"] == first["status"]


def test_storage_quantities():
    assert storage_gib("120Gi") == 120
    assert storage_gib("1.5Gi") == 1
    assert storage_gib("128849018880") == 120
    assert storage_gib(128849018880) == 120
    assert storage_gib("100G") == 93
    assert storage_gib("1Ti") == 1024
    assert storage_gib("lots") is None


def test_customize_relates_the_pool_node():
    request = {"controller": {}, "parent": make_machine()}
    assert machine_sync.customize(request) == {
        "relatedResources": [
            {"apiVersion": "v1", "resource": "nodes", "labelSelector": {"matchLabels": {"agentpool": NAME}}}
        ]
    }
    with pytest.raises(InvalidRequest):
        machine_sync.customize({"object": make_machine()})


def test_requests_that_are_not_metacontroller_requests_are_rejected():
    for body in (
        None,
        [],
        {},
        {"object": {}},
        {"object": {"kind": "Pod", "metadata": {"name": "x"}}},
        {"object": make_machine(), "related": []},
    ):
        with pytest.raises(InvalidRequest):
            machine_object(body)
