"""The orphaned-pool sweep: delete agent pools we created whose Machine no longer exists.

A pool can outlive its Machine: a PUT that ARM accepts after the Machine was finalized (a slow or
retried sync), or a Machine removed with its finalizer stripped by hand. A DecoratorController on the
hook server's own Namespace (metacontroller/pool-sweep-controller.yaml) calls `sweep` every few minutes
with every Machine of the cluster as related objects; it deletes each pool that is ours (created by this
install: its tags carry this install's identity and name a Machine, and our node label agrees), has no
Machine of that namespace and name, and was last modified longer ago than the grace period
(so a Machine just created, or a view of the Machines lagging behind ARM, never loses its pool). What it
did is logged and written in an annotation on that Namespace.
"""

from __future__ import annotations

import datetime
import json
import logging
from dataclasses import dataclass
from typing import Any

from hooks import metacontroller, naming
from hooks.machine.pools import INSTALL_TAG, MACHINE_NAMESPACE_TAG, MACHINE_TAG, Pool, PoolsAPI
from hooks.machine.request import InvalidRequest

log = logging.getLogger("kaito.hooks")

GRACE_SECONDS = 15 * 60
RESYNC_SECONDS = 300
MAX_DELETIONS_PER_SWEEP = 5
REPORT_ANNOTATION = "kaito.sh/pool-sweep"
HOOK_SERVICES = "Service.v1"  # related too: proves the related objects were computed (see `machine_keys`)


@dataclass(frozen=True)
class Verdict:
    pool: str
    delete: bool
    reason: str


def _arm_time(value: str) -> datetime.datetime | None:
    """ARM's systemData times ("2026-11-26T12:00:00.1234567Z"): whole seconds, UTC."""
    try:
        return datetime.datetime.strptime(value[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.UTC)
    except ValueError:
        return None


def is_ours(pool: Pool, install_id: str) -> bool:
    """Created by this install for a Machine: pools of other installs, or without our tags, are never swept."""
    return (
        bool(pool.name)
        and bool(install_id)
        and pool.tags.get(INSTALL_TAG) == install_id
        and bool(pool.tags.get(MACHINE_NAMESPACE_TAG))
        and pool.tags.get(MACHINE_TAG) == pool.name
        and (pool.node_labels.get(naming.MACHINE_LABEL) == pool.name)
    )


def owner(pool: Pool) -> tuple[str, str]:
    """(namespace, name) of the Machine the pool was created for."""
    return pool.tags.get(MACHINE_NAMESPACE_TAG, ""), pool.name


def verdicts(
    pools: list[Pool],
    machines: set[tuple[str, str]],
    install_id: str,
    now: datetime.datetime,
    grace_s: int = GRACE_SECONDS,
) -> list[Verdict]:
    """What to do with each pool of ours whose Machine (namespace and name) is gone; pools with their Machine,
    and foreign pools, are left out. A same-named Machine in another namespace does not keep a pool alive."""
    out = []
    for pool in sorted(pools, key=lambda p: p.name):
        if not is_ours(pool, install_id) or owner(pool) in machines:
            continue
        modified = _arm_time(pool.last_modified)
        if pool.provisioning_state == "Deleting":
            out.append(Verdict(pool.name, False, "already being deleted"))
        elif modified is None:
            out.append(Verdict(pool.name, False, f"kept: ARM gave no usable lastModifiedAt ({pool.last_modified!r})"))
        elif (now - modified).total_seconds() < grace_s:
            out.append(
                Verdict(pool.name, False, f"kept: no Machine, but modified {pool.last_modified} (grace {grace_s} s)")
            )
        else:
            namespace, name = owner(pool)
            out.append(
                Verdict(pool.name, True, f"no Machine {namespace}/{name} exists; last modified {pool.last_modified}")
            )
    deleting = [v for v in out if v.delete]
    for extra in deleting[MAX_DELETIONS_PER_SWEEP:]:
        out[out.index(extra)] = Verdict(
            extra.pool, False, f"kept for the next sweep (at most {MAX_DELETIONS_PER_SWEEP} deletions per sweep)"
        )
    return out


def machine_keys(request: dict[str, Any]) -> set[tuple[str, str]] | None:
    """(namespace, name) of every Machine in the cluster, or None when the request does not prove it lists them all.

    Metacontroller may leave out a related kind that has no objects, so an absent Machine list alone
    could mean "none" or "not computed": the hook Service, related by the same customize answer and
    always present, tells the two apart.
    """
    related = request.get("related")
    if not isinstance(related, dict) or not metacontroller.related(request, HOOK_SERVICES):
        return None
    return {
        (str((m.get("metadata") or {}).get("namespace") or ""), str((m.get("metadata") or {}).get("name")))
        for m in metacontroller.related(request, metacontroller.MACHINES).values()
        if isinstance(m, dict)
    }


def customize(request: Any) -> dict[str, Any]:
    """Every Machine of the cluster, and the hook Service (see `machine_keys`)."""
    if not isinstance(request, dict) or not isinstance(request.get("parent"), dict):
        raise InvalidRequest("request has no 'parent' (not a customize request)")
    namespace = (request["parent"].get("metadata") or {}).get("name") or ""
    return {
        "relatedResources": [
            {"apiVersion": "kaito.sh/v1alpha1", "resource": "machines"},
            {
                "apiVersion": "v1",
                "resource": "services",
                "namespace": namespace,
                "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "kaito-hooks"}},
            },
        ]
    }


def sweep(request: Any, pools: PoolsAPI, now: datetime.datetime | None = None) -> dict[str, Any]:
    if not isinstance(request, dict) or not isinstance(request.get("object"), dict):
        raise InvalidRequest("request has no 'object' (not a DecoratorController sync request)")
    now = now or datetime.datetime.now(datetime.UTC)
    machines = machine_keys(request)
    report: dict[str, Any]
    if machines is None:
        report = {"skipped": "the request does not list the cluster's Machines"}
    elif not pools.install_id:
        report = {"skipped": "this install has no identity (KAITO_INSTALL_ID), so no pool can be proven ours"}
    else:
        results = verdicts(pools.list(), machines, pools.install_id, now)
        deleted: list[str] = []
        kept: list[str] = []
        for verdict in results:
            if verdict.delete:
                pools.delete(verdict.pool)
                deleted.append(f"{verdict.pool}: {verdict.reason}")
                log.warning(
                    json.dumps({"sweep": "deleted orphaned agent pool", "pool": verdict.pool, "why": verdict.reason})
                )
            else:
                kept.append(f"{verdict.pool}: {verdict.reason}")
        report = {"deleted": deleted, "kept": kept}
    # No clock in the report: the annotation changes only when the pools do. A changed annotation is a watch
    # event on the Namespace, so a timestamp would make Metacontroller call the sweep again at once, forever.
    return {
        "annotations": {REPORT_ANNOTATION: json.dumps(report, sort_keys=True)},
        "resyncAfterSeconds": RESYNC_SECONDS,
    }
