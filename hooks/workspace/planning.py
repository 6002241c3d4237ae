"""What a valid Workspace needs: which preset, which SKU, how many nodes, which runtime.

Everything here is decided from the Workspace and the catalogues; problems name the field to change
and a value that would work. A Workspace that passes becomes one of three plans (preset serving,
template serving, tuning) whose fields hold what validation proved, so nothing downstream has to
check for None again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from hooks import naming
from hooks.workspace import catalog, kaito_annotations, partition, replicas, scale_to_zero
from hooks.workspace.api import PresetOptions, TuningSpec, Workspace
from hooks.workspace.runtime_choice import RUNTIME_ANNOTATION, Runtime, choose_runtime, live_adapters_on
from hooks.workspace.scale_to_zero import ScaleToZero
from hooks.workspace.validation import Problem, parse_workspace

# The OS disk of a node running the user's pod template: we do not know its model's size.
TEMPLATE_DISK_GIB = 1024


KEY_LENGTH = 12  # hex digits of an adapter key and of the desired adapter set's revision


@dataclass(frozen=True)
class Adapter:
    """A LoRA adapter that passed validation: a name and exactly one of image or volume_source."""

    name: str
    strength: str
    image: str | None
    volume_source: dict[str, Any] | None
    pull_secrets: tuple[str, ...]
    # The adapter's files folder, decided once: a short hash of where the files come from, so a changed image
    # (or volume) is a new folder that the old one keeps serving until it is ready, and a re-weight keeps it.
    key: str = field(init=False)

    def __post_init__(self) -> None:
        source = self.image if self.image else json.dumps(self.volume_source, sort_keys=True)
        object.__setattr__(self, "key", hashlib.sha256(source.encode()).hexdigest()[:KEY_LENGTH])


@dataclass(frozen=True)
class _Plan:
    sku: catalog.Sku
    nodes: int  # per instance: more than 1 only for a preset served across several nodes
    # Instances of the workload (each on its own `nodes` nodes), and why it differs from what was asked.
    replicas: int = field(default=1, kw_only=True)
    replicas_note: str = field(default="", kw_only=True)
    # resource.partition mode mig: each replica runs on one slice, and replicas share a node's slices.
    mig: partition.MigPartition | None = field(default=None, kw_only=True)
    # The scale-to-zero annotations, read once while planning (None: the Workspace does not opt in).
    scale_to_zero: ScaleToZero | None = field(default=None, kw_only=True)
    # kaito.sh/scale-down-mode, read once while planning: how new Machines give their GPU back (Delete or
    # Deallocate), and whether the weights cache must stay on the OS disk (local NVMe is lost on deallocation).
    scale_down_mode: str = field(default="Delete", kw_only=True)

    @property
    def gpus_per_node(self) -> int:
        """GPUs one pod gets: all of its node's, or one MIG slice."""
        return 1 if self.mig is not None else self.sku.gpus

    @property
    def gpu_resource(self) -> str:
        return self.mig.resource if self.mig is not None else naming.GPU_RESOURCE

    @property
    def node_count(self) -> int:
        """GPU nodes the workload needs: `nodes` per replica, or replicas packed onto MIG slices."""
        if self.mig is not None:
            return self.mig.nodes_for(self.replicas)
        return self.nodes * self.replicas


@dataclass(frozen=True)
class PresetServing(_Plan):
    """Serve a catalogue preset with `python -m inference.launch` on `nodes` nodes."""

    preset: catalog.Preset
    options: PresetOptions
    runtime: Runtime
    runtime_reason: str
    adapters: tuple[Adapter, ...]
    config: str | None  # the user's inference ConfigMap, if any
    live_adapters: bool = field(kw_only=True)  # the runtime starts ready for adapters (live_adapters_on)

    @property
    def disk_gib(self) -> int:
        return self.preset.disk


@dataclass(frozen=True)
class TemplateServing(_Plan):
    """Run the user's pod template on the workspace's GPU nodes."""

    template: dict[str, Any]

    @property
    def disk_gib(self) -> int:
        return TEMPLATE_DISK_GIB


@dataclass(frozen=True)
class TuningPlan(_Plan):
    """Tune `preset` with LoRA or QLoRA on one node and push or store the adapter."""

    preset: catalog.Preset
    options: PresetOptions
    tuning: TuningSpec

    @property
    def disk_gib(self) -> int:
        return self.preset.disk


WorkloadPlan = PresetServing | TemplateServing | TuningPlan


@dataclass(frozen=True)
class PlannedWorkspace:
    workspace: Workspace
    plan: WorkloadPlan


