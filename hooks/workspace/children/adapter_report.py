"""The identity a model server pod uses to report its adapters' states: the gateway's agent patches the
annotation `kaito.sh/adapters` on its OWN pod (the hook reads it from the related pods: no hook calls a pod).

Scope of that identity, narrowest first:
- a ServiceAccount per Workspace whose Role allows only `get` and `patch` on pods of the namespace (RBAC
  cannot name a Deployment's pods in advance);
- the ValidatingAdmissionPolicy `kaito-adapter-report` (metacontroller/adapter-report-policy.yaml) narrows
  it to the pod the token is bound to (the token's `authentication.kubernetes.io/pod-name`) and to that one
  annotation: no spec, label, finalizer or other annotation change;
- the token is a projected, pod-bound, short-lived token mounted into the main container only; the pod
  keeps automountServiceAccountToken false (init containers get nothing).
"""

from __future__ import annotations

from hooks.workspace.api import Workspace
from hooks.workspace.children import pod_parts as m

# The policy matches these service accounts by this prefix: keep both in step.
NAME_PREFIX = "kaito-adapter-report-"
TOKEN_DIR = "/var/run/secrets/kaito/adapter-report"
TOKEN_VOLUME = "adapter-report-token"
TOKEN_SECONDS = 3600


def name(ws: Workspace) -> str:
    return f"{NAME_PREFIX}{ws.name}"


def children(ws: Workspace) -> list[dict]:
    rules = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "patch"]}]
    return m.identity(name(ws), ws.namespace, m.workspace_labels(ws), rules, automountServiceAccountToken=False)


def token_volume() -> dict:
    """A pod-bound token (the kubelet requests it for this pod and renews it), the API's CA and the pod's own
    name and namespace: what the agent needs to patch its pod."""
    return {
        "name": TOKEN_VOLUME,
        "projected": {
            "sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": TOKEN_SECONDS}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {
                    "downwardAPI": {
                        "items": [
                            {"path": "pod-name", "fieldRef": {"fieldPath": "metadata.name"}},
                            {"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}},
                        ]
                    }
                },
            ]
        },
    }


def token_mount() -> dict:
    return {"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": True}
