"""Which objects a customize hook's ``relatedResources`` rule selects (pure functions).

Selection kinds, as Metacontroller v4.17 decides them:
    names (+ optional namespace)      -> ``names`` or ``namespace`` set, no selector
    namespace + labelSelector         -> ``namespace`` and ``labelSelector``
    namespaceSelector (+ labelSelector)
    labelSelector alone (or nothing)  -> everything matching the labels
``names`` cannot be combined with a selector; ``namespace`` cannot be combined with a
``namespaceSelector``. With hook version v1 a namespaced parent only sees namespaced related objects
of its own namespace (a rule naming another namespace is an error); with v2, or for a cluster-scoped
parent, any namespace and cluster-scoped kinds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import labelselectors as selectors

BY_LABELS = "labels"
BY_NAMESPACE_AND_LABELS = "namespace+labels"
BY_NAMESPACE_SELECTOR = "namespaceSelector"
BY_NAMES = "namespace/names"


class RuleError(ValueError):
    """A related rule Metacontroller refuses."""


def selection(rule: Mapping[str, Any]) -> str:
    has_labels = rule.get("labelSelector") is not None
    has_ns_selector = rule.get("namespaceSelector") is not None
    has_namespace = bool(rule.get("namespace"))
    has_names = bool(rule.get("names"))
    if has_names and (has_labels or has_ns_selector):
        raise RuleError(f"related rule cannot have both names and labelSelector/namespaceSelector: {dict(rule)}")
    if has_namespace and has_ns_selector:
        raise RuleError(f"related rule cannot have both namespace and namespaceSelector: {dict(rule)}")
    if has_ns_selector:
        return BY_NAMESPACE_SELECTOR
    if has_labels and has_namespace:
        return BY_NAMESPACE_AND_LABELS
    if has_namespace or has_names:
        return BY_NAMES
    return BY_LABELS


def list_namespace(
    rule: Mapping[str, Any],
    hook_version: str,
    parent: Mapping[str, Any],
    parent_namespaced: bool,
    related_namespaced: bool,
) -> str:
    """The namespace to list the rule's kind in ("" = all namespaces / cluster-scoped)."""
    kind = selection(rule)
    parent_ns = (parent.get("metadata") or {}).get("namespace") or ""
    v1_confined = hook_version != "v2" and parent_namespaced and related_namespaced
    if kind == BY_LABELS:
        return parent_ns if v1_confined else ""
    if kind == BY_NAMES and v1_confined and rule.get("namespace") and rule["namespace"] != parent_ns:
        raise RuleError(
            f"requested related object namespace {rule['namespace']} differs from parent object namespace {parent_ns}"
        )
    if kind in (BY_NAMES, BY_NAMESPACE_AND_LABELS):
        return rule.get("namespace") or ""
    return ""


def matches(
    rule: Mapping[str, Any],
    hook_version: str,
    parent: Mapping[str, Any],
    parent_namespaced: bool,
    related: Mapping[str, Any],
    namespace_labels: Mapping[str, Mapping[str, str]] | None = None,
) -> bool:
    """Whether ``related`` (of the rule's kind, in the rule's apiVersion) is selected for ``parent``."""
    kind = selection(rule)
    meta = related.get("metadata") or {}
    labels = meta.get("labels") or {}
    namespace = meta.get("namespace") or ""
    parent_ns = (parent.get("metadata") or {}).get("namespace") or ""
    v1_confined = hook_version != "v2" and parent_namespaced
    if kind == BY_LABELS:
        if not selectors.matches(rule.get("labelSelector"), labels):
            return False
        return not (v1_confined and namespace and namespace != parent_ns)
    if kind == BY_NAMESPACE_AND_LABELS:
        return selectors.matches(rule.get("labelSelector"), labels) and namespace == rule["namespace"]
    if kind == BY_NAMESPACE_SELECTOR:
        if not selectors.matches(rule.get("labelSelector"), labels):
            return False
        if not namespace:
            return True
        ns_labels = (namespace_labels or {}).get(namespace)
        return ns_labels is not None and selectors.matches(rule["namespaceSelector"], ns_labels)
    # BY_NAMES
    if v1_confined:
        if namespace and namespace != parent_ns:
            return False
    elif rule.get("namespace") and namespace != rule["namespace"]:
        return False
    names = rule.get("names") or []
    return not names or meta.get("name") in names