def parse_and_plan(obj: dict[str, Any]) -> tuple[PlannedWorkspace | None, list[Problem]]:
    """A Workspace object (as the API server holds it) checked and planned, or every problem found.

    The one entry for the hook, `python -m hooks render` and the tests.
    """
    ws, problems = parse_workspace(obj)
    if ws is None:
        return None, problems
    workload, problems = plan(ws)
    wake, wake_problems = scale_to_zero.parse(ws)
    mode, mode_problems = scale_to_zero.scale_down_mode(ws)
    if workload is None or wake_problems or mode_problems:
        return None, problems + wake_problems + mode_problems
    return PlannedWorkspace(ws, dataclasses.replace(workload, scale_to_zero=wake, scale_down_mode=mode)), []


def _sku_problems(ws: Workspace) -> tuple[catalog.Sku | None, list[Problem]]:
    name = ws.resource.instanceType
    sku = catalog.find_sku(name)
    if sku is None:
        if not name.startswith("Standard_"):
            return None, [
                Problem(
                    "resource.instanceType",
                    f"{name!r} is not an Azure VM size; this operator provisions AKS GPU nodes, "
                    "e.g. Standard_NC24ads_A100_v4",
                )
            ]
        near = catalog.close_matches(name, list(catalog.skus()))
        hint = f"; did you mean {', '.join(near)}?" if near else ""
        return None, [
            Problem(
                "resource.instanceType",
                f"{name!r} is not a known Azure GPU VM size{hint} (known sizes are in hooks/data/skus.yaml)",
            )
        ]
    if not sku.nvidia:
        return None, [
            Problem(
                "resource.instanceType",
                f"{sku.name} has {sku.gpu} GPUs; only NVIDIA GPUs are supported, e.g. Standard_NC24ads_A100_v4",
            )
        ]
    return sku, []


def _preset(ws: Workspace, path: str) -> tuple[catalog.Preset | None, list[Problem]]:
    spec = ws.preset
    assert spec is not None, "validation guarantees a preset here"
    preset = catalog.presets().get(spec.name)
    if preset is None:
        near = catalog.close_matches(spec.name, list(catalog.presets()))
        hint = f"; did you mean {', '.join(near)}?" if near else "; see the preset table in the README"
        return None, [Problem(f"{path}.name", f"unknown preset {spec.name!r}{hint}")]
    problems = []
    opts = spec.presetOptions
    if preset.weights_source == "private" and not (opts and opts.image):
        problems.append(
            Problem(
                f"{path}.presetOptions.image",
                f"preset {preset.name} has no public weights; set accessMode: private and presetOptions.image "
                "to an image holding the HuggingFace-format weights under /data",
            )
        )
    if spec.accessMode == "private" and not (opts and opts.image):
        problems.append(Problem(f"{path}.presetOptions.image", "accessMode: private needs presetOptions.image"))
    if preset.weights_source == "hf-gated" and not (opts and opts.image) and not (opts and opts.modelAccessSecret):
        problems.append(
            Problem(
                f"{path}.presetOptions.modelAccessSecret",
                f"{preset.hf_repo} is a gated HuggingFace model; create a Secret with key HF_TOKEN and name it here",
            )
        )
    return preset, problems


def _fit_problem(need: catalog.Need, sku: catalog.Sku, nodes: int, what: str, *, sglang_only: bool) -> Problem | None:
    """None when `need` fits `nodes` x `sku`; otherwise a problem naming what to change."""
    has_total = sku.total_gpu_memory * nodes
    if sku.gpu_memory >= need.per_gpu_memory and has_total >= need.gpu_memory and sku.gpus * nodes >= need.gpus:
        return None
    fits = catalog.skus_that_fit(need, nodes=1, sglang_only=sglang_only)
    suggestion = (
        f"; {fits[0].name} ({fits[0].gpus} x {fits[0].gpu} {fits[0].gpu_memory:g} GiB) would fit" if fits else ""
    )
    return Problem(
        "resource.instanceType",
        f"{what} needs {need.gpu_memory:g} GiB of GPU memory"
        + (f" ({need.per_gpu_memory:g} GiB per GPU)" if need.per_gpu_memory else "")
        + (f" on at least {need.gpus} GPUs" if need.gpus > 1 else "")
        + f", but {nodes} x {sku.name} has {has_total:g} GiB on {sku.gpus * nodes} x {sku.gpu} {sku.gpu_memory:g} GiB"
        + suggestion,
    )


