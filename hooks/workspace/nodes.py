"""Which GPU nodes a Workspace runs on: existing nodes first, Machines only for the shortfall; and the
Machine child itself, observed (``machine_state``) and desired (``machine``: the Machine hook makes each an
AKS agent pool)."""

from __future__ import annotations

from dataclasses import dataclass, field

from hooks import kube, naming
from hooks.machine.request import DEALLOCATE_ANNOTATION
from hooks.settings import Settings
from hooks.workspace.api import Workspace
from hooks.workspace.planning import WorkloadPlan

# On a Machine the Workspace no longer needs (a scale-in): since when. It is kept, and reused by a scale-out,
# until the grace period (Settings.scale_in_grace_seconds) has passed, so a flapping scaler re-uses nodes
# instead of deleting and creating agent pools.
IDLE_SINCE_ANNOTATION = "kaito.sh/idle-since"
# Machine Ready reasons that mean "held back on purpose", not a failure: a deallocated VM.
DEALLOCATED_REASON = "Deallocated"
STARTING_REASON = "Starting"  # the Machine hook asked ARM to start its deallocated VM


@dataclass(frozen=True)
class MachineState:
    name: str
    ready: bool
    failed: bool
    node_name: str | None
    reason: str
    message: str
    idle_since: str | None = None
    scale_down_mode: str = "Delete"  # the Machine's spec.scaleDownMode, fixed when it was created

    @property
    def deallocated(self) -> bool:
        return self.reason == DEALLOCATED_REASON


@dataclass(frozen=True)
class IdleMachine:
    name: str
    since: str
    release_in_s: float


@dataclass(frozen=True)
class NodePlan:
    target: int
    existing: tuple[str, ...]  # names of ready, matching nodes we did not provision
    machines: tuple[str, ...]  # Machine names to keep or create, in index order
    machine_states: tuple[MachineState, ...] = field(default_factory=tuple)
    byo: bool = False
    idle: tuple[IdleMachine, ...] = ()  # surplus Machines kept through the scale-in grace period
    # Surplus Deallocate Machines of a Deallocate Workspace: kept, their VMs deallocated, reused first by a scale-out.
    deallocated: tuple[str, ...] = ()

    @property
    def starting_deallocated(self) -> bool:
        """A Machine the Workspace needs is a deallocated VM on its way back (its OS disk kept)."""
        return any(
            m.name in self.machines and m.reason in (DEALLOCATED_REASON, STARTING_REASON) for m in self.machine_states
        )

    @property
    def machine_modes(self) -> dict[str, str]:
        """Each observed Machine's spec.scaleDownMode: a Machine's spec never changes once created."""
        return {m.name: m.scale_down_mode for m in self.machine_states}

    @property
    def release_in_s(self) -> float | None:
        """Seconds until the first idle Machine is released (None: none is idle)."""
        return min((m.release_in_s for m in self.idle), default=None)

    @property
    def ready_count(self) -> int:
        return len(self.existing) + sum(1 for m in self.machine_states if m.ready and m.name in self.machines)

    @property
    def worker_nodes(self) -> list[str]:
        names = list(self.existing)
        names += [m.node_name for m in self.machine_states if m.ready and m.node_name and m.name in self.machines]
        return sorted(names)

    @property
    def failed_machines(self) -> list[MachineState]:
        return [m for m in self.machine_states if m.failed and m.name in self.machines]


def _matches(labels: dict[str, str], ws: Workspace) -> bool:
    sel = ws.resource.labelSelector
    if any(labels.get(k) != v for k, v in (sel.matchLabels or {}).items()):
        return False
    for req in sel.matchExpressions or []:
        has, value = req.key in labels, labels.get(req.key)
        if req.operator == "In" and value not in (req.values or []):
            return False
        if req.operator == "NotIn" and has and value in (req.values or []):
            return False
        if req.operator == "Exists" and not has:
            return False
        if req.operator == "DoesNotExist" and has:
            return False
    return True


def machine_state(machine: dict) -> MachineState:
    ready = kube.condition(machine, "Ready") or {}
    launched = kube.condition(machine, "Launched") or {}
    failing = next((c for c in (ready, launched) if c.get("status") == "False" and c.get("message")), None)
    if ready.get("reason") == DEALLOCATED_REASON:
        failing = None
    latest = failing or ready or launched
    annotations = machine["metadata"].get("annotations") or {}
    return MachineState(
        name=machine["metadata"]["name"],
        ready=ready.get("status") == "True",
        failed=failing is not None,
        node_name=(machine.get("status") or {}).get("nodeName"),
        reason=latest.get("reason", "Provisioning"),
        message=latest.get("message", "waiting for the AKS agent pool"),
        idle_since=annotations.get(IDLE_SINCE_ANNOTATION),
        scale_down_mode=str((machine.get("spec") or {}).get("scaleDownMode") or "Delete"),
    )


