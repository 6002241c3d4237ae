"""One sync of one parent (CompositeController) or target (DecoratorController) object.

The order follows Metacontroller's syncParentObject: finalizer first, then claim children, related
objects (customize), the hook, then children, status, labels/annotations, and finally the
finalizer's removal once the finalize hook answers ``finalized: true``. An error anywhere before the
children are touched leaves the cluster unchanged for this round.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from . import children as kids
from . import hookwire, lifecycle, objectmaps, related, webhook
from . import labelselectors as selectors
from .controllers import COMPOSITE, Controller
from .kube import ConflictError, DynamicApiError, Kube, ResourceInfo

log = logging.getLogger("standin_metacontroller")


class SyncError(RuntimeError):
    """The sync failed; the object is retried with backoff (and a SyncError event is recorded)."""


def describe(obj: dict[str, Any]) -> str:
    m = obj.get("metadata") or {}
    return f"{obj.get('kind')} {m.get('namespace') + '/' if m.get('namespace') else ''}{m.get('name')}"


def _digest(obj: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


class Reconciler:
    def __init__(self, kube: Kube, schedule: Callable[[tuple, float], None], watch_related: Callable[[str, str], None]):
        self.kube = kube
        self.schedule = schedule  # (object key, delay seconds) -> requeue later
        self.watch_related = watch_related  # (apiVersion, plural) -> make sure it is watched
        self._applied: dict[str, tuple[str, str]] = {}  # child uid -> (desired digest, resourceVersion)
        self._last_event: dict[tuple, tuple[str, float]] = {}

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
            self.record_event(obj, "SyncError", str(err))
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
            obj = self._set_finalizer(target, obj, ctrl.finalizer, present=True)
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
                    self._execute(action, obj)
                except (DynamicApiError, SyncError) as err:
                    errors.append(f"{action.verb} {kids.describe(action.ident)}: {_api_message(err)}")
        if ctrl.kind == COMPOSITE:
            status = dict(answer.status or {})
            status["observedGeneration"] = m.get("generation")
            self._write_status(target, obj, status)
        else:
            obj = self._decorate(target, obj, answer)
        if finalizing and answer.finalized:
            self._set_finalizer(target, obj, ctrl.finalizer, present=False)
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
                    adopted = self._set_owner(kind.info, child, obj, adopt=True)
                    if adopted is not None:
                        claim.owned.append(adopted)
                for child in claim.release:
                    self._set_owner(kind.info, child, obj, adopt=False)
            for child in claim.owned:
                observed[kids.child_id(group, child)] = child
        return observed

    def _set_owner(
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
            log.info("child %s %s: %s", "adopt" if adopt else "release", describe(child), _api_message(err))
            return None
        log.info("child %s %s (parent %s)", "adopted" if adopt else "released", describe(child), describe(parent))
        result.setdefault("apiVersion", info.api_version)
        result.setdefault("kind", info.kind)
        return result

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
            info = declared.info if declared else self._info_for_kind(obj["apiVersion"], obj["kind"])
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

    def _info_for_kind(self, api_version: str, kind: str) -> ResourceInfo:
        try:
            return self.kube.info_for_kind(api_version, kind)
        except Exception as err:  # noqa: BLE001 - discovery failures of any kind fail the sync
            raise SyncError(f"can't find resource for {kind}.{api_version}: {err}") from None

    def _execute(self, action: kids.ChildAction, parent: dict[str, Any]) -> None:
        _, namespace, name = action.ident
        source = action.desired or action.observed
        info = self._info_for_kind(source["apiVersion"], source["kind"])
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

    def _set_finalizer(
        self, target: ResourceInfo, obj: dict[str, Any], finalizer: str, present: bool
    ) -> dict[str, Any]:
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

    def _write_status(self, target: ResourceInfo, obj: dict[str, Any], status: dict[str, Any]) -> None:
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
                raise SyncError(f"status update of {describe(obj)}: {_api_message(err)}") from None

    def _decorate(self, target: ResourceInfo, obj: dict[str, Any], answer: hookwire.DecoratorAnswer) -> dict:
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
                self._write_status(target, obj, answer.status)
            else:
                body = copy.deepcopy(obj)
                body["status"] = answer.status
                self.kube.replace(target.api_version, target.plural, body)
                log.info("status written %s", describe(obj))
        return obj

    # ------------------------------------------------------------------ events

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
            log.info("event not recorded for %s: %s", describe(obj), _api_message(err))


def _api_message(err: Exception) -> str:
    """The apiserver's message for an API error (its Status), else the exception's text."""
    body = getattr(err, "body", None)
    if body:
        try:
            return json.loads(body).get("message") or str(err)
        except (ValueError, AttributeError):
            return str(body)[:500]
    return str(err).splitlines()[0][:500] if str(err) else type(err).__name__
