"""A Workspace with `kaito.sh/scale-down-mode: Deallocate`: at 0 replicas (or on a scale-in) its Machines are kept
and marked to deallocate, so their pools go to count 0 with the OS disk (and the weights cache on it) kept, and a
scale-up starts the same VMs again instead of creating pools.

This plays Metacontroller around both hooks, as tests/test_machine_scale_flips.py does: the Workspace hook's
desired Machines go through the Machine hook against the local fake ARM, and each pool's node is Ready while its
VM runs and NotReady (kept registered) while it is deallocated, as AKS leaves it."""

from __future__ import annotations

import copy
import datetime

import jsonschema
import pytest
import yaml
from arm_support.pools import agent_pools
from crd_support import cel_violations, schema_root, workspace_schema
from machine_support import hook_request
from workspace_support import MACHINES, REPO, condition, find, request, workspace

pytest.importorskip("azure.mgmt.containerservice", reason="azure-mgmt-containerservice is not installed")

from hooks.machine import sync as machine_sync
from hooks.machine.request import DEALLOCATE_ANNOTATION
from hooks.settings import Settings
from hooks.workspace.scale_to_zero import SCALE_DOWN_MODE_ANNOTATION
from hooks.workspace.sync import sync

pytestmark = pytest.mark.integration

NOW = datetime.datetime(2026, 11, 26, 12, 0, tzinfo=datetime.UTC)
A100 = "Standard_NC24ads_A100_v4"  # has local NVMe


def stamp(minutes: int) -> str:
    return (NOW + datetime.timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")


def deallocating_workspace(mode: str | None = "Deallocate") -> dict:
    ws = workspace(
        resource={"instanceType": A100, "count": 1, "labelSelector": {"matchLabels": {"apps": "phi-3"}}},
        inference={"preset": {"name": "phi-3-mini-4k-instruct"}},
    )
    if mode is not None:
        ws["metadata"]["annotations"] = {SCALE_DOWN_MODE_ANNOTATION: mode}
    return ws


class Cluster:
    """Machines (with the status the Machine hook gave them) and their pools' Nodes."""

    def __init__(self, arm, ws: dict):
        self.arm, self.ws = arm, ws
        self.pools = agent_pools(arm.base_url)
        self.machines: dict[str, dict] = {}
        self.nodes: dict[str, dict] = {}
        self.minute = 0

    def node_for(self, name: str, labels: dict, running: bool) -> dict:
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": f"aks-{name}-vmss000000",
                "labels": {
                    **labels,
                    "agentpool": name,
                    "kaito.sh/machine": name,
                    "node.kubernetes.io/instance-type": A100,
                },
            },
            "status": {
                "allocatable": {"nvidia.com/gpu": "1"},
                "conditions": [{"type": "Ready", "status": "True" if running else "False"}],
            },
        }

    def workspace_sync(self, replicas: int) -> dict:
        self.minute += 1
        self.ws["spec"] = {"replicas": replicas}
        answer = sync(
            request(self.ws, {MACHINES: list(self.machines.values())}, list(self.nodes.values())),
            Settings(),
            stamp(self.minute),
        )
        self.ws["status"] = answer["status"]
        return answer

    def reconcile(self, replicas: int) -> dict:
        """One Workspace sync, Metacontroller applying its Machines (spec immutable: a changed spec is an error),
        the Machine hook syncing each until ARM settles, and AKS's nodes following the pools' VMs."""
        answer = self.workspace_sync(replicas)
        desired = {c["metadata"]["name"]: c for c in answer["children"] if c["kind"] == "Machine"}
        for name in list(self.machines):
            if name not in desired:
                del self.machines[name]
        for name, wanted in desired.items():
            current = self.machines.get(name)
            machine = copy.deepcopy(wanted)
            if current is not None:
                assert machine["spec"] == current["spec"], "a Machine's spec is immutable"
                machine["status"] = current.get("status")
            self.machines[name] = machine
            for _ in range(2):  # the PUT, then ARM settled
                node = self.nodes.get(f"aks-{name}-vmss000000")
                response = machine_sync.sync(hook_request(machine, [node] if node else []), self.pools)
                machine["status"] = response["status"]
                self.arm.set_state(name, "Succeeded")
                vms = self.arm.pool_nodes(name)
                running = any(vm["power"] == "Running" for vm in vms)
                if vms:
                    self.nodes[f"aks-{name}-vmss000000"] = self.node_for(name, machine["metadata"]["labels"], running)
        return self.workspace_sync(replicas)


def test_a_bad_scale_down_mode_is_refused_naming_the_annotation_and_the_values():
    answer = sync(request(deallocating_workspace("Stop")), Settings(), stamp(0))
    message = condition(answer, "ResourceReady")["message"]
    assert f"metadata.annotations[{SCALE_DOWN_MODE_ANNOTATION}]" in message
    assert "'Stop' is not a scale-down mode; use Delete or Deallocate" in message


def test_machines_carry_the_mode_only_when_opted_in():
    plain = find(sync(request(deallocating_workspace(None)), Settings(), stamp(0))["children"], "Machine")
    assert "scaleDownMode" not in plain["spec"]
    explicit = find(sync(request(deallocating_workspace("Delete")), Settings(), stamp(0))["children"], "Machine")
    assert explicit == plain
    opted = find(sync(request(deallocating_workspace()), Settings(), stamp(0))["children"], "Machine")
    assert opted["spec"]["scaleDownMode"] == "Deallocate" and "annotations" not in opted["metadata"]