def plan(ws: Workspace) -> tuple[WorkloadPlan | None, list[Problem]]:
    sku, problems = _sku_problems(ws)
    problems += kaito_annotations.problems(ws)
    if ws.tuning is not None:
        if ws.resource.partition is not None:
            problems.append(Problem("resource.partition", "tuning runs on whole GPUs; remove resource.partition"))
        preset, p = _preset(ws, "tuning.preset")
        problems += p
        if preset is None or sku is None:
            return None, problems
        if not preset.supports_tuning:
            tunable = sorted(n for n, pr in catalog.presets().items() if pr.supports_tuning)
            problems.append(
                Problem(
                    "tuning.preset.name",
                    f"preset {preset.name} does not support tuning; presets that do: {', '.join(tunable)}",
                )
            )
            return None, problems
        need = catalog.tuning_need(preset, ws.tuning.method)
        if fit := _fit_problem(need, sku, 1, f"{ws.tuning.method} tuning of {preset.name}", sglang_only=False):
            problems.append(fit)
        if problems:
            return None, problems
        return TuningPlan(sku, 1, preset, ws.tuning.preset.presetOptions or PresetOptions(), ws.tuning), []

    inf = ws.inference
    assert inf is not None, "validation guarantees inference or tuning"
    if ws.resource.partition is not None and inf.preset is None:
        problems.append(
            Problem(
                "resource.partition", "GPU partitions apply to inference.preset; a pod template asks for its own GPUs"
            )
        )
    if inf.template is not None:
        if problems or sku is None:
            return None, problems
        count, note = replicas.single_node(ws.resource.count, ws.requested_replicas)
        return TemplateServing(sku, 1, inf.template, replicas=count, replicas_note=note), []

    preset, p = _preset(ws, "inference.preset")
    problems += p
    if preset is None or sku is None:
        return None, problems
    runtime, why, p = choose_runtime(ws, sku)
    problems += p
    if runtime is None:
        return None, problems
    if runtime != "sglang" and kaito_annotations.runtime_flags(ws):
        problems.append(
            Problem(
                f"metadata.annotations[{kaito_annotations.PERFORMANCE_MODE}]",
                f"performance modes tune SGLang's scheduler, and this Workspace runs the {runtime} runtime; "
                "remove the annotation",
            )
        )

    if runtime == "sglang" and ws.adapters and not preset.sglang_lora:
        problems.append(
            Problem(
                "inference.adapters",
                f"{preset.name} with adapters cannot be served by SGLang: {preset.sglang_no_lora}; "
                f"add the annotation {RUNTIME_ANNOTATION}: transformers to serve it with adapters, or remove the adapters",
            )
        )
    need = catalog.serving_need(preset)
    count = ws.resource.count
    if ws.resource.partition is not None:
        mig, p = partition.plan_partition(ws, sku, need, preset.name)
        problems += p
        if mig is None or problems:
            return None, problems
        instances, replicas_note = replicas.single_node(count, ws.requested_replicas)
        assert inf.preset is not None
        return PresetServing(
            sku,
            1,
            preset,
            inf.preset.presetOptions or PresetOptions(),
            runtime,
            why + f"; one {mig.profile.name} MIG slice per replica, {mig.slices_per_node} per node",
            _adapters(ws),
            inf.config,
            replicas=instances,
            replicas_note=replicas_note,
            mig=mig,
            live_adapters=live_adapters_on(runtime, preset),
        ), []
    # Kaito's count: replicas for a preset that fits one node, the node count of one instance otherwise.
    if catalog.nodes_needed(need, sku) == 1:
        nodes = 1
        instances, replicas_note = replicas.single_node(count, ws.requested_replicas)
    else:
        nodes = max(count, catalog.nodes_needed(need, sku))
        instances, replicas_note = replicas.multi_node(ws.requested_replicas, nodes)
    if nodes > 1 and not preset.distributed:
        if fit := _fit_problem(need, sku, 1, preset.name, sglang_only=runtime == "sglang"):
            problems.append(fit)
    elif nodes > 1 and runtime == "transformers":
        problems.append(
            Problem(
                "resource.instanceType",
                f"{preset.name} needs {nodes} nodes of {sku.name}, and the transformers runtime serves from one node; "
                + _larger_sku_hint(need),
            )
        )
    elif fit := _fit_problem(need, sku, nodes, preset.name, sglang_only=runtime == "sglang"):
        problems.append(fit)
    if problems:
        return None, problems
    if nodes > count:
        why += f"; {preset.name} needs {nodes} nodes of {sku.name}, so it runs across {nodes} nodes"
    assert inf.preset is not None
    return PresetServing(
        sku,
        nodes,
        preset,
        inf.preset.presetOptions or PresetOptions(),
        runtime,
        why,
        _adapters(ws),
        inf.config,
        replicas=instances,
        replicas_note=replicas_note,
        live_adapters=live_adapters_on(runtime, preset),
    ), []


def _adapters(ws: Workspace) -> tuple[Adapter, ...]:
    out = []
    for spec in ws.adapters:
        src = spec.source
        assert src is not None and src.name, "validation guarantees every adapter a named source"
        out.append(
            Adapter(src.name, spec.strength or "1.0", src.image, src.volumeSource, tuple(src.imagePullSecrets or ()))
        )
    return tuple(out)


def _larger_sku_hint(need: catalog.Need) -> str:
    fits = catalog.skus_that_fit(need, sglang_only=True)
    return f"use e.g. {fits[0].name}" if fits else "use a larger GPU VM size"
