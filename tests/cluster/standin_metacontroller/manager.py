"""The stand-in's main loop: controller objects in, watches routed to a work queue, one worker.

Queue keys:
    ("controller", kind, name)                                      load/reload/remove a controller
    ("object", kind, controller, apiVersion, plural, namespace, name)  sync one parent/target
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from . import children as kids
from . import labelselectors as selectors
from . import related
from .common import SyncError
from .controllers import (
    API_VERSION,
    COMPOSITE,
    DECORATOR,
    PLURALS,
    Controller,
    ControllerConfigError,
    load,
)
from .kube import DynamicApiError, Kube, ResourceNotFoundError
from .reconcile import Reconciler
from .watches import Watches
from .webhook import HookRetryLater
from .workqueue import WorkQueue

log = logging.getLogger("standin_metacontroller")


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("metadata") or {}


def _group(api_version: str) -> str:
    return api_version.split("/")[0] if "/" in api_version else ""


class Manager:
    def __init__(self, kube: Kube, max_backoff_s: float = 30.0, target_selector: dict[str, Any] | None = None):
        self.kube = kube
        self.target_selector = target_selector  # --target-label-selector: which controller objects are ours
        self.stop = threading.Event()
        self.queue = WorkQueue(max_backoff_s=max_backoff_s)
        self.watches = Watches(kube, self._on_event, self.stop)
        self.reconciler = Reconciler(kube, self.queue.add_after, self.watches.ensure)
        self._lock = threading.Lock()
        self.controllers: dict[tuple[str, str], Controller] = {}

    # ------------------------------------------------------------------ lifecycle

    def run(self) -> None:
        for plural in PLURALS.values():
            self.watches.ensure(API_VERSION, plural)
        resync = threading.Thread(target=self._resync_loop, name="resync", daemon=True)
        resync.start()
        log.info("standin-metacontroller started (stand-in for Metacontroller v4.17.2)")
        while not self.stop.is_set():
            key = self.queue.get(timeout_s=0.5)
            if key is None:
                continue
            try:
                self._process(key)
            finally:
                self.queue.done(key)
        log.info("standin-metacontroller stopped")

    def shutdown(self) -> None:
        self.stop.set()
        self.queue.close()

    # ------------------------------------------------------------------ the worker

    def _process(self, key: tuple) -> None:
        try:
            if key[0] == "controller":
                self._load_controller(key[1], key[2])
            else:
                self._sync_object(key)
            self.queue.forget(key)
        except HookRetryLater as later:
            if later.delay_s > 0:
                self.queue.add_after(key, later.delay_s)
            else:
                self.queue.add_rate_limited(key)
        except (SyncError, ControllerConfigError) as err:
            delay = self.queue.add_rate_limited(key)
            log.info("sync failed %s (retry in %.2fs): %s", _describe_key(key), delay, err)
        except (DynamicApiError, ResourceNotFoundError) as err:
            delay = self.queue.add_rate_limited(key)
            log.info("sync failed %s (retry in %.2fs): %s", _describe_key(key), delay, str(err).splitlines()[0][:500])
        except Exception:
            delay = self.queue.add_rate_limited(key)
            log.exception("sync crashed %s (retry in %.2fs)", _describe_key(key), delay)

    def _load_controller(self, kind: str, name: str) -> None:
        obj = self.kube.get(API_VERSION, PLURALS[kind], "", name)
        with self._lock:
            current = self.controllers.get((kind, name))
        if obj is not None and not selectors.matches(self.target_selector, _meta(obj).get("labels")):
            obj = None  # another instance's controller (--target-label-selector)
        if obj is None:
            if current is not None:
                with self._lock:
                    self.controllers.pop((kind, name), None)
                log.info("controller %s/%s removed", kind, name)
            return
        obj.setdefault("apiVersion", API_VERSION)
        obj.setdefault("kind", kind)
        if current is not None and current.resource_version == _meta(obj).get("resourceVersion"):
            return
        try:
            ctrl = load(self.kube, kind, obj)
        except ControllerConfigError as err:
            with self._lock:
                self.controllers.pop((kind, name), None)
            self.reconciler.writes.record_event(obj, "ConfigError", str(err))
            raise
        ctrl.next_resync = time.monotonic() + ctrl.resync_s if ctrl.resync_s else 0.0
        with self._lock:
            self.controllers[(kind, name)] = ctrl
        log.info(
            "controller %s/%s %s: hooks %s, resync %gs",
            kind,
            name,
            "reloaded" if current else "started",
            sorted(ctrl.hooks),
            ctrl.resync_s,
        )
        for info, _ in ctrl.targets:
            self.watches.ensure(info.api_version, info.plural)
            for target in self.watches.objects(info.api_version, info.plural):
                self.queue.add(self._key(ctrl, info.api_version, info.plural, target))
        for child in ctrl.children.values():
            self.watches.ensure(child.info.api_version, child.info.plural)

    def _sync_object(self, key: tuple) -> None:
        _, kind, name, api_version, plural, _, _ = key
        with self._lock:
            ctrl = self.controllers.get((kind, name))
        if ctrl is None:
            return
        for info, rule in ctrl.targets:
            if (info.api_version, info.plural) == (api_version, plural):
                self.reconciler.sync(ctrl, key, info, rule)
                return

    # ------------------------------------------------------------------ routing watch events

    @staticmethod
    def _key(ctrl: Controller, api_version: str, plural: str, obj: dict[str, Any]) -> tuple:
        m = _meta(obj)
        return ("object", ctrl.kind, ctrl.name, api_version, plural, m.get("namespace") or "", m.get("name"))

    def _on_event(
        self, api_version: str, plural: str, kind: str, obj: dict[str, Any], old: dict[str, Any] | None
    ) -> None:
        if api_version == API_VERSION and plural in PLURALS.values():
            ctrl_kind = COMPOSITE if plural == PLURALS[COMPOSITE] else DECORATOR
            self.queue.add(("controller", ctrl_kind, _meta(obj).get("name")))
            return
        with self._lock:
            controllers = list(self.controllers.values())
        for ctrl in controllers:
            for info, rule in ctrl.targets:
                if (info.api_version, info.plural) == (api_version, plural):
                    if (
                        kind == "MODIFIED"
                        and old is not None
                        and rule.get("ignoreStatusChanges")
                        and not _meaningful_change(old, obj)
                    ):
                        continue
                    self.queue.add(self._key(ctrl, api_version, plural, obj))
            for child in ctrl.children.values():
                if (child.info.api_version, child.info.plural) == (api_version, plural):
                    for version in (obj, old):
                        if version is not None:
                            self._route_child(ctrl, version)
            self._route_related(ctrl, api_version, plural, obj, old)

    def _route_child(self, ctrl: Controller, child: dict[str, Any]) -> None:
        namespace = _meta(child).get("namespace") or ""
        ref = kids.controller_ref(child)
        for info, _ in ctrl.targets:
            if ref is not None:
                if ref.get("kind") == info.kind and _group(ref.get("apiVersion", "")) == _group(info.api_version):
                    key = (
                        "object",
                        ctrl.kind,
                        ctrl.name,
                        info.api_version,
                        info.plural,
                        namespace if info.namespaced else "",
                        ref.get("name"),
                    )
                    self.queue.add(key)
                continue
            if ctrl.kind != COMPOSITE:
                continue
            # an orphan: the parents whose selector it matches may adopt it
            labels = _meta(child).get("labels") or {}
            for parent in self.watches.objects(info.api_version, info.plural):
                pm = _meta(parent)
                if info.namespaced and pm.get("namespace") != namespace:
                    continue
                if ctrl.spec.get("generateSelector"):
                    hit = labels.get(kids.CONTROLLER_UID_LABEL) == pm.get("uid")
                else:
                    selector = (parent.get("spec") or {}).get("selector")
                    try:
                        hit = not selectors.is_empty(selector) and selectors.matches(selector, labels)
                    except selectors.SelectorError:
                        hit = False
                if hit:
                    self.queue.add(self._key(ctrl, info.api_version, info.plural, parent))

    def _route_related(
        self, ctrl: Controller, api_version: str, plural: str, obj: dict[str, Any], old: dict[str, Any] | None
    ) -> None:
        for key, rules in list(ctrl.related_rules.items()):
            parent_stub = {"metadata": {"namespace": key[5], "name": key[6]}}
            for rule in rules:
                if (rule["apiVersion"], rule["resource"]) != (api_version, plural):
                    continue
                try:
                    hit = any(
                        related.matches(
                            rule, rule["_version"], parent_stub, rule["_namespaced"], version, namespace_labels=None
                        )
                        or related.selection(rule) == related.BY_NAMESPACE_SELECTOR
                        for version in (obj, old)
                        if version is not None
                    )
                except (related.RuleError, selectors.SelectorError):
                    hit = False
                if hit:
                    self.queue.add(key)
                    break

    # ------------------------------------------------------------------ periodic resync

    def _resync_loop(self) -> None:
        while not self.stop.wait(0.5):
            now = time.monotonic()
            with self._lock:
                due = [c for c in self.controllers.values() if c.resync_s and c.next_resync <= now]
                for ctrl in due:
                    ctrl.next_resync = now + ctrl.resync_s
            for ctrl in due:
                for info, _ in ctrl.targets:
                    for obj in self.watches.objects(info.api_version, info.plural):
                        self.queue.add(self._key(ctrl, info.api_version, info.plural, obj))


def _meaningful_change(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """ignoreStatusChanges: only generation, labels, annotations, deletionTimestamp count."""
    fields = ("generation", "labels", "annotations", "deletionTimestamp")
    return any(_meta(old).get(f) != _meta(new).get(f) for f in fields)


def _describe_key(key: tuple) -> str:
    if key[0] == "controller":
        return f"{key[1]}/{key[2]}"
    _, kind, name, api_version, plural, namespace, obj_name = key
    return f"{kind}/{name} {plural}.{api_version} {namespace + '/' if namespace else ''}{obj_name}"