def test_the_weights_cache_of_a_deallocate_workspace_stays_on_the_os_disk():
    def cache_path(ws):
        children = sync(request(ws), Settings(), stamp(0))["children"]
        volumes = find(children, "Deployment")["spec"]["template"]["spec"]["volumes"]
        return next(v["hostPath"]["path"] for v in volumes if "hostPath" in v)

    assert cache_path(deallocating_workspace(None)) == Settings().weights_cache_nvme_path  # NVMe where there is one
    assert cache_path(deallocating_workspace()) == Settings().weights_cache_path


def test_zero_deallocates_the_machine_and_one_starts_the_same_vm(arm):
    cluster = Cluster(arm, deallocating_workspace())
    cluster.reconcile(1)
    (name,) = cluster.machines
    assert arm.calls("PUT", name)[0].body["properties"]["osDiskType"] == "Managed"
    assert condition(cluster.reconcile(1), "ResourceReady")["status"] == "True"
    arm.write_disk(name, "weights:phi-3")

    at_zero = cluster.reconcile(0)
    machine = cluster.machines[name]
    assert machine["metadata"]["annotations"] == {DEALLOCATE_ANNOTATION: "true"}
    puts = arm.calls("PUT", name)
    assert [p.body["properties"]["count"] for p in puts] == [1, 0]
    (vm,) = arm.pool_nodes(name)
    assert vm["power"] == "Deallocated" and vm["disk"] == {"weights:phi-3": True}
    ready = {c["type"]: c for c in machine["status"]["conditions"]}["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "Deallocated")
    resource = condition(at_zero, "ResourceReady")
    assert resource["reason"] == "ScaledToZero" and "1 GPU node(s) deallocated" in resource["message"]
    assert at_zero["status"]["scaleToZero"]["deallocatedNodes"] == 1
    # The deallocated node is NotReady and never counts as ready capacity.
    assert cluster.nodes[f"aks-{name}-vmss000000"]["status"]["conditions"][0]["status"] == "False"
    cluster.reconcile(0)
    assert len(arm.calls("PUT", name)) == 2  # no second count-0 PUT

    waking = cluster.workspace_sync(1)
    assert waking["status"]["scaleToZero"] == {"state": "Waking", "phase": "nodeStart", "since": stamp(cluster.minute)}
    assert condition(waking, "ResourceReady")["status"] == "False"
    awake = cluster.reconcile(1)
    assert "annotations" not in cluster.machines[name]["metadata"]
    assert [p.body["properties"]["count"] for p in arm.calls("PUT", name)] == [1, 0, 1]
    (vm,) = arm.pool_nodes(name)
    assert vm["power"] == "Running" and vm["starts"] == 2 and "weights:phi-3" in vm["disk"]
    assert condition(awake, "ResourceReady")["status"] == "True"
    assert list(cluster.machines) == [name] and arm.calls("DELETE") == []


def test_an_existing_machine_keeps_its_spec_when_the_annotation_changes(arm):
    cluster = Cluster(arm, deallocating_workspace(None))
    cluster.reconcile(1)
    (name,) = cluster.machines
    cluster.ws["metadata"]["annotations"] = {SCALE_DOWN_MODE_ANNOTATION: "Deallocate"}
    cluster.reconcile(1)  # asserts the spec unchanged
    assert "scaleDownMode" not in cluster.machines[name]["spec"]
    # A Delete Machine is never deallocated: at 0 it is released as before (after the scale-in grace period).
    at_zero = cluster.reconcile(0)
    assert at_zero["status"].get("scaleToZero", {}).get("deallocatedNodes") is None
    assert [p.body["properties"]["count"] for p in arm.calls("PUT", name)] == [1]


def test_a_scale_in_deallocates_the_freed_machine_and_a_scale_out_starts_it_first(arm):
    cluster = Cluster(arm, deallocating_workspace())
    cluster.reconcile(2)
    first, second = sorted(cluster.machines)
    cluster.reconcile(1)
    assert DEALLOCATE_ANNOTATION not in cluster.machines[first]["metadata"].get("annotations", {})
    assert cluster.machines[second]["metadata"]["annotations"] == {DEALLOCATE_ANNOTATION: "true"}
    assert arm.pool_nodes(second)[0]["power"] == "Deallocated"
    cluster.reconcile(2)
    assert sorted(cluster.machines) == [first, second]  # no new pool: the deallocated one is started
    assert [p.body["properties"]["count"] for p in arm.calls("PUT", second)] == [1, 0, 1]
    assert len(arm.calls("PUT")) == 4 and arm.calls("DELETE") == []


def test_bring_your_own_nodes_say_the_mode_has_no_effect():
    byo = Settings(node_provisioning="byo")
    answer = sync(request(deallocating_workspace()), byo, stamp(0))
    assert (
        "scale-down-mode Deallocate has no effect with bring-your-own nodes"
        in condition(answer, "ResourceReady")["message"]
    )
    assert not [c for c in answer["children"] if c["kind"] == "Machine"]
    plain = sync(request(deallocating_workspace(None)), byo, stamp(0))
    assert "scale-down-mode" not in condition(plain, "ResourceReady")["message"]


def test_the_example_passes_the_crd_and_opts_in():
    example = yaml.safe_load((REPO / "examples" / "scale-to-zero" / "workspace-phi-3-deallocate.yaml").read_text())
    jsonschema.validate(example, workspace_schema())
    assert cel_violations(schema_root(), example) == []
    ws = {**example, "metadata": {**example["metadata"], "namespace": "default", "uid": "u"}}
    children = sync(request(ws), Settings(), stamp(0))["children"]
    assert find(children, "Machine")["spec"]["scaleDownMode"] == "Deallocate"
    assert find(children, "Deployment", "workspace-phi-3-deallocate-front")
