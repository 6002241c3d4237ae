"""Loading CompositeController / DecoratorController objects into what the reconcilers need."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from . import hookwire, objectmaps, webhook
from .kube import Kube, ResourceInfo

COMPOSITE = "CompositeController"
DECORATOR = "DecoratorController"
GROUP = "metacontroller.k8s.io"
API_VERSION = f"{GROUP}/v1alpha1"
PLURALS = {COMPOSITE: "compositecontrollers", DECORATOR: "decoratorcontrollers"}
FINALIZER_PREFIX = {
    COMPOSITE: "metacontroller.io/compositecontroller-",
    DECORATOR: "metacontroller.io/decoratorcontroller-",
}
CUSTOMIZE_CACHE_S = 20 * 60


class ControllerConfigError(ValueError):
    """The controller object cannot run (Metacontroller logs it and leaves the controller off)."""


@dataclass(frozen=True)
class Hook:
    name: str
    connection: webhook.Connection
    version: str
    mode: str


@dataclass(frozen=True)
class ChildKind:
    info: ResourceInfo
    method: str

    @property
    def group(self) -> str:
        return objectmaps.group_key(self.info.api_version, self.info.kind)


@dataclass
class Controller:
    kind: str
    name: str
    obj: dict[str, Any]
    hooks: dict[str, Hook]
    targets: list[tuple[ResourceInfo, dict[str, Any]]]  # (resource, its rule: selectors...)
    children: dict[str, ChildKind]  # group key -> child/attachment kind
    resync_s: float
    customize_cache: dict[tuple[str, int], tuple[list[dict], float]] = field(default_factory=dict)
    related_rules: dict[tuple, list[dict]] = field(default_factory=dict)  # object key -> rules
    next_resync: float = 0.0

    @property
    def spec(self) -> dict[str, Any]:
        return self.obj.get("spec") or {}

    @property
    def finalizer(self) -> str:
        return FINALIZER_PREFIX[self.kind] + self.name

    @property
    def resource_version(self) -> str:
        return (self.obj.get("metadata") or {}).get("resourceVersion", "")

    def cached_rules(self, uid: str, generation: int) -> list[dict] | None:
        hit = self.customize_cache.get((uid, generation))
        if hit and hit[1] > time.monotonic():
            return hit[0]
        return None

    def cache_rules(self, uid: str, generation: int, rules: list[dict]) -> None:
        self.customize_cache = {k: v for k, v in self.customize_cache.items() if v[1] > time.monotonic()}
        self.customize_cache[(uid, generation)] = (rules, time.monotonic() + CUSTOMIZE_CACHE_S)


def _hooks(kube: Kube, obj: dict[str, Any]) -> dict[str, Hook]:
    spec = obj.get("spec") or {}
    endpoint_configs = spec.get("endpointConfigs") or []
    hooks = {}
    for name in ("sync", "finalize", "customize"):
        hook = (spec.get("hooks") or {}).get(name)
        if not hook:
            continue
        if not hook.get("webhook"):
            raise ControllerConfigError(f"hooks.{name} has no webhook")
        try:
            connection = webhook.resolve(hook["webhook"], endpoint_configs, kube.secret_data, kube.configmap_data)
        except webhook.WebhookConfigError as err:
            raise ControllerConfigError(f"hooks.{name}.webhook: {err}") from None
        hooks[name] = Hook(name, connection, hookwire.hook_version(hook), hookwire.unmarshal_mode(hook))
    return hooks


def _parent_has_status_subresource(kube: Kube, info: ResourceInfo) -> bool:
    group = info.api_version.split("/")[0] if "/" in info.api_version else ""
    crd = kube.get("apiextensions.k8s.io/v1", "customresourcedefinitions", "", f"{info.plural}.{group}")
    if crd is None:
        return False
    version = info.api_version.split("/")[-1]
    for entry in (crd.get("spec") or {}).get("versions") or []:
        if entry.get("name") == version:
            return "status" in (entry.get("subresources") or {})
    return False


def load(kube: Kube, kind: str, obj: dict[str, Any]) -> Controller:
    """A runnable controller; raises ControllerConfigError (or a discovery error, retried)."""
    spec = obj.get("spec") or {}
    name = obj["metadata"]["name"]
    hooks = _hooks(kube, obj)
    children: dict[str, ChildKind] = {}
    if kind == COMPOSITE:
        parent = spec.get("parentResource") or {}
        info = kube.info(parent["apiVersion"], parent["resource"])
        if not _parent_has_status_subresource(kube, info):
            raise ControllerConfigError(
                f"CRD {info.plural} ({info.api_version}) does not have subresource 'Status' enabled"
            )
        targets = [(info, parent)]
        declared = spec.get("childResources") or []
        if "sync" not in hooks:
            raise ControllerConfigError("a CompositeController needs hooks.sync")
    else:
        targets = [(kube.info(r["apiVersion"], r["resource"]), r) for r in spec.get("resources") or []]
        if not targets:
            raise ControllerConfigError("spec.resources is empty")
        declared = spec.get("attachments") or []
    for entry in declared:
        child = kube.info(entry["apiVersion"], entry["resource"])
        method = ((entry.get("updateStrategy") or {}).get("method")) or "OnDelete"
        kind_entry = ChildKind(child, method)
        children[kind_entry.group] = kind_entry
    resync = float(spec.get("resyncPeriodSeconds") or 0)
    return Controller(
        kind=kind,
        name=name,
        obj=obj,
        hooks=hooks,
        targets=targets,
        children=children,
        resync_s=max(resync, 1.0) if resync else 0.0,
    )
