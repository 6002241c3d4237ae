"""A Deallocate Machine (spec.scaleDownMode: Deallocate): its pool is created with a Managed OS disk, the
kaito.sh/deallocate annotation scales it to count 0 (the VM deallocated, its disk kept) and removing the annotation
scales it back to 1 (the same VM started). Driven through the real SDK against the local fake ARM."""

from __future__ import annotations

import jsonschema
import pytest

pytest.importorskip("azure.mgmt.containerservice", reason="azure-mgmt-containerservice is not installed")

from arm_support.fake_arm import INSTALL_ID
from arm_support.pools import agent_pools
from machine_support import NAME, conditions, hook_request, make_machine, make_node
from test_machine_sync import machine_schema  # noqa: F401  (fixture)

from hooks.machine import sync as machine_sync
from hooks.machine.arm_client import pool_from_rest
from hooks.machine.deadline import DeadlinePools
from hooks.machine.pools import Pool, count_to_put, pool_body
from hooks.machine.request import DEALLOCATE_ANNOTATION, read_machine

pytestmark = pytest.mark.integration  # starts a local HTTPS fake ARM server


def deallocate_machine(marked: bool = False, mode: str = "Deallocate") -> dict:
    machine = make_machine()
    machine["spec"]["scaleDownMode"] = mode
    if marked:
        machine["metadata"]["annotations"] = {DEALLOCATE_ANNOTATION: "true"}
    return machine


def mark(machine: dict, on: bool) -> None:
    annotations = machine["metadata"].setdefault("annotations", {})
    if on:
        annotations[DEALLOCATE_ANNOTATION] = "true"
    else:
        annotations.pop(DEALLOCATE_ANNOTATION, None)


@pytest.fixture
def pools(arm):
    return agent_pools(arm.base_url)


class Metacontroller:
    """Calls the sync hook as the hook server does (ARM calls under one per-request deadline) and writes the
    status back, as Metacontroller does."""

    def __init__(self, pools, schema, machine):
        self.pools, self.schema, self.machine, self.nodes = pools, schema, machine, []

    def sync(self):
        response = machine_sync.sync(hook_request(self.machine, self.nodes), DeadlinePools(self.pools))
        jsonschema.validate({**self.machine, "status": response["status"]}, self.schema)
        self.machine["status"] = response["status"]
        return response


def ours(count: int | None, state: str = "Succeeded", mode: str = "Deallocate") -> Pool:
    return Pool(
        name=NAME,
        provisioning_state=state,
        node_labels={"kaito.sh/machine": NAME},
        tags={"kaito-install": INSTALL_ID, "kaito-machine": NAME, "kaito-machine-namespace": "default"},
        count=count,
        scale_down_mode=mode,
    )


def test_pool_body_opts_in_only_for_a_deallocate_machine():
    plain = pool_body(read_machine(make_machine()), INSTALL_ID)["properties"]
    assert "scaleDownMode" not in plain and "osDiskType" not in plain and plain["count"] == 1
    props = pool_body(read_machine(deallocate_machine()), INSTALL_ID, count=0)["properties"]
    assert (props["scaleDownMode"], props["osDiskType"], props["count"]) == ("Deallocate", "Managed", 0)


def test_a_bad_scale_down_mode_is_an_invalid_machine(machine_schema):  # noqa: F811
    machine = read_machine(deallocate_machine(mode="Stop"))
    assert "spec.scaleDownMode 'Stop' must be one of Delete, Deallocate" in (machine.problem or "")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(deallocate_machine(mode="Stop"), machine_schema)
    jsonschema.validate(deallocate_machine(), machine_schema)


def test_count_to_put_only_for_our_settled_pool_and_only_on_a_change():
    marked, unmarked = read_machine(deallocate_machine(marked=True)), read_machine(deallocate_machine())
    assert count_to_put(marked, ours(1), INSTALL_ID) == 0
    assert count_to_put(marked, ours(0), INSTALL_ID) is None  # already there: never twice
    assert count_to_put(marked, ours(1, state="Updating"), INSTALL_ID) is None  # ARM busy: wait
    assert count_to_put(unmarked, ours(0), INSTALL_ID) == 1
    assert count_to_put(unmarked, ours(1), INSTALL_ID) is None
    foreign = Pool(name=NAME, provisioning_state="Succeeded", count=1, tags={"kaito-install": "other"})
    assert count_to_put(marked, foreign, INSTALL_ID) is None
    # A Delete Machine ignores the mark: its pool is only ever created and deleted.
    plain_marked = make_machine()
    plain_marked["metadata"]["annotations"] = {DEALLOCATE_ANNOTATION: "true"}
    assert count_to_put(read_machine(plain_marked), ours(1, mode="Delete"), INSTALL_ID) is None


