"""The Machines a Workspace asks for: one per missing GPU node (the Machine hook makes each an AKS agent pool)."""

from __future__ import annotations

from hooks import naming
from hooks.machine.request import DEALLOCATE_ANNOTATION
from hooks.workspace.api import Workspace
from hooks.workspace.nodes import IDLE_SINCE_ANNOTATION
from hooks.workspace.planning import WorkloadPlan


def machine(
    ws: Workspace,
    name: str,
    plan: WorkloadPlan,
    idle_since: str | None = None,
    scale_down_mode: str | None = None,
    deallocate: bool = False,
) -> dict:
    """`scale_down_mode`: an existing Machine's own (its spec is immutable), else the plan's for a new one.
    A Deallocate Machine that is not running the workload (idle or kept at zero) is marked to deallocate."""
    labels = {
        **ws.match_labels,
        naming.WORKSPACE_LABEL: ws.name,
        naming.WORKSPACE_NAMESPACE_LABEL: ws.namespace,
        naming.MACHINE_TYPE_LABEL: "gpu",
    }
    spec: dict = {
        "requirements": [
            {"key": naming.INSTANCE_TYPE_LABEL, "operator": "In", "values": [plan.sku.name]},
            {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
            {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
        ],
        "taints": [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}],
        "resources": {"requests": {"storage": f"{plan.disk_gib}Gi"}},
    }
    if plan.mig is not None:  # the pool's GPUs are split into the profile's MIG slices when AKS creates it
        spec["gpuInstanceProfile"] = plan.mig.gpu_instance_profile
    mode = scale_down_mode or plan.scale_down_mode
    if mode == "Deallocate":  # the Machine hook creates the pool with a Managed OS disk
        spec["scaleDownMode"] = "Deallocate"
    metadata: dict = {"name": name, "namespace": ws.namespace, "labels": dict(sorted(labels.items()))}
    annotations = {}
    if idle_since:  # freed by a scale-in: kept through the grace period (hooks/workspace/nodes.py)
        annotations[IDLE_SINCE_ANNOTATION] = idle_since
    if mode == "Deallocate" and deallocate:
        annotations[DEALLOCATE_ANNOTATION] = "true"
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": "kaito.sh/v1alpha1", "kind": "Machine", "metadata": metadata, "spec": spec}
