"""Which runtime serves a preset: SGLang, or the transformers runtime where SGLang cannot run or is not asked
for, and whether that runtime starts ready for live adapters."""

from __future__ import annotations

from typing import Literal

from hooks.workspace import catalog
from hooks.workspace.api import Workspace
from hooks.workspace.validation import Problem

RUNTIME_ANNOTATION = "kaito.sh/runtime"

Runtime = Literal["sglang", "transformers"]


def choose_runtime(ws: Workspace, sku: catalog.Sku) -> tuple[Runtime | None, str, list[Problem]]:
    """(runtime, why, problems): the kaito.sh/runtime annotation if it names one the GPU can run, else SGLang on
    compute capability 8.0 or newer and the transformers runtime below it."""
    asked = ws.annotations.get(RUNTIME_ANNOTATION, "").strip().lower()
    if asked not in ("", "sglang", "vllm", "transformers"):
        return (
            None,
            "",
            [
                Problem(
                    f"metadata.annotations[{RUNTIME_ANNOTATION}]",
                    f"{asked!r} is not a runtime; use sglang or transformers",
                )
            ],
        )
    if asked == "transformers":
        return "transformers", "the kaito.sh/runtime annotation asks for transformers", []
    if sku.runs_sglang:
        why = f"{sku.gpu} has compute capability {sku.compute_capability:.1f} (SGLang needs 8.0 or newer)"
        if asked == "vllm":
            why += "; kaito.sh/runtime: vllm is served by SGLang here"
        return "sglang", why, []
    if asked in ("sglang", "vllm"):
        ampere = catalog.skus_that_fit(catalog.Need(0, 0, 1), sglang_only=True)
        return (
            None,
            "",
            [
                Problem(
                    "resource.instanceType",
                    f"kaito.sh/runtime: {asked} needs an Ampere or newer GPU, but {sku.name} has {sku.gpu} "
                    f"(compute capability {sku.compute_capability:.1f}); use e.g. {ampere[0].name}, or drop the annotation "
                    "to use the transformers runtime",
                )
            ],
        )
    return (
        "transformers",
        f"{sku.gpu} has compute capability {sku.compute_capability:.1f}, below the 8.0 SGLang needs; "
        "serving with the transformers runtime (same endpoints, single node)",
        [],
    )


def live_adapters_on(runtime: Runtime, preset: catalog.Preset) -> bool:
    """Whether the runtime is started ready for adapters. SGLang cannot apply some families' adapters at all
    (validation refuses adapters there), and enabling LoRA for them could break the server's start."""
    return runtime == "transformers" or preset.sglang_lora
