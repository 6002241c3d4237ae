"""A serving Machine is never dropped for a node that is not ours: other matching nodes
only cover a shortfall. Driven through the Workspace sync hook, as Metacontroller calls it."""

from __future__ import annotations

from workspace_support import condition, find, llama_70b_on_two_nodes, node, request, workspace

from hooks.metacontroller import MACHINES
from hooks.settings import Settings
from hooks.workspace.sync import sync

NOW = "2026-11-26T12:00:00Z"
A100 = {"node.kubernetes.io/instance-type": "Standard_NC24ads_A100_v4"}


def run(parent, **kw):
    return sync(request(parent, **kw), Settings(), NOW)


def machines(response):
    return sorted(c["metadata"]["name"] for c in response["children"] if c["kind"] == "Machine")


def ready_machine(first):
    machine = find(first["children"], "Machine")
    return {
        **machine,
        "status": {
            "nodeName": "aks-ws-0",
            "conditions": [{"type": "Ready", "status": "True", "reason": "Ready", "message": "node aks-ws-0 is Ready"}],
        },
    }


def test_a_foreign_node_turning_ready_does_not_displace_a_ready_machine():
    first = run(workspace())
    machine = ready_machine(first)
    ours = node("aks-ws-0", {"apps": "phi-3", "kaito.sh/machine": machine["metadata"]["name"], **A100})
    foreign = node("gpu-foreign", {"apps": "phi-3", **A100})  # matches the selector and size, not ours
    response = run(workspace(), children={MACHINES: [machine]}, nodes=[ours, foreign])
    assert machines(response) == [machine["metadata"]["name"]]
    assert response["status"]["workerNodes"] == ["aks-ws-0"]
    assert condition(response, "ResourceReady")["status"] == "True"


def test_a_foreign_node_still_covers_a_shortfall():
    ws = llama_70b_on_two_nodes()
    size = {"node.kubernetes.io/instance-type": "Standard_NC96ads_A100_v4"}
    first = run(ws)
    assert len(machines(first)) == 2
    kept = {
        **find(first["children"], "Machine"),
        "status": {
            "nodeName": "aks-a",
            "conditions": [{"type": "Ready", "status": "True", "reason": "Ready", "message": "ok"}],
        },
    }
    foreign = node("gpu-foreign", {"apps": "ll", **size}, gpus=4)
    response = run(ws, children={MACHINES: [kept]}, nodes=[foreign])
    assert machines(response) == [kept["metadata"]["name"]]  # the second Machine is not needed any more
    assert sorted(response["status"]["workerNodes"]) == ["aks-a", "gpu-foreign"]


def test_a_machine_still_on_its_way_gives_way_to_a_ready_foreign_node():
    first = run(workspace())
    creating = {
        **find(first["children"], "Machine"),
        "status": {"conditions": [{"type": "Ready", "status": "Unknown", "reason": "Creating", "message": "creating"}]},
    }
    response = run(workspace(), children={MACHINES: [creating]}, nodes=[node("gpu-foreign", {"apps": "phi-3", **A100})])
    assert machines(response) == []
    assert response["status"]["workerNodes"] == ["gpu-foreign"]
