"""Writes to the parent/target object itself: our finalizer, its status, decorator labels/annotations,
and Warning events about it."""

from __future__ import annotations

import copy
import json
import time
from datetime import UTC, datetime
from typing import Any

from . import hookwire
from .common import SyncError, api_message, describe, log
from .kube import ConflictError, DynamicApiError, Kube, ResourceInfo


class ObjectWrites:
    def __init__(self, kube: Kube):
        self.kube = kube
        self._last_event: dict[tuple, tuple[str, float]] = {}

    def set_finalizer(self, target: ResourceInfo, obj: dict[str, Any], finalizer: str, present: bool) -> dict[str, Any]:
        for _ in range(5):
            m = obj["metadata"]
            finalizers = list(m.get("finalizers") or [])
            if (finalizer in finalizers) == present:
                return obj
            finalizers = finalizers + [finalizer] if present else [f for f in finalizers if f != finalizer]
            patch = {"metadata": {"finalizers": finalizers, "resourceVersion": m["resourceVersion"]}}
            try:
                result = self.kube.merge_patch(
                    target.api_version, target.plural, m.get("namespace") or "", m["name"], patch
                )
                log.info("finalizer %s %s %s", "added to" if present else "removed from", describe(obj), finalizer)
                result.setdefault("apiVersion", target.api_version)
                result.setdefault("kind", target.kind)
                return result
            except ConflictError:
                fresh = self.kube.get(target.api_version, target.plural, m.get("namespace") or "", m["name"])
                if fresh is None or fresh["metadata"]["uid"] != m["uid"]:
                    return obj
                fresh.setdefault("apiVersion", target.api_version)
                fresh.setdefault("kind", target.kind)
                obj = fresh
        raise SyncError(f"could not update the finalizers of {describe(obj)}: conflicts")

    def write_status(self, target: ResourceInfo, obj: dict[str, Any], status: dict[str, Any]) -> None:
        """Replace .status through the status subresource; conflicts and NotFound are left to the next sync."""
        m = obj["metadata"]
        current = obj
        for attempt in range(5):
            if attempt:
                current = self.kube.get(target.api_version, target.plural, m.get("namespace") or "", m["name"])
                if current is None or current["metadata"]["uid"] != m["uid"]:
                    return
            if current.get("status") == status:
                return
            body = copy.deepcopy(current)
            body["status"] = status
            try:
                self.kube.replace_status(target.api_version, target.plural, body)
                log.info("status written %s", describe(obj))
                return
            except ConflictError:
                continue
            except DynamicApiError as err:
                if getattr(err, "status", None) == 404:
                    return
                raise SyncError(f"status update of {describe(obj)}: {api_message(err)}") from None

    def decorate(self, target: ResourceInfo, obj: dict[str, Any], answer: hookwire.DecoratorAnswer) -> dict:
        m = obj["metadata"]
        changes: dict[str, Any] = {}
        for field_name, wanted in (("labels", answer.labels), ("annotations", answer.annotations)):
            current = m.get(field_name) or {}
            delta = {
                k: v
                for k, v in wanted.items()
                if (v is None and k in current) or (v is not None and current.get(k) != v)
            }
            if delta:
                changes[field_name] = delta
        if changes:
            patch = {"metadata": dict(changes, resourceVersion=m["resourceVersion"])}
            try:
                obj = self.kube.merge_patch(
                    target.api_version, target.plural, m.get("namespace") or "", m["name"], patch
                )
                obj.setdefault("apiVersion", target.api_version)
                obj.setdefault("kind", target.kind)
                log.info("labels/annotations updated %s: %s", describe(obj), json.dumps(changes, sort_keys=True))
            except ConflictError:
                raise SyncError(f"{describe(obj)} changed while syncing (conflict); retrying") from None
        if answer.status is not None and answer.status != obj.get("status"):
            if "status" in target.subresources:
                self.write_status(target, obj, answer.status)
            else:
                body = copy.deepcopy(obj)
                body["status"] = answer.status
                self.kube.replace(target.api_version, target.plural, body)
                log.info("status written %s", describe(obj))
        return obj

    def record_event(self, obj: dict[str, Any], reason: str, message: str) -> None:
        """A Warning event on the object (at most one identical message per object every 30 s)."""
        m = obj.get("metadata") or {}
        ident = (obj.get("kind"), m.get("namespace"), m.get("name"), reason)
        last = self._last_event.get(ident)
        if last and last[0] == message and time.monotonic() - last[1] < 30:
            return
        self._last_event[ident] = (message, time.monotonic())
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{m.get('name')}.", "namespace": m.get("namespace") or "default"},
            "involvedObject": {
                "apiVersion": obj.get("apiVersion"),
                "kind": obj.get("kind"),
                "name": m.get("name"),
                "namespace": m.get("namespace"),
                "uid": m.get("uid"),
                "resourceVersion": m.get("resourceVersion"),
            },
            "reason": reason,
            "message": message[:1024],
            "type": "Warning",
            "source": {"component": "metacontroller"},
            "reportingComponent": "metacontroller",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self.kube.create("v1", "events", event)
        except Exception as err:  # noqa: BLE001 - an event is best effort
            log.info("event not recorded for %s: %s", describe(obj), api_message(err))
