"""status.adapters and the AdaptersReady condition, from what the hook observes (no API calls):

- the fetch Jobs (children) and their pods (related): files still copying, an image the kubelet cannot
  pull (ErrImagePull / ImagePullBackOff, with the kubelet's message), a copy that failed;
- what each model server pod reports about the adapters it serves: its agent's report (the gateway's
  GET /adapters document) in the pod annotation `kaito.sh/adapters`. A report names the desired-set
  revision it was made for; a report for an older revision says nothing about the current set.

Precedence per adapter: Failed (fetch or any pod) > Ready (every running replica says Ready) > Loading
(a replica is loading it) > Pending (files being fetched, or waiting for the replicas to see the change).
WorkspaceReady never depends on this: a replica's readiness is sticky once it served its first set.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from hooks.workspace.children import live_adapters as live
from hooks.workspace.planning import PresetServing
from hooks.workspace.status.conditions import Condition, false, true

REPORT_ANNOTATION = "kaito.sh/adapters"
PENDING, LOADING, READY, FAILED = "Pending", "Loading", "Ready", "Failed"
MAX_MESSAGE = 512
# A pod writes its own report, so its fields are untrusted: a reason is kept only when it is a short
# CamelCase word (the CRD allows 1024 characters; conditions' reasons are words like this), a message only
# when it is text, truncated. Anything else would make the apiserver refuse the whole status.
REASON = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
DEFAULT_FAILED_REASON = "LoadFailed"


@dataclass(frozen=True)
class AdapterState:
    name: str
    state: str
    reason: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "state": self.state, "reason": self.reason, "message": self.message[:MAX_MESSAGE]}


def pod_report(pod: dict) -> dict[str, Any] | None:
    """The agent's report on a pod, or None when absent or unreadable."""
    raw = ((pod.get("metadata") or {}).get("annotations") or {}).get(REPORT_ANNOTATION)
    try:
        doc = json.loads(raw) if raw else None
    except ValueError:
        return None
    return doc if isinstance(doc, dict) and isinstance(doc.get("adapters"), list) else None


def report_reason(entry: dict, default: str) -> str:
    """The reason a replica reported, if it is a short word; `default` otherwise."""
    reason = entry.get("reason")
    return reason if isinstance(reason, str) and REASON.match(reason) else default


def report_text(entry: dict, key: str) -> str:
    """A text field of a replica's report, truncated; "" when it is not text."""
    value = entry.get(key)
    return value[:MAX_MESSAGE] if isinstance(value, str) else ""


def _serving(pods: list[dict]) -> list[dict]:
    """Replicas that can serve: running and not being deleted."""
    return [
        p for p in pods
        if (p.get("status") or {}).get("phase") == "Running" and not (p.get("metadata") or {}).get("deletionTimestamp")
    ]  # fmt: skip


def _fetch_state(name: str, key: str, jobs: list[dict], fetch_pods: list[dict]) -> AdapterState | None:
    """Failed or Pending from the fetch side; None once every node has the files."""
    mine = [j for j in jobs if live.fetch_key_of(j) == key]
    pods = [p for p in fetch_pods if live.fetch_key_of(p) == key]
    pull = live.pull_error(pods)
    if pull:
        return AdapterState(name, FAILED, "ImagePullError", f"cannot pull the adapter image on {pull}")
    for job in sorted(mine, key=lambda j: j["metadata"]["name"]):
        failed = live.job_failed(job)
        if failed:
            why = live.copy_failure(pods) or f"{failed.get('reason', 'Failed')}: {failed.get('message', '')}"
            return AdapterState(
                name, FAILED, "FetchFailed", f"copying the adapter files on node {live.job_node(job)} failed: {why}"
            )
    waiting = sorted(live.job_node(j) for j in mine if not live.job_complete(j))
    if waiting or not mine:
        where = ", ".join(waiting) if waiting else "the Workspace's nodes (none ready yet)"
        return AdapterState(name, PENDING, "Fetching", f"copying the adapter files to {where}")
    return None


def _replica_state(name: str, revision: str, replicas: list[dict]) -> AdapterState:
    if not replicas:
        return AdapterState(
            name, PENDING, "WaitingForReplicas", "the files are on the nodes; no replica is running yet"
        )
    states: list[tuple[str, dict]] = []
    for pod in sorted(replicas, key=lambda p: p["metadata"]["name"]):
        report = pod_report(pod)
        entry = None
        if report is not None and report.get("revision", revision) == revision:
            entry = next((a for a in report["adapters"] if isinstance(a, dict) and a.get("name") == name), None)
        states.append((pod["metadata"]["name"], entry or {}))
    for pod_name, entry in states:
        if entry.get("state") == FAILED:
            reason = report_reason(entry, DEFAULT_FAILED_REASON)
            detail = report_text(entry, "message") or report_text(entry, "reason") or "the model server refused it"
            return AdapterState(name, FAILED, reason, f"pod {pod_name}: {detail}")
    if all(entry.get("state") == READY for _, entry in states):
        return AdapterState(name, READY, "Loaded", f"served by {len(states)} of {len(states)} replicas")
    if any(entry.get("state") == LOADING for _, entry in states):
        loading = [p for p, e in states if e.get("state") == LOADING]
        return AdapterState(name, LOADING, "Loading", f"loading in {', '.join(loading)}")
    waiting = [p for p, e in states if e.get("state") != READY]
    return AdapterState(
        name, PENDING, "WaitingForReplicas", f"the files are on the nodes; waiting for {', '.join(waiting)}"
    )


def adapter_states(
    plan: PresetServing, jobs: list[dict], fetch_pods: list[dict], replicas: list[dict]
) -> list[AdapterState]:
    """One state per desired adapter, in spec order."""
    revision = live.desired_set(plan)["revision"]
    serving = _serving(replicas)
    out = []
    for adapter in plan.adapters:
        key = adapter.key
        out.append(_fetch_state(adapter.name, key, jobs, fetch_pods) or _replica_state(adapter.name, revision, serving))
    return out


def adapters_ready(states: list[AdapterState]) -> Condition:
    if not states:
        return true("AdaptersReady", "NoAdapters", "no adapters are desired")
    failed = [s for s in states if s.state == FAILED]
    if failed:
        return false("AdaptersReady", "AdapterFailed", "; ".join(f"{s.name}: {s.reason}: {s.message}" for s in failed))
    waiting = [s for s in states if s.state != READY]
    if waiting:
        return false(
            "AdaptersReady", "AdaptersPending", "; ".join(f"{s.name}: {s.state}: {s.message}" for s in waiting)
        )
    return true(
        "AdaptersReady", "AdaptersReady", f"{len(states)} adapter(s) served: {', '.join(s.name for s in states)}"
    )
