"""Cold-start phases of the last started pod, from what its status reports (no API calls):

    node        pod created -> scheduled (waiting for a GPU node, including its provisioning)
    imagePull   scheduled -> first init container (or container) started: sandbox and the image pull
    weights     the `model-weights` init container's run: the download, or the wait for another pod
                on the node downloading, or just the check of a cached copy; its termination message
                (JSON from `python -m inference.weights`) says whether the node cache had the weights
    modelLoad   main container started -> pod Ready: the model server reading the weights and warming up

A phase that has not finished yet is left out; so is the whole block while no pod has started.
"""

from __future__ import annotations

import json
from typing import Any

from hooks.kube import condition, parse_time

WEIGHTS_CONTAINER = "model-weights"


def _seconds(start: str | None, end: str | None) -> int | None:
    a, b = parse_time(start), parse_time(end)
    if a is None or b is None:
        return None
    return max(0, int((b - a).total_seconds()))


def _started(status: dict) -> str | None:
    state = status.get("state") or {}
    return (state.get("running") or state.get("terminated") or {}).get("startedAt")


def _weights_report(status: dict) -> dict[str, Any]:
    message = ((status.get("state") or {}).get("terminated") or {}).get("message")
    try:
        doc = json.loads(message) if message else {}
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _last_started(pods: list[dict]) -> dict | None:
    started = [p for p in pods if (p.get("status") or {}).get("startTime")]
    if not started:
        return None
    return max(started, key=lambda p: (p["metadata"].get("creationTimestamp") or "", p["metadata"].get("name") or ""))


def cold_start(pods: list[dict]) -> dict[str, Any] | None:
    pod = _last_started(pods)
    if pod is None:
        return None
    meta, status = pod["metadata"], pod.get("status") or {}
    scheduled = condition(pod, "PodScheduled")
    scheduled_at = scheduled.get("lastTransitionTime") if scheduled and scheduled.get("status") == "True" else None
    inits = status.get("initContainerStatuses") or []
    mains = status.get("containerStatuses") or []
    first_start = next((t for t in (_started(s) for s in inits + mains) if t), None)
    main_start = next((t for t in (_started(s) for s in mains) if t), None)
    ready = condition(pod, "Ready")
    ready_at = ready.get("lastTransitionTime") if ready and ready.get("status") == "True" else None

    phases: dict[str, Any] = {"pod": meta.get("name")}
    if meta.get("creationTimestamp") and scheduled_at:
        phases["nodeSeconds"] = _seconds(meta["creationTimestamp"], scheduled_at)
    if scheduled_at and first_start:
        phases["imagePullSeconds"] = _seconds(scheduled_at, first_start)
    weights = next((s for s in inits if s.get("name") == WEIGHTS_CONTAINER), None)
    if weights is not None:
        terminated = (weights.get("state") or {}).get("terminated") or {}
        if terminated.get("exitCode") == 0:
            phases["weightsSeconds"] = _seconds(terminated.get("startedAt"), terminated.get("finishedAt"))
            report = _weights_report(weights)
            if "cached" in report:
                phases["weightsCached"] = bool(report["cached"])
            if isinstance(report.get("downloaded_bytes"), int):
                phases["weightsDownloadedBytes"] = report["downloaded_bytes"]
    if main_start and ready_at:
        phases["modelLoadSeconds"] = _seconds(main_start, ready_at)
    phases = {k: v for k, v in phases.items() if v is not None}
    return phases if len(phases) > 1 else None


def summary(phases: dict[str, Any]) -> str:
    """One line for humans: `node 6m12s, image pull 1m35s, weights 20m0s (downloaded), model load 3m0s`."""
    parts = []
    for key, label in (
        ("nodeSeconds", "node"),
        ("imagePullSeconds", "image pull"),
        ("weightsSeconds", "weights"),
        ("modelLoadSeconds", "model load"),
    ):
        if key in phases:
            text = f"{label} {_duration(phases[key])}"
            if key == "weightsSeconds" and "weightsCached" in phases:
                text += " (node cache hit)" if phases["weightsCached"] else " (downloaded)"
            parts.append(text)
    return ", ".join(parts)


def _duration(seconds: int) -> str:
    minutes, s = divmod(int(seconds), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours}h{m}m{s}s" if hours else f"{m}m{s}s" if m else f"{s}s"
