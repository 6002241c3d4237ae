"""A thin adapter over the kubernetes client's DynamicClient: plain dicts in and out.

Every call goes to the apiserver (no informer cache). Resources are named as Metacontroller's
controller objects name them: ``(apiVersion, resource plural)``.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from kubernetes import config
from kubernetes.client import ApiClient
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import (
    ConflictError,
    DynamicApiError,
    NotFoundError,
    ResourceNotFoundError,
)

FIELD_MANAGER = "metacontroller"

__all__ = ["ConflictError", "DynamicApiError", "Kube", "NotFoundError", "ResourceInfo", "ResourceNotFoundError"]


@dataclass(frozen=True)
class ResourceInfo:
    api_version: str
    plural: str
    kind: str
    namespaced: bool
    subresources: frozenset[str]


def _plain(response: Any) -> dict[str, Any]:
    """The JSON body of a raw response (calls pass serialize=False: no ResourceInstance round trip)."""
    data = response.data if hasattr(response, "data") else response
    return json.loads(data) if data else {}


class Kube:
    def __init__(self, kubeconfig: str, field_manager: str = FIELD_MANAGER, discovery_interval_s: float = 20.0):
        self.api_client: ApiClient = config.new_client_from_config(config_file=kubeconfig)
        cache_dir = tempfile.mkdtemp(prefix="standin-mc-discovery-")
        self.dyn = DynamicClient(self.api_client, cache_file=os.path.join(cache_dir, "discovery.json"))
        self.field_manager = field_manager
        self._lock = threading.RLock()  # the discoverer is not thread-safe: one lookup at a time
        self._discovery_interval_s = discovery_interval_s
        self._discovered_at = time.monotonic()
        self._found: dict[tuple[str, str], Any] = {}

    # ------------------------------------------------------------------ discovery

    def _refresh_discovery(self) -> None:
        with self._lock:
            self.dyn.resources.invalidate_cache()
            self._found.clear()
            self._discovered_at = time.monotonic()

    def _lookup(self, api_version: str, **what: str):
        """A discovered resource; a miss refreshes discovery once (a CRD created after the start)."""
        with self._lock:
            if time.monotonic() - self._discovered_at > self._discovery_interval_s:
                self._refresh_discovery()
            key = (api_version, repr(sorted(what.items())))
            if key not in self._found:
                try:
                    self._found[key] = self.dyn.resources.get(api_version=api_version, **what)
                except ResourceNotFoundError:
                    self._refresh_discovery()
                    self._found[key] = self.dyn.resources.get(api_version=api_version, **what)
            return self._found[key]

    def _resource(self, api_version: str, plural: str):
        return self._lookup(api_version, name=plural)

    def info(self, api_version: str, plural: str) -> ResourceInfo:
        resource = self._resource(api_version, plural)
        subresources = frozenset((getattr(resource, "subresources", None) or {}).keys())
        return ResourceInfo(api_version, plural, resource.kind, bool(resource.namespaced), subresources)

    def info_for_kind(self, api_version: str, kind: str) -> ResourceInfo:
        return self.info(api_version, self._lookup(api_version, kind=kind).name)

    # ------------------------------------------------------------------ reads

    def get(self, api_version: str, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        resource = self._resource(api_version, plural)
        try:
            return _plain(self.dyn.get(resource, name=name, namespace=namespace or None, serialize=False))
        except NotFoundError:
            return None

    def list(self, api_version: str, plural: str, namespace: str = "") -> tuple[list[dict[str, Any]], str]:
        """All objects (of one namespace, or all) and the list's resourceVersion.

        Items carry apiVersion and kind (a list response leaves them out of its items).
        """
        resource = self._resource(api_version, plural)
        result = _plain(self.dyn.get(resource, namespace=namespace or None, serialize=False))
        items = result.get("items") or []
        for item in items:
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", resource.kind)
        return items, (result.get("metadata") or {}).get("resourceVersion", "")

    def watch(
        self, api_version: str, plural: str, resource_version: str, timeout_s: int
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """(event type, object) from resource_version on, for at most timeout_s seconds."""
        resource = self._resource(api_version, plural)
        for event in self.dyn.watch(
            resource, resource_version=resource_version, timeout=timeout_s, allow_watch_bookmarks=True
        ):
            yield event["type"], event["raw_object"]

    def secret_data(self, namespace: str, name: str) -> dict[str, bytes]:
        secret = self.get("v1", "secrets", namespace, name)
        if secret is None:
            raise LookupError(f"Secret {namespace}/{name} not found")
        return {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}

    def configmap_data(self, namespace: str, name: str) -> dict[str, str]:
        cm = self.get("v1", "configmaps", namespace, name)
        if cm is None:
            raise LookupError(f"ConfigMap {namespace}/{name} not found")
        return dict(cm.get("data") or {})

    # ------------------------------------------------------------------ writes

    def apply(self, api_version: str, plural: str, obj: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
        """Server-side apply (force) with our field manager; creates the object if it is missing."""
        resource = self._resource(api_version, plural)
        meta = obj["metadata"]
        params: dict[str, Any] = {"field_manager": self.field_manager, "force_conflicts": True}
        if dry_run:
            params["dry_run"] = "All"
        return _plain(
            self.dyn.server_side_apply(
                resource,
                body=obj,
                name=meta["name"],
                namespace=meta.get("namespace") or None,
                serialize=False,
                **params,
            )
        )

    def delete(self, api_version: str, plural: str, namespace: str, name: str, uid: str) -> bool:
        """Background-propagated delete with a UID precondition; False if it was already gone."""
        resource = self._resource(api_version, plural)
        body = {
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "propagationPolicy": "Background",
            "preconditions": {"uid": uid},
        }
        try:
            self.dyn.delete(resource, name=name, namespace=namespace or None, body=body)
            return True
        except NotFoundError:
            return False
        except ConflictError:  # the UID precondition failed: that object is gone, another one took the name
            return False

    def merge_patch(
        self, api_version: str, plural: str, namespace: str, name: str, patch: dict[str, Any]
    ) -> dict[str, Any]:
        resource = self._resource(api_version, plural)
        return _plain(
            self.dyn.patch(
                resource,
                body=patch,
                name=name,
                namespace=namespace or None,
                content_type="application/merge-patch+json",
                field_manager=self.field_manager,
                serialize=False,
            )
        )

    def replace_status(self, api_version: str, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        """PUT obj to the status subresource (obj carries the resourceVersion it was read at)."""
        resource = self._resource(api_version, plural)
        meta = obj["metadata"]
        path = resource.path(name=meta["name"], namespace=meta.get("namespace") or None) + "/status"
        return _plain(self.dyn.request("put", path, body=obj, field_manager=self.field_manager, serialize=False))

    def replace(self, api_version: str, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        resource = self._resource(api_version, plural)
        meta = obj["metadata"]
        return _plain(
            self.dyn.replace(
                resource,
                body=obj,
                name=meta["name"],
                namespace=meta.get("namespace") or None,
                field_manager=self.field_manager,
                serialize=False,
            )
        )

    def create(self, api_version: str, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        resource = self._resource(api_version, plural)
        return _plain(
            self.dyn.create(
                resource, body=obj, namespace=(obj.get("metadata") or {}).get("namespace") or None, serialize=False
            )
        )