def idle_machines(
    observed: list[MachineState], keep: set[str], now: str | None, grace_s: float
) -> tuple[IdleMachine, ...]:
    """Surplus Machines still within the scale-in grace period (failed ones are never kept)."""
    current = kube.parse_time(now) if now else None
    if current is None or grace_s <= 0:
        return ()
    out = []
    for m in observed:
        if m.name in keep or m.failed:
            continue
        since = kube.parse_time(m.idle_since) if m.idle_since else None
        since = since if since is not None and since <= current else current
        left = grace_s - (current - since).total_seconds()
        if left > 0:
            out.append(IdleMachine(m.name, since.strftime("%Y-%m-%dT%H:%M:%SZ"), left))
    return tuple(out)


def plan_nodes(
    ws: Workspace,
    target: int,
    nodes: dict[str, dict],
    machines: dict[str, dict],
    settings: Settings,
    nodes_with_pods: frozenset[str] = frozenset(),
    now: str | None = None,
    scale_down_mode: str = "Delete",
) -> NodePlan:
    """`nodes`: related Node objects by name; `machines`: observed Machine children by name;
    `nodes_with_pods`: nodes where a pod of the Workspace still exists; `now`: for the scale-in grace period
    (None: surplus Machines are released at once); `scale_down_mode`: the Workspace's (Deallocate keeps its
    surplus Deallocate Machines, deallocated, instead of releasing them after the grace period)."""
    byo = settings.node_provisioning == "byo"
    preferred = list(ws.resource.preferredNodes or [])
    candidates = []
    for name, node in nodes.items():
        labels = node["metadata"].get("labels") or {}
        if naming.MACHINE_LABEL in labels or not kube.node_is_ready(node) or not _matches(labels, ws):
            continue
        # With auto-provisioning, a node must also be of the requested size (or named in preferredNodes);
        # bring-your-own clusters choose their nodes by the labelSelector alone.
        if (
            not byo
            and name not in preferred
            and labels.get(naming.INSTANCE_TYPE_LABEL, "").lower() != ws.resource.instanceType.lower()
        ):
            continue
        candidates.append(name)
    candidates.sort(key=lambda n: (preferred.index(n) if n in preferred else len(preferred), n))
    if byo:
        return NodePlan(target, tuple(candidates[:target]), (), (), byo=True)

    observed = sorted((machine_state(m) for m in machines.values()), key=lambda m: m.name)
    # Keep every Machine whose node still hosts a pod of the Workspace (a scale-in removes a Machine only
    # once its pods are gone) and every Ready Machine up to the target: a matching node that is not ours
    # and turns Ready later never displaces a serving Machine. Other nodes cover only what is still missing,
    # then Machines on their way, then new names by index.
    hosting = [m.name for m in observed if m.node_name and m.node_name in nodes_with_pods]
    ready = [m.name for m in observed if m.ready and m.name not in hosting]
    kept = hosting + ready[: max(target - len(hosting), 0)]
    existing = tuple(candidates[: max(target - len(kept), 0)])
    shortfall = target - len(existing)
    waiting = [m.name for m in observed if m.name not in kept and not m.ready]
    keep = kept + waiting[: max(shortfall - len(kept), 0)]
    taken = set(keep)
    index = 0
    while len(keep) < shortfall:
        name = naming.machine_name(ws.namespace, ws.name, index)
        if name not in taken:
            keep.append(name)
            taken.add(name)
        index += 1
    deallocated: tuple[str, ...] = ()
    if scale_down_mode == "Deallocate":
        deallocated = tuple(
            m.name for m in observed if m.name not in taken and m.scale_down_mode == "Deallocate" and not m.failed
        )
    idle = idle_machines(observed, taken | set(deallocated), now, settings.scale_in_grace_seconds)
    return NodePlan(target, existing, tuple(sorted(keep)), tuple(observed), idle=idle, deallocated=deallocated)


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
    if idle_since:  # freed by a scale-in: kept through the grace period (idle_machines)
        annotations[IDLE_SINCE_ANNOTATION] = idle_since
    if mode == "Deallocate" and deallocate:
        annotations[DEALLOCATE_ANNOTATION] = "true"
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": "kaito.sh/v1alpha1", "kind": "Machine", "metadata": metadata, "spec": spec}