def test_pool_from_rest_reads_count_and_scale_down_mode():
    pool = pool_from_rest({"name": "p", "properties": {"provisioningState": "Succeeded", "count": 0}})
    assert (pool.count, pool.scale_down_mode) == (0, "Delete")
    body = {"properties": {"provisioningState": "Succeeded", "count": 1, "scaleDownMode": "Deallocate"}}
    assert (pool_from_rest(body).count, pool_from_rest(body).scale_down_mode) == (1, "Deallocate")


def test_deallocate_then_wake_puts_count_0_then_1_once_each(arm, pools, machine_schema):  # noqa: F811
    mc = Metacontroller(pools, machine_schema, deallocate_machine())
    mc.sync()
    (create,) = arm.calls("PUT", NAME)
    assert create.headers.get("if-none-match") == "*"
    assert create.body["properties"]["osDiskType"] == "Managed"
    arm.set_state(NAME, "Succeeded")
    mc.nodes = [make_node()]
    assert conditions(mc.sync())["Ready"]["status"] == "True"
    arm.write_disk(NAME, "weights:phi-3")

    mark(mc.machine, True)
    first = mc.sync()
    puts = arm.calls("PUT", NAME)
    assert len(puts) == 2 and puts[1].body["properties"]["count"] == 0
    assert "if-none-match" not in puts[1].headers  # an update, not a create
    c = conditions(first)
    assert (c["Ready"]["status"], c["Ready"]["reason"]) == ("False", "Deallocated")
    assert "being deallocated" in c["Ready"]["message"] and first["resyncAfterSeconds"] > 0
    (vm,) = arm.pool_nodes(NAME)
    assert vm["power"] == "Deallocated" and vm["disk"] == {"weights:phi-3": True}

    mc.sync()  # ARM still Updating: no second PUT
    arm.set_state(NAME, "Succeeded")
    mc.nodes = [make_node(ready=False)]  # the node stays registered, NotReady
    settled = mc.sync()
    assert len(arm.calls("PUT", NAME)) == 2
    c = conditions(settled)
    assert c["Ready"]["reason"] == "Deallocated" and "resyncAfterSeconds" not in settled
    assert "weights cache, is kept" in c["Ready"]["message"]
    assert f"kubectl delete machine {NAME} -n default" in c["Ready"]["message"]
    assert c["Registered"]["status"] == "True" and c["Launched"]["status"] == "True"

    mark(mc.machine, False)
    waking = mc.sync()
    puts = arm.calls("PUT", NAME)
    assert len(puts) == 3 and puts[2].body["properties"]["count"] == 1
    assert conditions(waking)["Ready"]["reason"] == "Starting"
    (vm,) = arm.pool_nodes(NAME)
    assert vm["power"] == "Running" and vm["starts"] == 2 and vm["disk"] == {"weights:phi-3": True}
    mc.sync()
    arm.set_state(NAME, "Succeeded")
    mc.nodes = [make_node()]
    assert conditions(mc.sync())["Ready"]["status"] == "True"
    assert len(arm.calls("PUT", NAME)) == 3


def test_a_delete_machine_never_scales_its_pool(arm, pools, machine_schema):  # noqa: F811
    machine = make_machine()
    mc = Metacontroller(pools, machine_schema, machine)
    mc.sync()
    arm.set_state(NAME, "Succeeded")
    mark(mc.machine, True)
    mc.nodes = [make_node()]
    assert conditions(mc.sync())["Ready"]["status"] == "True"
    assert len(arm.calls("PUT", NAME)) == 1


def test_a_foreign_pool_is_never_scaled(arm, pools, machine_schema):  # noqa: F811
    arm.add_foreign_pool(NAME)
    mc = Metacontroller(pools, machine_schema, deallocate_machine(marked=True))
    assert conditions(mc.sync())["Ready"]["reason"] == "PoolNameConflict"
    assert arm.calls("PUT") == []


def test_arm_refusing_deallocate_shows_on_the_machine(arm, pools, machine_schema):  # noqa: F811
    """A pool created Ephemeral (by hand, or before the opt-in) cannot be deallocated: ARM's refusal is the
    Machine's Ready message, and the pool is left as it was."""
    mc = Metacontroller(pools, machine_schema, deallocate_machine())
    mc.sync()
    arm.set_state(NAME, "Succeeded")
    arm.state.pools[NAME]["properties"]["osDiskType"] = "Ephemeral"
    mark(mc.machine, True)
    response = mc.sync()
    c = conditions(response)
    assert (c["Ready"]["status"], c["Ready"]["reason"]) == ("False", "ScaleRefused")
    assert "ARM refused to scale AKS agent pool" in c["Ready"]["message"]
    assert "PropertyChangeNotAllowed" in c["Ready"]["message"]
    assert arm.state.pools[NAME]["properties"]["count"] == 1
