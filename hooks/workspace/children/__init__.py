"""The children a planned Workspace asks Metacontroller for, in a stable order."""

from __future__ import annotations

from hooks.settings import Settings
from hooks.workspace.api import Workspace
from hooks.workspace.children import machines, router, services, statefulset, tuning_job
from hooks.workspace.planning import TuningPlan, WorkloadPlan


def desired_children(ws: Workspace, plan: WorkloadPlan, machine_names: tuple[str, ...], settings: Settings) -> list[dict]:
    """Machines for missing nodes, then the tuning ConfigMap and Job, or the serving workload and its Services
    (and, for several SGLang replicas, the router in front of them)."""
    children = [machines.machine(ws, name, plan) for name in machine_names]
    if isinstance(plan, TuningPlan):
        cm = tuning_job.config_map(ws, plan)
        if cm is not None:
            children.append(cm)
        children.append(tuning_job.job(ws, plan, settings))
    else:
        children.append(statefulset.workload(ws, plan, settings))
        children += services.services(ws, plan)
        if router.uses_router(plan):
            children += router.children(ws, plan, settings)
    return children
