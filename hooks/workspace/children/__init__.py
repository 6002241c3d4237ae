"""The children a planned Workspace asks Metacontroller for, in a stable order."""

from __future__ import annotations

from hooks.settings import Settings
from hooks.workspace.api import Workspace
from hooks.workspace.children import (
    adapter_report,
    live_adapters,
    router,
    services,
    tuning_job,
    wake_front,
    workload,
)
from hooks.workspace.nodes import IdleMachine, machine
from hooks.workspace.planning import PresetServing, TuningPlan, WorkloadPlan


def desired_children(
    ws: Workspace,
    plan: WorkloadPlan,
    machine_names: tuple[str, ...],
    settings: Settings,
    adapter_nodes: list[str] | None = None,
    idle_machines: tuple[IdleMachine, ...] = (),
    machine_modes: dict[str, str] | None = None,
    deallocated: tuple[str, ...] = (),
) -> list[dict]:
    """Machines for missing nodes (and the idle or deallocated ones kept, each with its own scaleDownMode from
    `machine_modes`), then the tuning ConfigMap and Job, or the serving workload and its Services
    (and, for several SGLang replicas, the router in front of them), then a preset's desired adapter set and
    the Jobs fetching its adapters onto `adapter_nodes`."""
    modes = machine_modes or {}
    children = [machine(ws, name, plan, scale_down_mode=modes.get(name)) for name in machine_names]
    children += [
        machine(ws, m.name, plan, idle_since=m.since, scale_down_mode=modes.get(m.name), deallocate=True)
        for m in idle_machines
    ]
    children += [machine(ws, name, plan, scale_down_mode=modes.get(name), deallocate=True) for name in deallocated]
    if isinstance(plan, TuningPlan):
        cm = tuning_job.config_map(ws, plan)
        if cm is not None:
            children.append(cm)
        children.append(tuning_job.job(ws, plan, settings))
    else:
        adapters = []
        if isinstance(plan, PresetServing):
            adapters = live_adapters.children(ws, plan, adapter_nodes or [], workload.runtime_image(plan, settings))
        # The order of request.CHILD_TYPES (what an invalid Workspace keeps): ConfigMap, workload, Jobs, Services.
        children += [c for c in adapters if c["kind"] == "ConfigMap"]
        children.append(workload.workload(ws, plan, settings))
        children += [c for c in adapters if c["kind"] == "Job"]
        children += services.services(ws, plan)
        if adapters:
            children += adapter_report.children(ws)
        if router.uses_router(plan):
            children += router.children(ws, plan, settings)
        if plan.scale_to_zero is not None and isinstance(plan, PresetServing):
            children += wake_front.children(ws, plan, plan.scale_to_zero, settings)
    return children
