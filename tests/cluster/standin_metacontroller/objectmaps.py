"""The object maps of hook requests: ``{"Kind.apiVersion": {"<key>": object}}``.

Group keys are ``Kind.v1`` for the core group and ``Kind.group/version`` otherwise (the apiVersion
string as declared). Object keys (Metacontroller's RelativeObjectMap for hook version v1,
UniformObjectMap for v2):

    hook v1: ``name``; ``namespace/name`` only for a namespaced object under a cluster-scoped parent
    hook v2: ``namespace/name`` for namespaced objects, ``name`` for cluster-scoped ones
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def group_key(api_version: str, kind: str) -> str:
    return f"{kind}.{api_version}"


def object_key(obj: dict[str, Any], hook_version: str, parent_namespaced: bool) -> str:
    metadata = obj.get("metadata") or {}
    name = metadata.get("name", "")
    namespace = metadata.get("namespace") or ""
    if not namespace:
        return name
    if hook_version == "v2" or not parent_namespaced:
        return f"{namespace}/{name}"
    return name


def object_map(
    groups: dict[str, Iterable[dict[str, Any]]], hook_version: str, parent_namespaced: bool
) -> dict[str, dict[str, dict[str, Any]]]:
    """Every group key present (possibly ``{}``), objects keyed per hook version."""
    return {
        key: {object_key(obj, hook_version, parent_namespaced): obj for obj in objects}
        for key, objects in groups.items()
    }
