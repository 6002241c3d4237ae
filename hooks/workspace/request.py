"""The Workspace hook's view of a Metacontroller CompositeController request."""

from __future__ import annotations

import json
from typing import Any

from hooks.metacontroller import (
    CONFIGMAPS,
    DEPLOYMENTS,
    JOBS,
    LAST_APPLIED,
    MACHINES,
    NODES,
    PODS,
    ROLEBINDINGS,
    ROLES,
    SERVICEACCOUNTS,
    SERVICES,
    STATEFULSETS,
    BadRequest,
    observed,
)

CHILD_TYPES = (MACHINES, CONFIGMAPS, STATEFULSETS, DEPLOYMENTS, JOBS, SERVICES, SERVICEACCOUNTS, ROLES, ROLEBINDINGS)


def require_parent(request: object) -> dict[str, Any]:
    """The parent Workspace object of a sync/customize request, or BadRequest."""
    if not isinstance(request, dict):
        raise BadRequest(f"expected a JSON object, got {type(request).__name__}")
    parent = request.get("parent")
    if (
        not isinstance(parent, dict)
        or not isinstance(parent.get("metadata"), dict)
        or not parent["metadata"].get("name")
    ):
        raise BadRequest("missing 'parent' with metadata.name: not a Metacontroller request")
    for section in ("children", "related"):
        if section in request and not isinstance(request[section] or {}, dict):
            raise BadRequest(f"'{section}' must be an object keyed by Kind.apiVersion")
    return parent


def as_previously_desired(child: dict) -> dict:
    """What we last asked for, keyed by the observed object's own identity.

    Metacontroller keeps our last desired state in an annotation; anyone who can edit the child can edit
    it too, so it only supplies the content: apiVersion, kind, name and namespace come from the observed
    object (an annotation naming another object would otherwise make Metacontroller delete this child).
    Without a usable annotation: the object minus server fields.
    """
    meta = child.get("metadata") or {}
    applied = (meta.get("annotations") or {}).get(LAST_APPLIED)
    desired = None
    if applied:
        try:
            desired = json.loads(applied)
        except ValueError:
            desired = None
    if not isinstance(desired, dict):
        keep = {k: meta[k] for k in ("name", "namespace", "labels", "annotations") if k in meta}
        desired = {**{k: v for k, v in child.items() if k not in ("status", "metadata")}, "metadata": keep}
    desired_meta = dict(desired["metadata"]) if isinstance(desired.get("metadata"), dict) else {}
    desired_meta["name"] = meta.get("name")
    if meta.get("namespace"):
        desired_meta["namespace"] = meta["namespace"]
    else:
        desired_meta.pop("namespace", None)
    identity = {k: child[k] for k in ("apiVersion", "kind") if child.get(k)}
    return {**desired, **identity, "metadata": desired_meta}


def existing_children(request: dict) -> list[dict]:
    """The observed children as we last desired them: what an invalid Workspace keeps."""
    out = []
    for kind in CHILD_TYPES:
        for key in sorted(observed(request, kind)):
            out.append(as_previously_desired(observed(request, kind)[key]))
    return out


def new_workspace_request(workspace: dict) -> dict:
    """A sync request as Metacontroller sends it for a new Workspace: no children, nothing related yet."""
    parent = dict(workspace)
    meta = dict(parent.get("metadata") or {})
    meta.setdefault("namespace", "default")
    parent["metadata"] = meta
    return {
        "controller": {"metadata": {"name": "workspace"}},
        "parent": parent,
        "children": {kind: {} for kind in CHILD_TYPES},
        "related": {NODES: {}, PODS: {}},
        "finalizing": False,
    }
