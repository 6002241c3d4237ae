"""The preset and Azure GPU SKU catalogues, loaded from `hooks/data/*.yaml`.

The numbers live in the data files; this module only gives them types and answers questions
about them (does a preset fit a SKU, which SKUs would).
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

# hooks/data: the package data beside the workspace/ folder.
DATA_DIR = Path(__file__).parent.parent / "data"
SGLANG_MIN_COMPUTE_CAPABILITY = 8.0


@dataclass(frozen=True)
class TuningNeed:
    gpu_memory: float
    per_gpu_memory: float


@dataclass(frozen=True)
class Preset:
    name: str
    hf_repo: str
    family: str
    gpus: int
    gpu_memory: float
    per_gpu_memory: float
    weights: float
    disk: int
    context_length: int
    distributed: bool
    weights_source: str  # hf | hf-gated | private
    lora_target_modules: tuple[str, ...]
    tuning: dict[str, TuningNeed] = field(default_factory=dict)
    readiness_timeout_minutes: int = 30
    sglang_no_lora: str = ""  # why SGLang cannot apply this family's adapters ("" = it can)

    @property
    def sglang_lora(self) -> bool:
        return not self.sglang_no_lora

    @property
    def supports_tuning(self) -> bool:
        return bool(self.tuning)


@dataclass(frozen=True)
class Sku:
    name: str
    gpus: int
    gpu: str
    gpu_memory: float  # per GPU, GiB
    compute_capability: float | None
    nvme: bool = False
    mig: str | None = None  # the MIG table of this size, when its AKS pools take a gpuInstanceProfile

    @property
    def total_gpu_memory(self) -> float:
        return self.gpus * self.gpu_memory

    @property
    def nvidia(self) -> bool:
        return self.compute_capability is not None

    @property
    def runs_sglang(self) -> bool:
        return self.compute_capability is not None and self.compute_capability >= SGLANG_MIN_COMPUTE_CAPABILITY


@lru_cache(maxsize=1)
def presets() -> dict[str, Preset]:
    raw = yaml.safe_load((DATA_DIR / "presets.yaml").read_text())
    families = raw["families"]
    out = {}
    for name, p in raw["presets"].items():
        tuning = {m: TuningNeed(**need) for m, need in (p.get("tuning") or {}).items()}
        fields = {k: v for k, v in p.items() if k != "tuning"}
        out[name] = Preset(
            name=name,
            lora_target_modules=tuple(families[p["family"]]["lora_target_modules"]),
            sglang_no_lora=families[p["family"]].get("sglang_no_lora", ""),
            tuning=tuning,
            **fields,
        )
    return out


@lru_cache(maxsize=1)
def skus() -> dict[str, Sku]:
    raw = yaml.safe_load((DATA_DIR / "skus.yaml").read_text())
    return {name: Sku(name=name, **s) for name, s in raw["skus"].items()}


@dataclass(frozen=True)
class MigProfile:
    """One NVIDIA MIG slice as a Workspace names it (`1g.10gb`) and as AKS creates it (`MIG1g`)."""

    name: str
    aks: str
    per_gpu: int
    memory: float  # GiB of GPU memory in one slice


@lru_cache(maxsize=1)
def _mig_tables() -> dict[str, dict[str, MigProfile]]:
    raw = yaml.safe_load((DATA_DIR / "skus.yaml").read_text())
    return {
        table: {name: MigProfile(name=name, **p) for name, p in profiles.items()}
        for table, profiles in raw["mig_profiles"].items()
    }


def mig_profiles(sku: Sku) -> dict[str, MigProfile]:
    """The MIG profiles an AKS pool of `sku` can be created with, smallest first; empty where it has none."""
    return dict(_mig_tables().get(sku.mig or "", {}))


def find_sku(name: str) -> Sku | None:
    """Azure compares VM sizes case-insensitively; so do we."""
    table = skus()
    if name in table:
        return table[name]
    folded = {k.lower(): v for k, v in table.items()}
    return folded.get(name.lower())


def close_matches(name: str, candidates: list[str], n: int = 3) -> list[str]:
    return difflib.get_close_matches(name, candidates, n=n, cutoff=0.5)


@dataclass(frozen=True)
class Need:
    """GPU need of a workload: total memory, minimum per-GPU memory and minimum GPU count."""

    gpu_memory: float
    per_gpu_memory: float
    gpus: int


def serving_need(preset: Preset) -> Need:
    return Need(preset.gpu_memory, preset.per_gpu_memory, preset.gpus)


def tuning_need(preset: Preset, method: str) -> Need:
    t = preset.tuning[method]
    return Need(t.gpu_memory, t.per_gpu_memory, 1)


def nodes_needed(need: Need, sku: Sku) -> int:
    """How many nodes of `sku` hold the workload (total memory and GPU count), ignoring per-GPU limits."""
    by_memory = math.ceil(need.gpu_memory / sku.total_gpu_memory) if sku.total_gpu_memory else 0
    by_gpus = math.ceil(need.gpus / sku.gpus) if sku.gpus else 0
    return max(1, by_memory, by_gpus)


def skus_that_fit(need: Need, *, nodes: int = 1, sglang_only: bool = False) -> list[Sku]:
    """NVIDIA SKUs that hold `need` on `nodes` nodes, smallest total GPU memory first."""
    fits = [
        s
        for s in skus().values()
        if s.nvidia
        and (s.runs_sglang or not sglang_only)
        and s.gpu_memory >= need.per_gpu_memory
        and s.total_gpu_memory * nodes >= need.gpu_memory
        and s.gpus * nodes >= need.gpus
    ]
    return sorted(fits, key=lambda s: (s.total_gpu_memory, s.gpus, s.name))
