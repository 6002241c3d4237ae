"""Reading the Kubernetes objects both hooks see: conditions, Node readiness, condition times."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(\.\d+)?(Z|[+-]\d{2}:?\d{2})?$")


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    """The object's status condition of this type, or None."""
    for c in (obj.get("status") or {}).get("conditions") or []:
        if isinstance(c, dict) and c.get("type") == type_:
            return c
    return None


def node_readiness(node: dict[str, Any]) -> tuple[bool, str]:
    """(the Node's Ready condition is True, that condition's reason and message)."""
    ready = condition(node, "Ready")
    if ready is None:
        return False, "no Ready condition reported yet"
    detail = ": ".join(x for x in (ready.get("reason"), ready.get("message")) if x)
    return ready.get("status") == "True", detail


def node_is_ready(node: dict[str, Any]) -> bool:
    """Ready and not being deleted: a node that work can be placed on."""
    return node_readiness(node)[0] and not (node.get("metadata") or {}).get("deletionTimestamp")


def now() -> str:
    return datetime.now(UTC).strftime(TIME_FORMAT)


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 timestamp (fraction and offset optional) in UTC, or None."""
    match = _TIME.match(str(value or "").strip())
    if not match:
        return None
    date, clock, _fraction, zone = match.groups()
    zone = zone or "Z"
    if zone == "Z":
        zone = "+00:00"
    elif ":" not in zone:
        zone = zone[:3] + ":" + zone[3:]
    try:
        return datetime.fromisoformat(f"{date}T{clock}{zone}").astimezone(UTC)
    except ValueError:
        return None


def stamp_transition_times(
    conditions: Iterable[dict[str, Any]], observed: Iterable[Any] | None, now: str
) -> list[dict[str, Any]]:
    """Each condition with its lastTransitionTime: the observed one while the status holds, else `now`."""
    before = {c.get("type"): c for c in observed or [] if isinstance(c, dict)}
    stamped = []
    for c in conditions:
        prev = before.get(c["type"]) or {}
        keep = prev.get("status") == c["status"] and parse_time(prev.get("lastTransitionTime")) is not None
        stamped.append({**c, "lastTransitionTime": prev["lastTransitionTime"] if keep else now})
    return stamped
