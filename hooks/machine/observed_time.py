"""The Machine hook's "now": the latest time visible in the request, so the same request gives the same status."""

from __future__ import annotations

from typing import Any

from hooks import kube
from hooks.machine.pools import Pool

EPOCH = "1970-01-01T00:00:00Z"


def observed_time(obj: dict[str, Any], pool: Pool | None, node: dict[str, Any] | None) -> str:
    """The latest timestamp visible in the inputs: a deterministic stand-in for "now".

    Candidates: the Machine's creation and managedFields times and its conditions, the related
    Node's creation and condition (transition/heartbeat) times, and the pool's ARM systemData
    time. A transition is therefore stamped no earlier than the last thing we saw happen.
    """
    metadata = obj.get("metadata") or {}
    candidates = [metadata.get("creationTimestamp"), pool.last_modified if pool else None]
    candidates += [entry.get("time") for entry in metadata.get("managedFields") or [] if isinstance(entry, dict)]
    candidates += [
        c.get("lastTransitionTime") for c in (obj.get("status") or {}).get("conditions") or [] if isinstance(c, dict)
    ]
    if node:
        candidates.append((node.get("metadata") or {}).get("creationTimestamp"))
        for condition in (node.get("status") or {}).get("conditions") or []:
            if isinstance(condition, dict):
                candidates += [condition.get("lastTransitionTime"), condition.get("lastHeartbeatTime")]
    times = [t for t in map(kube.parse_time, candidates) if t is not None]
    return max(times).strftime(kube.TIME_FORMAT) if times else EPOCH
