"""Agent pool names are cluster-wide, Machines are namespaced, and several installs may be pointed at one
cluster: a Machine adopts or deletes a pool only when the pool's tags name this install and this very
Machine (namespace and name); any other pool of its name is reported as a PoolNameConflict and never
touched, and the orphan sweep matches pools to Machines by namespace and name within this install.
Real SDK against the local fake ARM (Azure's servers are unreachable here)."""

from __future__ import annotations

import copy
import datetime
import json

import pytest
from arm_support.fake_arm import INSTALL_ID
from arm_support.pools import agent_pools
from machine_support import NAME, conditions, hook_request, make_machine, make_node

pytest.importorskip("azure.mgmt.containerservice", reason="azure-mgmt-containerservice is not installed")

from hooks import naming
from hooks.machine import sweep
from hooks.machine import sync as machine_sync

pytestmark = pytest.mark.integration

OTHER_INSTALL = "0c0ffee0-0000-4000-8000-0000000000b2"
AFTER_GRACE = datetime.datetime(2026, 11, 26, 12, 0, tzinfo=datetime.UTC) + datetime.timedelta(
    seconds=sweep.GRACE_SECONDS + 60
)


def pools_for(arm, install_id=INSTALL_ID):
    return agent_pools(arm.base_url, install_id=install_id)


def in_namespace(namespace: str, name: str = NAME) -> dict:
    machine = make_machine(name=name)
    machine["metadata"]["namespace"] = namespace
    machine["metadata"]["labels"]["kaito.sh/workspacenamespace"] = namespace
    return machine


def launch(arm, machine: dict, install_id: str = INSTALL_ID) -> None:
    """The owner's Machine creates its pool, which comes up."""
    machine_sync.sync(hook_request(machine), pools_for(arm, install_id))
    arm.set_state(machine["metadata"]["name"], "Succeeded")


def hand_made_pool(arm, name: str, tags: dict[str, str]) -> None:
    """A pool with our node label and the given tags, made outside this install (e.g. by an older version)."""
    with arm._lock:
        arm.state.pools[name] = arm._pool(
            name,
            {
                "vmSize": "Standard_NC24ads_A100_v4",
                "count": 1,
                "nodeLabels": {"kaito.sh/machine": name},
                "tags": tags,
            },
            "Succeeded",
        )


def attempt_takeover(arm, machine: dict) -> tuple[bool, int, dict]:
    """A stranger's Machine of the same name runs its whole life: (adopted, DELETEs sent, last status)."""
    before = len(arm.calls("DELETE"))
    pools = pools_for(arm)
    stranger = copy.deepcopy(machine)
    synced = machine_sync.sync(hook_request(stranger, nodes=[make_node()]), pools)
    stranger["status"] = synced["status"]
    launched = conditions(synced)["Launched"]["status"] == "True"
    final = machine_sync.finalize(hook_request(stranger, finalizing=True), pools)
    assert final["finalized"] is True  # the stranger's Machine is not kept hostage either
    return launched, len(arm.calls("DELETE")) - before, synced


FOREIGN_POOLS = {
    "same name, another namespace": lambda arm: launch(arm, in_namespace("team-a")),
    "same namespace and name, another install": lambda arm: launch(arm, in_namespace("team-b"), OTHER_INSTALL),
    "our labels and name tag, no install tag": lambda arm: hand_made_pool(
        arm, NAME, {"kaito-machine": NAME, "kaito-workspace-namespace": "team-b"}
    ),
    "our install, no namespace tag": lambda arm: hand_made_pool(
        arm, NAME, {"kaito-machine": NAME, "kaito-install": INSTALL_ID}
    ),
}


@pytest.mark.parametrize("case", list(FOREIGN_POOLS))
def test_a_foreign_pool_of_the_machines_name_is_reported_and_never_touched(arm, case):
    FOREIGN_POOLS[case](arm)
    puts = len(arm.calls("PUT"))
    adopted, deleted, synced = attempt_takeover(arm, in_namespace("team-b"))
    assert (adopted, deleted) == (False, 0)
    assert len(arm.calls("PUT")) == puts  # never PUT over it either
    ready = conditions(synced)["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "PoolNameConflict")
    assert "team-b/" + NAME in ready["message"] and "left untouched" in ready["message"]
    assert NAME in arm.state.pools


def test_no_foreign_pool_is_adopted_or_deleted_in_any_case(arm):
    """Every foreign-pool case in turn against one fake ARM: adopted and deleted pools are counted."""
    adopted = deleted = 0
    for case in FOREIGN_POOLS.values():
        arm.state.pools.clear()
        case(arm)
        took, removed, _ = attempt_takeover(arm, in_namespace("team-b"))
        adopted += took
        deleted += removed
    print(f"foreign pools adopted: {adopted}, deleted: {deleted} (of {len(FOREIGN_POOLS)} cases)")
    assert (adopted, deleted) == (0, 0)


def test_the_owner_still_adopts_and_deletes_its_own_pool(arm):
    owner = in_namespace("team-a")
    launch(arm, owner)
    synced = machine_sync.sync(hook_request(owner, nodes=[make_node()]), pools_for(arm))
    assert conditions(synced)["Launched"]["status"] == "True"
    machine_sync.finalize(hook_request(owner, finalizing=True), pools_for(arm))
    assert [c.path.rsplit("/", 1)[1] for c in arm.calls("DELETE")] == [NAME]


def sweep_request(machines: list[dict]) -> dict:
    related = {
        "Machine.kaito.sh/v1alpha1": {f"{m['metadata']['namespace']}/{m['metadata']['name']}": m for m in machines},
        "Service.v1": {"kaito-system/kaito-hooks": {"metadata": {"name": "kaito-hooks"}}},
    }
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kaito-system"}}
    return {"controller": {"kind": "DecoratorController"}, "object": namespace, "related": related}


def test_a_same_named_machine_elsewhere_does_not_keep_an_orphan_alive(arm):
    launch(arm, in_namespace("team-a"))  # team-a's Machine is gone now; team-b has one of the same name
    answer = sweep.sweep(sweep_request([in_namespace("team-b")]), pools_for(arm), now=AFTER_GRACE)
    assert [c.path.rsplit("/", 1)[1] for c in arm.calls("DELETE")] == [NAME]
    assert (
        f"no Machine team-a/{NAME} exists" in json.loads(answer["annotations"][sweep.REPORT_ANNOTATION])["deleted"][0]
    )


def test_the_sweep_never_deletes_pools_of_another_install_or_without_an_install_tag(arm):
    launch(arm, in_namespace("team-a", "wsotherinst1"), OTHER_INSTALL)
    hand_made_pool(arm, "wsnoinstall1", {"kaito-machine": "wsnoinstall1", "kaito-workspace-namespace": "team-a"})
    launch(arm, in_namespace("team-a", "wsours000001"))
    sweep.sweep(sweep_request([]), pools_for(arm), now=AFTER_GRACE)
    assert [c.path.rsplit("/", 1)[1] for c in arm.calls("DELETE")] == ["wsours000001"]


def test_machine_names_use_all_the_entropy_a_pool_name_allows():
    names = [naming.machine_name("team", f"ws{i}", i % 3) for i in range(3000)]
    assert len(set(names)) == len(names)
    assert all(naming.MACHINE_NAME.match(n) and len(n) == 12 for n in names)
    assert len({n[0] for n in names}) == 26  # any letter first
    for position in range(1, 12):
        assert len({n[position] for n in names}) == 36  # any letter or digit after it
    assert naming.machine_name("team", "ws", 0) == naming.machine_name("team", "ws", 0)  # stable
