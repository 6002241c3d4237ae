"""Reading the cluster the way a user does (`kubectl get ... -o json`), and bounded waits on it."""

from __future__ import annotations

import json
import re

from controlplane import ControlPlane

WAIT_S = 180  # the longest any single step of a user's path may take here


def get(cluster: ControlPlane, *args: str) -> dict | None:
    """The object (or List) as JSON, or None when it does not exist."""
    out = cluster.kubectl("get", *args, "-o", "json", check=False)
    if out.returncode != 0:
        if "NotFound" in out.stderr:
            return None
        raise AssertionError(f"kubectl get {' '.join(args)}: {out.stderr}")
    return json.loads(out.stdout)


def items(cluster: ControlPlane, *args: str) -> list[dict]:
    return (get(cluster, *args) or {}).get("items", [])


def condition(obj: dict | None, kind: str) -> dict:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == kind:
            return c
    return {}


def wait_condition(
    cluster: ControlPlane,
    namespace: str,
    kind: str,
    name: str,
    condition_type: str,
    status: str = "True",
    reason: str | None = None,
    timeout: float = WAIT_S,
) -> dict:
    """Wait until the object's condition has `status` (and `reason`); return the object."""

    last = {}

    def probe_keeping_last():
        obj = get(cluster, kind, name, "-n", namespace)
        last["status"] = (obj or {}).get("status")
        c = condition(obj, condition_type)
        return obj if c.get("status") == status and (reason is None or c.get("reason") == reason) else None

    try:
        return cluster.wait_for(
            f"{kind}/{name} {condition_type}={status}" + (f" ({reason})" if reason else ""),
            probe_keeping_last,
            timeout=timeout,
            every=1,
        )
    except Exception as error:  # noqa: BLE001 - re-raised with the last status
        raise AssertionError(
            f"{error}\nlast status of {kind}/{name}: {json.dumps(last.get('status'), indent=1)}"
        ) from None


def printed_columns(cluster: ControlPlane, namespace: str, kind: str, name: str, *options: str) -> dict[str, str]:
    """`kubectl get KIND NAME [options]` as the user sees it: {column header: value} (a value may be empty,
    so columns are cut where the header's words start, not at whitespace)."""
    header, row = cluster.kubectl("get", kind, name, "-n", namespace, *options).stdout.splitlines()[:2]
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    ends = starts[1:] + [None]
    return {header[a:b].strip(): row[a:b].strip() for a, b in zip(starts, ends, strict=True)}
