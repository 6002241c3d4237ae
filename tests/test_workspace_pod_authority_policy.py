"""The ValidatingAdmissionPolicy kaito-workspace-pod-authority (metacontroller/workspace-pod-authority-policy.yaml),
evaluated offline with cel-python as the apiserver evaluates it: setting or changing inference.template or a
volumeSource field needs permission to create pods in the Workspace's namespace (the apiserver's authorizer
is stood in for by a table of who may create pods where); other writes are not checked.
tests/cluster/test_pod_authority.py runs the same policy on a real kube-apiserver with RBAC."""

from __future__ import annotations

import copy

import celpy
import pytest
import yaml
from celpy import celtypes
from workspace_support import REPO, workspace

POLICY_FILE = REPO / "metacontroller" / "workspace-pod-authority-policy.yaml"
TEMPLATE = {"spec": {"containers": [{"name": "x", "image": "busybox", "securityContext": {"privileged": True}}]}}
PVC = {"persistentVolumeClaim": {"claimName": "adapters"}}


class Authorizer:
    """What `authorizer.group(..).resource(..).namespace(..).check(verb).allowed()` asks, and its answer."""

    def __init__(self, may_create_pods_in: set[str]):
        self.may = may_create_pods_in
        self.asked: list[dict] = []
        self.attrs: dict = {}


def _chain(key):
    def step(authz: Authorizer, value):
        authz.attrs[key] = str(value)
        if key == "verb":
            authz.asked.append(dict(authz.attrs))
        return authz

    return step


def _allowed(authz: Authorizer):
    a = authz.attrs
    ok = (
        a.get("group") == ""
        and a.get("resource") == "pods"
        and a.get("verb") == "create"
        and a["namespace"] in authz.may
    )
    return celtypes.BoolType(ok)


FUNCTIONS = {
    "group": _chain("group"),
    "resource": _chain("resource"),
    "namespace": _chain("namespace"),
    "check": _chain("verb"),
    "allowed": _allowed,
}


def load() -> tuple[dict, dict]:
    policy, binding = yaml.safe_load_all(POLICY_FILE.read_text())
    return policy, binding


def admit(obj: dict, old: dict | None, user: str, authz: Authorizer) -> tuple[bool, str]:
    """(allowed, message) for a CREATE (old None) or UPDATE of a Workspace by `user`."""
    policy, _ = load()
    env = celpy.Environment()
    request = {"operation": "UPDATE" if old else "CREATE", "userInfo": {"username": user}}
    activation = {
        "object": celpy.json_to_cel(obj),
        "oldObject": celpy.json_to_cel(old),
        "request": celpy.json_to_cel(request),
        "authorizer": authz,
    }
    variables: dict = {}
    for variable in policy["spec"]["variables"]:
        program = env.program(env.compile(variable["expression"]), functions=FUNCTIONS)
        variables[celtypes.StringType(variable["name"])] = program.evaluate(
            {**activation, "variables": celtypes.MapType(variables)}
        )
    activation["variables"] = celtypes.MapType(variables)
    for validation in policy["spec"]["validations"]:
        result = env.program(env.compile(validation["expression"]), functions=FUNCTIONS).evaluate(activation)
        if result is not True and result != celtypes.BoolType(True):
            message = env.program(env.compile(validation["messageExpression"])).evaluate(activation)
            return False, str(message)
    return True, ""


def templated() -> dict:
    ws = workspace(inference={"template": copy.deepcopy(TEMPLATE)})
    ws["metadata"]["namespace"] = "team"
    return ws


def with_volume_adapter() -> dict:
    ws = workspace(
        inference={
            "preset": {"name": "phi-3-mini-4k-instruct"},
            "adapters": [
                {"source": {"name": "a", "image": "reg.example.com/a:1"}},
                {"source": {"name": "b", "volumeSource": copy.deepcopy(PVC)}},
            ],
        }
    )
    ws["metadata"]["namespace"] = "team"
    return ws


def tuning_from_volume() -> dict:
    ws = workspace(
        inference=None,
        tuning={
            "preset": {"name": "phi-3-mini-4k-instruct"},
            "method": "qlora",
            "input": {"volumeSource": copy.deepcopy(PVC)},
            "output": {"image": "reg.example.com/out:1", "imagePushSecret": "push"},
        },
    )
    ws.pop("inference", None)
    ws["metadata"]["namespace"] = "team"
    return ws


@pytest.mark.parametrize("make", [templated, with_volume_adapter, tuning_from_volume], ids=lambda f: f.__name__)
def test_creating_pod_content_needs_pod_create_in_the_namespace(make):
    authz = Authorizer(may_create_pods_in={"other"})
    allowed, message = admit(make(), None, "alice", authz)
    assert not allowed
    assert "namespace team" in message and "alice" in message
    assert authz.asked == [{"group": "", "resource": "pods", "namespace": "team", "verb": "create"}]
    assert admit(make(), None, "bob", Authorizer(may_create_pods_in={"team"}))[0]


def test_a_preset_with_image_adapters_is_not_checked():
    ws = with_volume_adapter()
    ws["inference"]["adapters"] = ws["inference"]["adapters"][:1]
    authz = Authorizer(may_create_pods_in=set())
    assert admit(ws, None, "alice", authz) == (True, "")


def test_updates_that_leave_the_pod_content_alone_are_not_checked():
    old = templated()
    scaled = copy.deepcopy(old)
    scaled["spec"] = {"replicas": 3}
    scaled["metadata"]["finalizers"] = ["metacontroller.io/compositecontroller-workspace"]
    authz = Authorizer(may_create_pods_in=set())
    assert admit(scaled, old, "system:serviceaccount:metacontroller:metacontroller", authz) == (True, "")


def test_changing_or_adding_pod_content_is_checked_and_removing_it_is_not():
    old = templated()
    changed = copy.deepcopy(old)
    changed["inference"]["template"]["spec"]["hostPID"] = True
    assert not admit(changed, old, "alice", Authorizer(set()))[0]
    added = with_volume_adapter()
    before = copy.deepcopy(added)
    before["inference"]["adapters"] = before["inference"]["adapters"][:1]
    assert not admit(added, before, "alice", Authorizer(set()))[0]
    assert admit(before, added, "alice", Authorizer(set()))[0]  # removing the volume adapter


def test_the_policy_is_installed_and_denies():
    policy, binding = load()
    assert binding["spec"] == {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"]}
    assert policy["spec"]["failurePolicy"] == "Fail"
    rules = policy["spec"]["matchConstraints"]["resourceRules"]
    assert rules == [
        {
            "apiGroups": ["kaito.sh"],
            "apiVersions": ["*"],
            "operations": ["CREATE", "UPDATE"],
            "resources": ["workspaces"],
        }
    ]
    assert POLICY_FILE.name in (REPO / "metacontroller" / "kustomization.yaml").read_text()
