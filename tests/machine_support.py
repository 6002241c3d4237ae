"""Machine hook requests as Metacontroller sends them, and the objects in them (shared by the Machine tests)."""

from __future__ import annotations

import copy

NAME = "ws3f9a0c12d4"
VM = "Standard_NC24ads_A100_v4"


def make_machine(name=NAME, vm=VM, storage="120Gi", **extra_labels):
    """A Machine as the workspace hook creates it (the shared contract)."""
    labels = {
        "kaito.sh/workspace": "workspace-phi-3",
        "kaito.sh/workspacenamespace": "default",
        "kaito.sh/machine-type": "gpu",
        "apps": "phi-3",
        **extra_labels,
    }
    return {
        "apiVersion": "kaito.sh/v1alpha1",
        "kind": "Machine",
        "metadata": {
            "name": name,
            "namespace": "default",
            "uid": "5e0c1b7a-0000-4000-8000-000000000001",
            "creationTimestamp": "2026-11-26T11:00:00Z",
            "labels": labels,
        },
        "spec": {
            "requirements": [
                {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": [vm]},
                {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
                {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
            ],
            "taints": [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}],
            "resources": {"requests": {"storage": storage}},
        },
    }


def make_node(pool=NAME, ready=True, gpus="1", heartbeat="2026-11-26T11:20:00Z"):
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": f"aks-{pool}-12345678-vmss000000",
            "creationTimestamp": "2026-11-26T11:10:00Z",
            "labels": {"agentpool": pool, "kubernetes.azure.com/agentpool": pool},
        },
        "spec": {
            "providerID": (
                "azure:///subscriptions/sub/resourceGroups/mc_rg/providers/Microsoft.Compute/"
                f"virtualMachineScaleSets/aks-{pool}-12345678-vmss/virtualMachines/0"
            )
        },
        "status": {
            "allocatable": {"cpu": "23", "nvidia.com/gpu": gpus} if gpus else {"cpu": "23"},
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True" if ready else "False",
                    "reason": "KubeletReady" if ready else "KubeletNotReady",
                    "message": "kubelet is posting ready status" if ready else "container runtime network not ready",
                    "lastTransitionTime": "2026-11-26T11:15:00Z",
                    "lastHeartbeatTime": heartbeat,
                }
            ],
        },
    }


def hook_request(machine, nodes=(), finalizing=False):
    return {
        "controller": {"apiVersion": "metacontroller.k8s.io/v1alpha1", "kind": "DecoratorController"},
        "object": copy.deepcopy(machine),
        "attachments": {},
        "related": {"Node.v1": {n["metadata"]["name"]: copy.deepcopy(n) for n in nodes}},
        "finalizing": finalizing,
    }


def conditions(response):
    return {c["type"]: c for c in response["status"]["conditions"]}
