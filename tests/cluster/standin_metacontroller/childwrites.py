"""Carrying out a child plan against the apiserver: server-side apply, Recreate, delete, adopt/release.

Applies go through server-side apply with force (Metacontroller's --apply-strategy=server-side-apply);
an apply is skipped when this exact object was applied and nobody changed the child since (the
per-child hash cache Metacontroller keeps for the same purpose).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from . import children as kids
from .common import SyncError, api_message, describe, log
from .kube import DynamicApiError, Kube, ResourceInfo


def _digest(obj: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


class ChildWrites:
    def __init__(self, kube: Kube):
        self.kube = kube
        self._applied: dict[str, tuple[str, str]] = {}  # child uid -> (desired digest, resourceVersion)

    def set_owner(
        self, info: ResourceInfo, child: dict[str, Any], parent: dict[str, Any], adopt: bool
    ) -> dict[str, Any] | None:
        m = child["metadata"]
        uid = parent["metadata"]["uid"]
        refs = [r for r in m.get("ownerReferences") or [] if r.get("uid") != uid]
        if adopt:
            refs.append(kids.controller_ref_to(parent))
        patch = {"metadata": {"ownerReferences": refs, "resourceVersion": m["resourceVersion"]}}
        try:
            result = self.kube.merge_patch(info.api_version, info.plural, m.get("namespace") or "", m["name"], patch)
        except DynamicApiError as err:
            log.info("child %s %s: %s", "adopt" if adopt else "release", describe(child), api_message(err))
            return None
        log.info("child %s %s (parent %s)", "adopted" if adopt else "released", describe(child), describe(parent))
        result.setdefault("apiVersion", info.api_version)
        result.setdefault("kind", info.kind)
        return result

    def info_for_kind(self, api_version: str, kind: str) -> ResourceInfo:
        try:
            return self.kube.info_for_kind(api_version, kind)
        except Exception as err:  # noqa: BLE001 - discovery failures of any kind fail the sync
            raise SyncError(f"can't find resource for {kind}.{api_version}: {err}") from None

    def execute(self, action: kids.ChildAction, parent: dict[str, Any]) -> None:
        _, namespace, name = action.ident
        source = action.desired or action.observed
        info = self.info_for_kind(source["apiVersion"], source["kind"])
        what = f"{kids.describe(action.ident)} (parent {describe(parent)})"
        if action.verb == "delete":
            uid = action.observed["metadata"]["uid"]
            if self.kube.delete(info.api_version, info.plural, namespace, name, uid):
                log.info("child deleted %s", what)
            self._applied.pop(uid, None)
            return
        digest = _digest(action.desired)
        if action.verb == "create":
            existing = self.kube.get(info.api_version, info.plural, namespace, name)
            if existing is not None:
                log.info("child not created %s: an object of that name exists and is not ours", what)
                return
            result = self.kube.apply(info.api_version, info.plural, action.desired)
            self._applied[result["metadata"]["uid"]] = (digest, result["metadata"]["resourceVersion"])
            log.info("child created %s", what)
            return
        observed_meta = action.observed["metadata"]
        uid, version = observed_meta["uid"], observed_meta["resourceVersion"]
        if self._applied.get(uid) == (digest, version):
            return  # applied this exact object and nobody changed the child since
        if action.verb == "apply":
            result = self.kube.apply(info.api_version, info.plural, action.desired)
            new_version = result["metadata"]["resourceVersion"]
            self._applied[uid] = (digest, new_version)
            if new_version != version:
                log.info("child updated %s", what)
            return
        # recreate: delete now if the desired object differs (created again on a later sync)
        try:
            dry = self.kube.apply(info.api_version, info.plural, action.desired, dry_run=True)
            changed = kids.differs(action.observed, dry)
        except DynamicApiError as err:
            if getattr(err, "status", None) != 422:
                raise
            changed = True  # e.g. an immutable field (a Job's pod template) changed
        if not changed:
            self._applied[uid] = (digest, version)
            return
        if self.kube.delete(info.api_version, info.plural, namespace, name, uid):
            log.info("child deleted for recreate %s", what)
        self._applied.pop(uid, None)
