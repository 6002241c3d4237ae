"""Who may write what, on a real kube-apiserver with RBAC:
- the ValidatingAdmissionPolicy kaito-workspace-pod-authority refuses inference.template and volumeSource
  fields from a user whose RBAC does not allow creating pods in the namespace, and admits them from one whose
  RBAC does; presets are admitted for anyone who may create Workspaces;
- the README's ResourceQuota on count/machines.kaito.sh caps the Machines of a namespace.
No Metacontroller needed: users are impersonated with kubectl --as."""

from __future__ import annotations

import copy
import json
import re

import yaml
from operator_stack import INSTALL, REPO
from workspace_support import workspace

POLICY = INSTALL / "workspace-pod-authority-policy.yaml"
TEMPLATE = {"spec": {"containers": [{"name": "x", "image": "busybox", "securityContext": {"privileged": True}}]}}


def user_workspace(name: str, **fields) -> dict:
    ws = workspace(**fields)
    ws["metadata"] = {"name": name}
    return ws


def templated(name: str) -> dict:
    return user_workspace(name, inference={"template": copy.deepcopy(TEMPLATE)})


def volume_adapter(name: str) -> dict:
    return user_workspace(
        name,
        inference={
            "preset": {"name": "phi-3-mini-4k-instruct"},
            "adapters": [{"source": {"name": "a", "volumeSource": {"persistentVolumeClaim": {"claimName": "x"}}}}],
        },
    )


def preset(name: str) -> dict:
    return user_workspace(name, inference={"preset": {"name": "phi-3-mini-4k-instruct"}})


def create_as(cluster, user: str, namespace: str, doc: dict) -> tuple[bool, str]:
    out = cluster.kubectl(
        "create", "--as", user, "-n", namespace, "--dry-run=server", "-o", "name", "-f", "-",
        input=json.dumps(doc), check=False,
    )  # fmt: skip
    return out.returncode == 0, out.stderr.strip()


def grant(cluster, namespace: str, user: str, resources: dict[str, list[str]]) -> None:
    """A Role with `create`/`get`/`update` on the given {apiGroup: [resources]} and its binding to `user`."""
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": f"{user}-writer", "namespace": namespace},
        "rules": [
            {"apiGroups": [group], "resources": names, "verbs": ["create", "get", "update", "patch"]}
            for group, names in resources.items()
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": f"{user}-writer", "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": f"{user}-writer"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }
    cluster.kubectl(
        "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [role, binding]})
    )


def test_template_and_volume_fields_need_pod_create_rights(cluster, namespace):
    cluster.kubectl("apply", f"-f={INSTALL / 'workspace-crd.yaml'}", f"-f={POLICY}")
    cluster.kubectl("wait", "--for=condition=Established", "crd/workspaces.kaito.sh", "--timeout=60s")
    grant(cluster, namespace, "alice", {"kaito.sh": ["workspaces"]})
    grant(cluster, namespace, "bob", {"kaito.sh": ["workspaces"], "": ["pods"]})

    # The policy is enforced once the apiserver has loaded it (a few seconds after it is created).
    cluster.wait_for(
        "the pod-authority policy to refuse alice's template",
        lambda: not create_as(cluster, "alice", namespace, templated("t0"))[0],
    )
    for make in (templated, volume_adapter):
        admitted, message = create_as(cluster, "alice", namespace, make("w1"))
        assert not admitted
        assert "kaito-workspace-pod-authority" in message and f"namespace {namespace}" in message
        assert "alice" in message
        assert create_as(cluster, "bob", namespace, make("w2")) == (True, "")
    assert create_as(cluster, "alice", namespace, preset("w3")) == (True, "")


def readme_quota() -> dict:
    """The ResourceQuota example of README.md ("Who may write a Workspace")."""
    text = (REPO / "README.md").read_text()
    for block in re.findall(r"```yaml\n(.*?)```", text, flags=re.S):
        doc = yaml.safe_load(block)
        if isinstance(doc, dict) and doc.get("kind") == "ResourceQuota":
            return doc
    raise AssertionError("README.md has no ResourceQuota example")


def machine(name: str) -> dict:
    return {
        "apiVersion": "kaito.sh/v1alpha1",
        "kind": "Machine",
        "metadata": {"name": name},
        "spec": {
            "requirements": [
                {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": ["Standard_NC24ads_A100_v4"]}
            ],
            "resources": {"requests": {"storage": "120Gi"}},
        },
    }


def test_the_readme_resource_quota_caps_machines_per_namespace(cluster, namespace):
    cluster.kubectl("apply", f"-f={INSTALL / 'machine-crd.yaml'}")
    cluster.kubectl("wait", "--for=condition=Established", "crd/machines.kaito.sh", "--timeout=60s")
    quota = readme_quota()
    limit = int(quota["spec"]["hard"]["count/machines.kaito.sh"])
    quota["metadata"]["namespace"] = namespace
    cluster.kubectl("apply", "-f", "-", input=json.dumps(quota))
    cluster.wait_for(
        "the quota to count Machines",
        lambda: (
            "count/machines.kaito.sh"
            in json.loads(
                cluster.kubectl("get", "resourcequota", quota["metadata"]["name"], "-n", namespace, "-o", "json").stdout
            )
            .get("status", {})
            .get("hard", {})
        ),
    )
    for i in range(limit):
        cluster.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(machine(f"wsquota{i:05d}")))
    refused = cluster.kubectl(
        "create", "-n", namespace, "-f", "-", input=json.dumps(machine("wsquotaextra")), check=False
    )
    assert refused.returncode != 0 and "exceeded quota" in refused.stderr, refused.stderr
