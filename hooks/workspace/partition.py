"""Kaito v0.12's `resource.partition`: one NVIDIA MIG slice per replica, several replicas per GPU node.

mode mig: the AKS agent pool is created with the profile's `gpuInstanceProfile` (MIG1g..MIG7g), every
GPU of the node is split into slices of that profile, and each replica's pod asks the NVIDIA device
plugin for one slice. The device plugin's MIG strategy decides the resource name: with `mixed` (the
default assumed here, the strategy Kaito's example is named after) a slice is `nvidia.com/mig-<profile>`;
with `single` every slice is a plain `nvidia.com/gpu`. A Workspace on a cluster whose plugin runs the
single strategy says so with the annotation `kaito.sh/mig-strategy: single`.

mode accelerator hands out whole accelerators through a device plugin Kaito installs on your own nodes;
we do not install one, so it is refused with what to write instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hooks import naming
from hooks.workspace import catalog
from hooks.workspace.api import Workspace
from hooks.workspace.validation import Problem

MIG_STRATEGY_ANNOTATION = "kaito.sh/mig-strategy"
MIG_STRATEGIES = ("mixed", "single")


@dataclass(frozen=True)
class MigPartition:
    profile: catalog.MigProfile
    slices_per_node: int
    resource: str  # what one replica's pod requests, one of

    @property
    def gpu_instance_profile(self) -> str:
        """The AKS agent pool's `gpuInstanceProfile`."""
        return self.profile.aks

    def nodes_for(self, replicas: int) -> int:
        """Replicas share a node's slices: ceil(replicas / slices per node) nodes."""
        return math.ceil(replicas / self.slices_per_node)


def mig_resource(profile: str, strategy: str) -> str:
    return naming.GPU_RESOURCE if strategy == "single" else f"nvidia.com/mig-{profile}"


def _strategy(ws: Workspace) -> tuple[str | None, list[Problem]]:
    raw = ws.annotations.get(MIG_STRATEGY_ANNOTATION, "mixed").strip().lower()
    if raw in MIG_STRATEGIES:
        return raw, []
    return None, [
        Problem(
            f"metadata.annotations[{MIG_STRATEGY_ANNOTATION}]",
            f"{raw!r} is not a MIG strategy of the NVIDIA device plugin; use mixed (slices are "
            "nvidia.com/mig-<profile>, the default) or single (slices are nvidia.com/gpu)",
        )
    ]


def _mig_sizes() -> str:
    return ", ".join(sorted(s.name for s in catalog.skus().values() if catalog.mig_profiles(s)))


def plan_partition(
    ws: Workspace, sku: catalog.Sku, need: catalog.Need, what: str
) -> tuple[MigPartition | None, list[Problem]]:
    """The MIG slicing of a Workspace whose resource.partition is set, or the problems that refuse it."""
    spec = ws.resource.partition
    assert spec is not None
    if spec.mode == "accelerator":
        return None, [
            Problem(
                "resource.partition.mode",
                "accelerator partitions need Kaito's accelerator device plugin on your own nodes, which this "
                "operator does not install; remove resource.partition to give each replica the whole GPUs of "
                "its node, or use mode: mig with a profile on a MIG-capable size (" + _mig_sizes() + ")",
            )
        ]
    strategy, problems = _strategy(ws)
    profiles = catalog.mig_profiles(sku)
    if not profiles:
        return None, [
            Problem(
                "resource.instanceType",
                f"{sku.name} cannot be split into MIG slices on AKS; use a MIG-capable size ({_mig_sizes()}) "
                "or remove resource.partition",
            )
        ]
    profile = profiles.get(spec.profile or "")
    if profile is None:
        elsewhere = sorted(s.name for s in catalog.skus().values() if spec.profile in catalog.mig_profiles(s))
        other = f", or a size that offers it: resource.instanceType {' or '.join(elsewhere)}" if elsewhere else ""
        return None, [
            Problem(
                "resource.partition.profile",
                f"{spec.profile!r} is not a MIG profile AKS offers on {sku.name}; use one of {', '.join(profiles)}"
                + other,
            )
        ]
    fitting = [p for p in profiles.values() if p.memory >= need.gpu_memory and p.memory >= need.per_gpu_memory]
    if need.gpus > 1 or profile.memory < need.gpu_memory or profile.memory < need.per_gpu_memory:
        if need.gpus > 1 or not fitting:
            fix = "remove resource.partition to run it on whole GPUs"
        else:
            fix = f"use profile: {fitting[0].name} (a slice of {fitting[0].memory:g} GiB)"
        problems.append(
            Problem(
                "resource.partition.profile",
                f"{what} needs {need.gpu_memory:g} GiB of GPU memory"
                + (f" on {need.gpus} GPUs" if need.gpus > 1 else "")
                + f", but one {profile.name} slice of {sku.name} has {profile.memory:g} GiB; {fix}",
            )
        )
    if problems or strategy is None:
        return None, problems
    return MigPartition(profile, profile.per_gpu * sku.gpus, mig_resource(profile.name, strategy)), []
