"""Scale-in hysteresis: a Machine freed by a scale-in is kept for a settable grace period
(KAITO_SCALE_IN_GRACE_SECONDS) and re-used by the next scale-out, so a scaler flapping spec.replicas between
64 and 1 does not delete and re-create agent pools each time.

This plays Metacontroller around both hooks: the Workspace hook's desired Machines are created through the
Machine hook (a PUT to the local fake ARM), Machines it no longer returns are finalized (a DELETE); a created
pool's node joins at once, and the Deployment's pods sit on the nodes of the Machines in use. Azure's servers
are the only thing faked (tests/arm_support/fake_arm.py)."""

from __future__ import annotations

import copy
import dataclasses
import datetime

import pytest
from arm_support.pools import agent_pools
from machine_support import hook_request
from workspace_support import MACHINES, request, workspace

pytest.importorskip("azure.mgmt.containerservice", reason="azure-mgmt-containerservice is not installed")

from hooks.machine import sync as machine_sync
from hooks.settings import Settings
from hooks.workspace.nodes import IDLE_SINCE_ANNOTATION
from hooks.workspace.sync import sync

pytestmark = pytest.mark.integration

START = datetime.datetime(2026, 11, 26, 12, 0, tzinfo=datetime.UTC)
FLIPS = [64, 1] * 5  # ten flips of spec.replicas, one a minute
A100 = "Standard_NC24ads_A100_v4"


def stamp(t: datetime.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


class Cluster:
    """Machines, Nodes and pods as Metacontroller, AKS and the Deployment would leave them."""

    def __init__(self, arm, settings: Settings):
        self.arm, self.settings = arm, settings
        self.pools = agent_pools(arm.base_url)
        self.machines: dict[str, dict] = {}
        self.nodes: dict[str, dict] = {}
        self.ws = workspace(
            resource={"instanceType": A100, "count": 1, "labelSelector": {"matchLabels": {"apps": "phi-3"}}},
            inference={"preset": {"name": "phi-3-mini-4k-instruct"}},
        )
        self.pods: list[dict] = []

    def node_for(self, machine: dict) -> dict:
        name = machine["metadata"]["name"]
        labels = {**machine["metadata"]["labels"], "agentpool": name, "kaito.sh/machine": name,
                  "node.kubernetes.io/instance-type": A100}  # fmt: skip
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": f"aks-{name}-vmss000000", "labels": labels},
            "status": {
                "allocatable": {"nvidia.com/gpu": "1"},
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        }

    def reconcile(self, replicas: int, now: datetime.datetime) -> dict:
        self.ws["spec"] = {"replicas": replicas}
        answer = sync(
            request(self.ws, {MACHINES: list(self.machines.values())}, list(self.nodes.values()), self.pods),
            self.settings,
            stamp(now),
        )
        desired = {c["metadata"]["name"]: c for c in answer["children"] if c["kind"] == "Machine"}
        for name, machine in desired.items():
            if name not in self.machines:
                machine_sync.sync(hook_request(machine), self.pools)  # the PUT
                self.arm.set_state(name, "Succeeded")
                node = self.node_for(machine)
                self.nodes[node["metadata"]["name"]] = node
                created = copy.deepcopy(machine)
                created["status"] = {
                    "nodeName": node["metadata"]["name"],
                    "conditions": [{"type": "Ready", "status": "True", "reason": "Ready", "message": "ready"}],
                }
                self.machines[name] = created
            else:
                self.machines[name]["metadata"] = copy.deepcopy(machine["metadata"])  # Metacontroller applies it
        for name in [n for n in self.machines if n not in desired]:
            machine_sync.finalize(hook_request(self.machines[name], finalizing=True), self.pools)  # the DELETE
            self.arm.finish_delete(name)
            self.nodes.pop(self.machines.pop(name)["status"]["nodeName"], None)
        in_use = sorted(
            m["status"]["nodeName"]
            for m in self.machines.values()
            if IDLE_SINCE_ANNOTATION not in (m["metadata"].get("annotations") or {})
        )[:replicas]
        self.pods = [
            {"metadata": {"name": f"ws1-{i}", "namespace": "team", "labels": {"kaito.sh/workspace": "ws1"}},
             "spec": {"nodeName": node}, "status": {"phase": "Running"}}
            for i, node in enumerate(in_use)
        ]  # fmt: skip
        return answer


def flip(arm, grace_s: float) -> tuple[int, int, int]:
    """(PUTs, DELETEs, Machines left) after ten flips of spec.replicas between 64 and 1, a minute apart."""
    cluster = Cluster(arm, dataclasses.replace(Settings(), scale_in_grace_seconds=grace_s))
    now = START
    for _ in range(2):
        cluster.reconcile(1, now)
    before = len(arm.calls("PUT")), len(arm.calls("DELETE"))
    for replicas in FLIPS:
        now += datetime.timedelta(minutes=1)
        for _ in range(2):  # the change, then the pods have moved
            cluster.reconcile(replicas, now)
    return len(arm.calls("PUT")) - before[0], len(arm.calls("DELETE")) - before[1], len(cluster.machines)


def test_flapping_re_uses_machines_within_the_grace_period(arm):
    puts, deletes, left = flip(arm, grace_s=600)
    print(f"ten flips 64<->1 with a 600 s grace: {puts} PUTs, {deletes} DELETEs, {left} Machines at the end")
    assert (puts, deletes) == (63, 0)
    assert left == 64  # the idle ones are kept until their grace period ends


def test_without_a_grace_period_each_scale_in_deletes_and_each_scale_out_creates(arm):
    puts, deletes, left = flip(arm, grace_s=0)
    print(f"ten flips 64<->1 without a grace period: {puts} PUTs, {deletes} DELETEs")
    assert (puts, deletes) == (5 * 63, 5 * 63) and left == 1


def test_idle_machines_are_released_once_the_grace_period_ends(arm):
    cluster = Cluster(arm, dataclasses.replace(Settings(), scale_in_grace_seconds=600))
    for _ in range(2):
        cluster.reconcile(3, START)
    for _ in range(2):
        answer = cluster.reconcile(1, START + datetime.timedelta(seconds=10))
    assert len(cluster.machines) == 3 and not arm.calls("DELETE")
    assert answer["resyncAfterSeconds"] <= 600  # Metacontroller comes back when the grace period ends
    idle = [m for m in cluster.machines.values() if IDLE_SINCE_ANNOTATION in (m["metadata"].get("annotations") or {})]
    assert [m["metadata"]["annotations"][IDLE_SINCE_ANNOTATION] for m in idle] == [
        stamp(START + datetime.timedelta(seconds=10))
    ] * 2
    cluster.reconcile(1, START + datetime.timedelta(seconds=611))
    assert len(cluster.machines) == 1 and len(arm.calls("DELETE")) == 2


def test_the_grace_period_is_a_setting_with_bounds():
    assert Settings.from_env({"KAITO_SCALE_IN_GRACE_SECONDS": "900"}).scale_in_grace_seconds == 900
    assert Settings.from_env({}).scale_in_grace_seconds == 0
    for bad in ("-1", "ten", "1e9"):
        with pytest.raises(ValueError, match="KAITO_SCALE_IN_GRACE_SECONDS"):
            Settings.from_env({"KAITO_SCALE_IN_GRACE_SECONDS": bad})
