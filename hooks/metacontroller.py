"""What both hooks read from Metacontroller's requests: the keys of children/related, and BadRequest."""

from __future__ import annotations

from typing import Any

# `children` and `related` are keyed by Kind.apiVersion.
MACHINES = "Machine.kaito.sh/v1alpha1"
STATEFULSETS = "StatefulSet.apps/v1"
DEPLOYMENTS = "Deployment.apps/v1"
SERVICEACCOUNTS = "ServiceAccount.v1"
ROLES = "Role.rbac.authorization.k8s.io/v1"
ROLEBINDINGS = "RoleBinding.rbac.authorization.k8s.io/v1"
SERVICES = "Service.v1"
JOBS = "Job.batch/v1"
CONFIGMAPS = "ConfigMap.v1"
NODES = "Node.v1"
PODS = "Pod.v1"
# Metacontroller keeps what a hook last asked for in this annotation of each child.
LAST_APPLIED = "metacontroller.k8s.io/last-applied-configuration"


class BadRequest(ValueError):
    """The body is not a Metacontroller request (answered with HTTP 400)."""


def observed(request: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    """Observed children of one kind, keyed as Metacontroller keys them."""
    return (request.get("children") or {}).get(kind) or {}


def related(request: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return (request.get("related") or {}).get(kind) or {}


def by_name(objs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objs.values()}
