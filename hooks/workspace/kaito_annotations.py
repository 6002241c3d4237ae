"""Kaito v0.12's Workspace annotations: mapped to SGLang settings, or refused with the reason.

`kaito.sh/runtime` is chosen in planning.py and `kaito.sh/enablelb` makes the Service a LoadBalancer
(children/services.py), as in Kaito. `kaito.sh/performance-mode` becomes SGLang scheduler flags. The
others change what Kaito's own controller builds (skipped GPU checks, another node image, a benchmark
stage), which this operator does differently or not at all, so each is refused
naming what to do instead; an annotation silently ignored would leave the user believing it applied.
"""

from __future__ import annotations

from hooks.workspace.api import Workspace
from hooks.workspace.validation import Problem

PERFORMANCE_MODE = "kaito.sh/performance-mode"
# SGLang's scheduler flags per mode. throughput: mix prefill and decode in one batch and admit requests
# more eagerly (a larger batch per step, at some cost in per-request latency); balanced: SGLang's defaults.
PERFORMANCE_MODES: dict[str, tuple[str, ...]] = {
    "balanced": (),
    "throughput": ("--enable-mixed-chunk", "--schedule-conservativeness", "0.5"),
}

REFUSED: dict[str, str] = {
    "kaito.sh/bypass-resource-checks": (
        "the GPU memory check is what keeps a model from failing to load; remove the annotation and choose a "
        "resource.instanceType the check accepts (the refusal names one)"
    ),
    "kaito.sh/node-image-family": (
        "new AKS agent pools use AKS's default Ubuntu node image with the GPU driver; remove the annotation "
        "(bring your own nodes for another image)"
    ),
    "kaito.sh/run-benchmark": (
        "there is no benchmark stage before readiness here; remove the annotation and run the benchmarks "
        "in benchmarks/ against the Service"
    ),
}


def problems(ws: Workspace) -> list[Problem]:
    out = []
    annotations = ws.annotations
    for key, why in REFUSED.items():
        if key in annotations:
            out.append(Problem(f"metadata.annotations[{key}]", f"not supported: {why}"))
    mode = annotations.get(PERFORMANCE_MODE)
    if mode is not None and mode.strip().lower() not in PERFORMANCE_MODES:
        out.append(
            Problem(
                f"metadata.annotations[{PERFORMANCE_MODE}]",
                f"{mode!r} is not a performance mode; use {' or '.join(PERFORMANCE_MODES)}, or remove the annotation",
            )
        )
    return out


def runtime_flags(ws: Workspace) -> list[str]:
    """SGLang flags the Workspace's annotations ask for (after validation)."""
    mode = ws.annotations.get(PERFORMANCE_MODE, "balanced").strip().lower()
    return list(PERFORMANCE_MODES.get(mode, ()))
