"""Who may do what, on the real authorizer (kube-apiserver --authorization-mode=Node,RBAC), with the
install's ServiceAccounts and roles as `kubectl apply -k metacontroller/` creates them.

Metacontroller's own effective permissions are exercised by every operator test (it runs with its
ServiceAccount's token); here: what it may not do, and that the hook server may do nothing at all."""

from __future__ import annotations

import pytest

METACONTROLLER = "system:serviceaccount:metacontroller:metacontroller"
HOOKS = "system:serviceaccount:kaito-system:kaito-hooks"


def can_i(cluster, user: str, *args: str) -> bool:
    out = cluster.kubectl("auth", "can-i", *args, f"--as={user}", check=False)
    assert out.stdout.strip() in ("yes", "no"), out.stdout + out.stderr
    return out.stdout.strip() == "yes"


@pytest.mark.parametrize(
    "allowed",
    [
        ("create", "deployments.apps", "-n", "any"),
        ("delete", "machines.kaito.sh", "-n", "any"),
        ("update", "workspaces.kaito.sh/status", "-n", "any"),
        ("create", "rolebindings.rbac.authorization.k8s.io", "-n", "any"),
        ("list", "nodes"),
    ],
)
def test_metacontroller_may_manage_our_kinds(cluster, aks, allowed):
    assert can_i(cluster, METACONTROLLER, *allowed)


@pytest.mark.parametrize(
    "refused",
    [
        ("create", "pods", "-n", "any"),
        ("delete", "nodes"),
        ("create", "secrets", "-n", "any"),
        ("update", "clusterroles.rbac.authorization.k8s.io"),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
        ("delete", "customresourcedefinitions.apiextensions.k8s.io"),
        ("create", "daemonsets.apps", "-n", "any"),
        ("delete", "namespaces"),
    ],
)
def test_metacontroller_may_not_reach_beyond_them(cluster, aks, refused):
    assert not can_i(cluster, METACONTROLLER, *refused)


def test_the_hook_server_has_no_kubernetes_permissions(cluster, aks):
    for verb, resource in (
        ("get", "workspaces.kaito.sh"),
        ("list", "machines.kaito.sh"),
        ("get", "nodes"),
        ("list", "pods"),
        ("get", "secrets"),
        ("get", "configmaps"),
    ):
        assert not can_i(cluster, HOOKS, verb, resource, "-A"), (verb, resource)
    account = cluster.kubectl("get", "serviceaccount", "kaito-hooks", "-n", "kaito-system", "-o", "name").stdout
    assert account.strip() == "serviceaccount/kaito-hooks"
    # The hook server under test runs with no credentials: no KUBECONFIG, an empty HOME.
    assert "KUBECONFIG" not in aks.hooks.env and not any(k.startswith("KUBERNETES_") for k in aks.hooks.env)
