"""One sync of one parent (CompositeController) or target (DecoratorController) object.

The order follows Metacontroller's syncParentObject: finalizer first, then claim children, related
objects (customize), the hook, then children, status, labels/annotations, and finally the
finalizer's removal once the finalize hook answers ``finalized: true``. An error anywhere before the
children are touched leaves the cluster unchanged for this round.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from . import children as kids
from . import hookwire, lifecycle, objectmaps, related, webhook
from . import labelselectors as selectors
from .childwrites import ChildWrites
from .common import SyncError, api_message, describe, log
from .controllers import COMPOSITE, Controller
from .kube import DynamicApiError, Kube, ResourceInfo
from .objectwrites import ObjectWrites


class Reconciler:
    def __init__(self, kube: Kube, schedule: Callable[[tuple, float], None], watch_related: Callable[[str, str], None]):
        self.kube = kube
        self.schedule = schedule  # (object key, delay seconds) -> requeue later
        self.watch_related = watch_related  # (apiVersion, plural) -> make sure it is watched
        self.child_writes = ChildWrites(kube)
        self.writes = ObjectWrites(kube)

    # ------------------------------------------------------------------ entry point

    def sync(self, ctrl: Controller, key: tuple, target: ResourceInfo, rule: dict[str, Any]) -> None:
        namespace, name = key[-2], key[-1]
        obj = self.kube.get(target.api_version, target.plural, namespace, name)
        if obj is None:
            ctrl.related_rules.pop(key, None)
            return
        obj.setdefault("apiVersion", target.api_version)
        obj.setdefault("kind", target.kind)
        try:
            self._sync(ctrl, key, target, rule, obj)
        except (
            SyncError,
            webhook.HookCallError,
            hookwire.HookAnswerError,
            kids.DesiredChildError,
            related.RuleError,
            selectors.SelectorError,
        ) as err:
            self.writes.record_event(obj, "SyncError", str(err))
            raise SyncError(str(err)) from None

    # ------------------------------------------------------------------ the sync

    def _selected(self, ctrl: Controller, rule: dict[str, Any], obj: dict[str, Any]) -> bool:
        m = obj.get("metadata") or {}
        if not selectors.matches(rule.get("labelSelector"), m.get("labels")):
            return False
        return selectors.matches(
            rule.get("annotationSelector"),
            m.get("annotations"),
            match_key="matchAnnotations",
            where="annotationSelector",
        )

    def _sync(
        self, ctrl: Controller, key: tuple, target: ResourceInfo, rule: dict[str, Any], obj: dict[str, Any]
    ) -> None:
        m = obj["metadata"]
        step = lifecycle.decide(
            selected=self._selected(ctrl, rule, obj),
            finalizers=m.get("finalizers") or [],
            our_finalizer=ctrl.finalizer,
            deleting=bool(m.get("deletionTimestamp")),
            has_finalize_hook="finalize" in ctrl.hooks,
        )
        if step.hook is None:
            return
        if step.add_finalizer:
            obj = self.writes.set_finalizer(target, obj, ctrl.finalizer, present=True)
        hook = ctrl.hooks.get(step.hook)
        if hook is None:
            raise SyncError("no enabled hooks found")
        finalizing = step.hook == "finalize"

        parent_namespaced = target.namespaced
        observed = self._observed_children(ctrl, obj, parent_namespaced)
        related_groups = self._related(ctrl, key, obj, target)
        observed_groups = kids.group_objects(ctrl.children, ((ident[0], o) for ident, o in observed.items()))
        children_map = objectmaps.object_map(observed_groups, hook.version, parent_namespaced)
        related_map = objectmaps.object_map(related_groups, hook.version, parent_namespaced)
        if ctrl.kind == COMPOSITE:
            body = hookwire.composite_request(ctrl.obj, obj, children_map, related_map, finalizing)
        else:
            body = hookwire.decorator_request(ctrl.obj, obj, children_map, related_map, finalizing)
        answer_body = self._call(ctrl, hook, obj, body)
        if ctrl.kind == COMPOSITE:
            answer = hookwire.parse_composite(answer_body, hook.mode)
            desired_objs = answer.children
        else:
            answer = hookwire.parse_decorator(answer_body, hook.mode)
            desired_objs = answer.attachments
        log.info(
            "hook %s %s/%s %s -> ok (%d %s, resyncAfterSeconds=%g, finalized=%s)",
            hook.name,
            ctrl.kind,
            ctrl.name,
            describe(obj),
            len(desired_objs),
            "children" if ctrl.kind == COMPOSITE else "attachments",
            answer.resync_after_seconds,
            answer.finalized,
        )
        if answer.resync_after_seconds > 0:
            self.schedule(key, answer.resync_after_seconds)

        desired = self._desired(ctrl, obj, desired_objs)
        errors: list[str] = []
        if step.manage_children:
            methods = {group: kind.method for group, kind in ctrl.children.items()}
            for action in kids.plan(observed, desired, methods):
                try:
                    self.child_writes.execute(action, obj)
                except (DynamicApiError, SyncError) as err:
                    errors.append(f"{action.verb} {kids.describe(action.ident)}: {api_message(err)}")
        if ctrl.kind == COMPOSITE:
            status = dict(answer.status or {})
            status["observedGeneration"] = m.get("generation")
            self.writes.write_status(target, obj, status)
        else:
            obj = self.writes.decorate(target, obj, answer)
        if finalizing and answer.finalized:
            self.writes.set_finalizer(target, obj, ctrl.finalizer, present=False)
        if errors:
            raise SyncError("; ".join(errors))

    # ------------------------------------------------------------------ hook call

    def _call(self, ctrl: Controller, hook, obj: dict[str, Any], body: dict[str, Any]) -> bytes:
        started = time.monotonic()
        try:
            answer = webhook.post(hook.connection, body)
        except webhook.HookRetryLater:
            log.info(
                "hook %s %s/%s %s -> 429 (%.0f ms)",
                hook.name,
                ctrl.kind,
                ctrl.name,
                describe(obj),
                (time.monotonic() - started) * 1000,
            )
            raise
        except webhook.HookCallError as err:
            log.info(
                "hook %s %s/%s %s -> error (%.0f ms): %s",
                hook.name,
                ctrl.kind,
                ctrl.name,
                describe(obj),
                (time.monotonic() - started) * 1000,
                err,
            )
            raise
        return answer

    # ------------------------------------------------------------------ children

    def _candidates(self, info: ResourceInfo, parent: dict[str, Any]) -> list[dict[str, Any]]:
        namespace = (parent.get("metadata") or {}).get("namespace") or ""
        items, _ = self.kube.list(info.api_version, info.plural, namespace if info.namespaced else "")
        return items

    def _observed_children(
        self, ctrl: Controller, obj: dict[str, Any], parent_namespaced: bool
    ) -> dict[kids.ChildId, dict[str, Any]]:
        if not ctrl.children:
            return {}
        if ctrl.kind == COMPOSITE:
            selected = kids.composite_selector(ctrl.spec, obj)
        else:
            selected = kids.attachment_selector(ctrl.name, obj)
        observed: dict[kids.ChildId, dict[str, Any]] = {}
        for group, kind in ctrl.children.items():
            claim = kids.claim_children(obj, self._candidates(kind.info, obj), selected)
            if ctrl.kind == COMPOSITE:
                for child in claim.adopt:
                    adopted = self.child_writes.set_owner(kind.info, child, obj, adopt=True)
                    if adopted is not None:
                        claim.owned.append(adopted)
                for child in claim.release:
                    self.child_writes.set_owner(kind.info, child, obj, adopt=False)
            for child in claim.owned:
                observed[kids.child_id(group, child)] = child
        return observed

    def _desired(
        self, ctrl: Controller, parent: dict[str, Any], objs: list[dict[str, Any]]
    ) -> dict[kids.ChildId, dict[str, Any]]:
        desired: dict[kids.ChildId, dict[str, Any]] = {}
        selected = None
        if ctrl.kind == COMPOSITE and not ctrl.spec.get("generateSelector"):
            selected = kids.composite_selector(ctrl.spec, parent)
        for obj in objs:
            group = objectmaps.group_key(obj["apiVersion"], obj["kind"])
            declared = ctrl.children.get(group)
            info = declared.info if declared else self.child_writes.info_for_kind(obj["apiVersion"], obj["kind"])
            shaped = kids.shape_desired(
                parent,
                obj,
                info.namespaced,
                generate_selector=ctrl.kind == COMPOSITE and bool(ctrl.spec.get("generateSelector")),
                selected=selected,
                decorator_name=ctrl.name if ctrl.kind != COMPOSITE else None,
            )
            desired[kids.child_id(group, shaped)] = shaped
        return desired

    # ------------------------------------------------------------------ related objects

    def _related(
        self, ctrl: Controller, key: tuple, obj: dict[str, Any], target: ResourceInfo
    ) -> dict[str, list[dict[str, Any]]]:
        hook = ctrl.hooks.get("customize")
        if hook is None:
            return {}
        m = obj["metadata"]
        rules = ctrl.cached_rules(m["uid"], m.get("generation", 0))
        if rules is None:
            body = hookwire.customize_request(ctrl.obj, obj)
            answer = self._call(ctrl, hook, obj, body)
            rules = hookwire.parse_customize(answer, hook.mode)
            log.info(
                "hook customize %s/%s %s -> ok (%d related rules)", ctrl.kind, ctrl.name, describe(obj), len(rules)
            )
            ctrl.cache_rules(m["uid"], m.get("generation", 0), rules)
        ctrl.related_rules[key] = [dict(r, _version=hook.version, _namespaced=target.namespaced) for r in rules]
        groups: dict[str, list[dict[str, Any]]] = {}
        for rule in rules:
            try:
                info = self.kube.info(rule["apiVersion"], rule["resource"])
            except Exception as err:  # noqa: BLE001
                raise SyncError(f"related resource {rule['resource']}.{rule['apiVersion']}: {err}") from None
            self.watch_related(rule["apiVersion"], rule["resource"])
            namespace = related.list_namespace(rule, hook.version, obj, target.namespaced, info.namespaced)
            items, _ = self.kube.list(info.api_version, info.plural, namespace if info.namespaced else "")
            ns_labels = None
            if related.selection(rule) == related.BY_NAMESPACE_SELECTOR:
                namespaces, _ = self.kube.list("v1", "namespaces")
                ns_labels = {n["metadata"]["name"]: n["metadata"].get("labels") or {} for n in namespaces}
            group = objectmaps.group_key(info.api_version, info.kind)
            bucket = groups.setdefault(group, [])
            for item in items:
                if related.matches(rule, hook.version, obj, target.namespaced, item, ns_labels):
                    bucket.append(item)
        return groups

    # ------------------------------------------------------------------ writes to the object itself
