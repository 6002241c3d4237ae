"""Children (and attachments): claiming observed objects, shaping desired ones, planning changes.

Pure functions over plain dicts; the reconcilers execute the plan against the apiserver.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from . import labelselectors as selectors

CONTROLLER_UID_LABEL = "controller-uid"
DECORATOR_ANNOTATION = "metacontroller.k8s.io/decorator-controller"
SYSTEM_METADATA = (
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
)

ChildId = tuple[str, str, str]  # (group key "Kind.apiVersion", namespace, name)


class DesiredChildError(ValueError):
    """A child in the hook's answer that cannot be applied (the sync fails, nothing changes)."""


def meta(obj: Mapping[str, Any]) -> dict[str, Any]:
    return obj.get("metadata") or {}


def child_id(group: str, obj: Mapping[str, Any]) -> ChildId:
    return (group, meta(obj).get("namespace") or "", meta(obj).get("name") or "")


def describe(ident: ChildId) -> str:
    group, namespace, name = ident
    return f"{group} {namespace + '/' if namespace else ''}{name}"


def controller_ref(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    for ref in meta(obj).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref
    return None


def controller_ref_to(parent: Mapping[str, Any]) -> dict[str, Any]:
    m = meta(parent)
    return {
        "apiVersion": parent["apiVersion"],
        "kind": parent["kind"],
        "name": m["name"],
        "uid": m["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def is_deleting(obj: Mapping[str, Any]) -> bool:
    return bool(meta(obj).get("deletionTimestamp"))


# ----------------------------------------------------------------------------------------------
# Claiming (ControllerRef rules)


@dataclass(frozen=True)
class Claim:
    owned: list[dict[str, Any]]  # ours and matching: reported to the hook
    adopt: list[dict[str, Any]]  # orphans matching the selector: become ours
    release: list[dict[str, Any]]  # ours but no longer matching: ownerReference removed


def claim_children(
    parent: Mapping[str, Any], candidates: Iterable[dict[str, Any]], selected: Callable[[Mapping[str, Any]], bool]
) -> Claim:
    uid = meta(parent)["uid"]
    owned, adopt, release = [], [], []
    for obj in candidates:
        ref = controller_ref(obj)
        if ref is not None:
            if ref.get("uid") != uid:
                continue
            if selected(obj):
                owned.append(obj)
            elif not is_deleting(parent):
                release.append(obj)
        elif selected(obj) and not is_deleting(parent) and not is_deleting(obj):
            adopt.append(obj)
    return Claim(owned, adopt, release)


def composite_selector(controller_spec: Mapping[str, Any], parent: Mapping[str, Any]) -> Callable[[Mapping], bool]:
    """How a CompositeController selects its parent's children (labels only)."""
    if controller_spec.get("generateSelector"):
        uid = meta(parent)["uid"]
        return lambda obj: (meta(obj).get("labels") or {}).get(CONTROLLER_UID_LABEL) == uid
    selector = (parent.get("spec") or {}).get("selector")
    if selectors.is_empty(selector):
        raise DesiredChildError(
            f"{parent.get('kind')} {meta(parent).get('name')} has no spec.selector "
            "(set it, or generateSelector: true on the CompositeController)"
        )
    return lambda obj: selectors.matches(selector, meta(obj).get("labels"))


def attachment_selector(controller_name: str, target: Mapping[str, Any]) -> Callable[[Mapping], bool]:
    """A DecoratorController's attachments: controller ref to the target plus the annotation."""
    uid = meta(target)["uid"]

    def selected(obj: Mapping[str, Any]) -> bool:
        ref = controller_ref(obj)
        return (
            ref is not None
            and ref.get("uid") == uid
            and (meta(obj).get("annotations") or {}).get(DECORATOR_ANNOTATION) == controller_name
        )

    return selected


# ----------------------------------------------------------------------------------------------
# Desired objects


def shape_desired(
    parent: Mapping[str, Any],
    obj: Mapping[str, Any],
    namespaced: bool,
    *,
    generate_selector: bool = False,
    selected: Callable[[Mapping], bool] | None = None,
    decorator_name: str | None = None,
) -> dict[str, Any]:
    """The object to server-side apply for one desired child/attachment of ``parent``.

    Drops status and system metadata, defaults the namespace to the parent's, injects the
    ``controller-uid`` label (generateSelector) or checks the labels against the parent's selector,
    adds the decorator annotation for attachments, and appends the controller ownerReference.
    """
    desired = copy.deepcopy(dict(obj))
    desired.pop("status", None)
    metadata = desired.setdefault("metadata", {})
    if not isinstance(metadata, dict) or not isinstance(metadata.get("name"), str) or not metadata["name"]:
        raise DesiredChildError(
            f"desired {desired.get('kind')} has no metadata.name (Metacontroller needs stable names)"
        )
    for key in SYSTEM_METADATA:
        metadata.pop(key, None)
    parent_ns = meta(parent).get("namespace") or ""
    if namespaced:
        metadata.setdefault("namespace", parent_ns)
        if not metadata["namespace"]:
            raise DesiredChildError(
                f"desired {desired['kind']} {metadata['name']} needs metadata.namespace (the parent is cluster-scoped)"
            )
        if parent_ns and metadata["namespace"] != parent_ns:
            raise DesiredChildError(
                f"desired {desired['kind']} {metadata['name']} is in namespace "
                f"{metadata['namespace']}, not the parent's {parent_ns}"
            )
    else:
        metadata.pop("namespace", None)
    if generate_selector:
        labels = metadata.setdefault("labels", {}) or {}
        metadata["labels"] = labels
        labels.setdefault(CONTROLLER_UID_LABEL, meta(parent)["uid"])
    elif selected is not None and not selected(desired):
        raise DesiredChildError(
            f"labels on desired child {desired['kind']} {metadata['name']} don't match parent selector"
        )
    if decorator_name is not None:
        annotations = metadata.get("annotations") or {}
        annotations[DECORATOR_ANNOTATION] = decorator_name
        metadata["annotations"] = annotations
    refs = [r for r in metadata.get("ownerReferences") or [] if r.get("uid") != meta(parent)["uid"]]
    metadata["ownerReferences"] = refs + [controller_ref_to(parent)]
    return desired


# ----------------------------------------------------------------------------------------------
# Plan


@dataclass(frozen=True)
class ChildAction:
    verb: str  # create | apply | recreate | delete
    ident: ChildId
    desired: dict[str, Any] | None
    observed: dict[str, Any] | None


def plan(
    observed: Mapping[ChildId, dict[str, Any]], desired: Mapping[ChildId, dict[str, Any]], methods: Mapping[str, str]
) -> list[ChildAction]:
    """Deletions of observed objects not desired, creations, and updates per update strategy.

    ``recreate`` means: delete the observed object if it differs from the desired one (the caller
    decides with a server-side dry run); it is created again on a later sync.
    """
    actions: list[ChildAction] = []
    for ident, obj in observed.items():
        if ident not in desired and not is_deleting(obj):
            actions.append(ChildAction("delete", ident, None, obj))
    for ident, want in desired.items():
        have = observed.get(ident)
        if have is None:
            actions.append(ChildAction("create", ident, want, None))
            continue
        if is_deleting(have):
            continue
        method = methods.get(ident[0]) or "OnDelete"
        if method == "OnDelete":
            continue
        if method in ("InPlace", "RollingInPlace"):
            actions.append(ChildAction("apply", ident, want, have))
        elif method in ("Recreate", "RollingRecreate"):
            actions.append(ChildAction("recreate", ident, want, have))
        else:
            raise DesiredChildError(f"invalid update strategy for {ident[0]}: unknown method {method!r}")
    return actions


def differs(live: Mapping[str, Any], applied: Mapping[str, Any]) -> bool:
    """Whether a dry-run apply result differs from the live object (ignoring bookkeeping fields)."""

    def strip(obj: Mapping[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(dict(obj))
        out.pop("status", None)
        m = out.get("metadata") or {}
        for key in ("resourceVersion", "managedFields", "generation", "creationTimestamp"):
            m.pop(key, None)
        return out

    return strip(live) != strip(applied)


def group_objects(group_keys: Iterable[str], objects: Iterable[tuple[str, dict[str, Any]]]) -> dict[str, list]:
    groups: dict[str, list] = {key: [] for key in group_keys}
    for key, obj in objects:
        groups.setdefault(key, []).append(obj)
    return groups
