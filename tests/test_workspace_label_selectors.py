"""resource.labelSelector follows Kubernetes label syntax, checked in the CRD (schema patterns + CEL) and
again in the hook: otherwise the children built from it are refused by the API server
and the Workspace sits in ProvisioningNodes. CEL is evaluated with cel-python (tests/crd_support.py);
tests/cluster/test_apiserver_schemas.py runs the same CRD against a real kube-apiserver."""

from __future__ import annotations

import jsonschema
import pytest
from crd_support import cel_violations, schema_root, strict, workspace_schema
from workspace_support import workspace

from hooks.settings import Settings
from hooks.workspace.planning import parse_and_plan
from hooks.workspace.sync import sync

BAD = {
    "In without values": (
        {"matchExpressions": [{"key": "apps", "operator": "In"}]},
        "resource.labelSelector.matchExpressions[0].values",
        "needs at least one value",
    ),
    "In with empty values": (
        {"matchExpressions": [{"key": "apps", "operator": "In", "values": []}]},
        "resource.labelSelector.matchExpressions[0].values",
        "needs at least one value",
    ),
    "Exists with values": (
        {"matchExpressions": [{"key": "apps", "operator": "Exists", "values": ["x"]}]},
        "resource.labelSelector.matchExpressions[0].values",
        "takes no values",
    ),
    "invalid expression key": (
        {"matchExpressions": [{"key": "bad key", "operator": "Exists"}]},
        "resource.labelSelector.matchExpressions[0].key",
        "label key",
    ),
    "long expression value": (
        {"matchExpressions": [{"key": "apps", "operator": "In", "values": ["v" * 64]}]},
        "resource.labelSelector.matchExpressions[0].values[0]",
        "at most 63",
    ),
    "invalid matchLabels key": (
        {"matchLabels": {"Not_A/Prefix/x": "y"}},
        "resource.labelSelector.matchLabels['Not_A/Prefix/x']",
        "label key",
    ),
    "long matchLabels key name": (
        {"matchLabels": {"k" * 64: "y"}},
        f"resource.labelSelector.matchLabels['{'k' * 64}']",
        "label key",
    ),
    "long matchLabels value": (
        {"matchLabels": {"apps": "v" * 64}},
        "resource.labelSelector.matchLabels['apps']",
        "at most 63",
    ),
    "matchLabels value with a space": (
        {"matchLabels": {"apps": "my model"}},
        "resource.labelSelector.matchLabels['apps']",
        "label value",
    ),
}
GOOD = [
    {"matchLabels": {"apps": "phi-3", "kubernetes.azure.com/agentpool": "gpu_1.a"}},
    {"matchLabels": {"apps": ""}},
    {
        "matchExpressions": [
            {"key": "example.com/tier", "operator": "NotIn", "values": ["cpu", "v" * 63]},
            {"key": "gpu", "operator": "Exists"},
            {"key": "spot", "operator": "DoesNotExist", "values": []},
        ]
    },
]


def with_selector(selector):
    return workspace(resource={"instanceType": "Standard_NC24ads_A100_v4", "labelSelector": selector})


def crd_refuses(obj) -> bool:
    try:
        jsonschema.validate(obj, strict(workspace_schema()))
    except jsonschema.ValidationError:
        return True
    return bool(cel_violations(schema_root(), obj))


@pytest.mark.parametrize("case", sorted(BAD))
def test_the_hook_refuses_a_bad_selector_naming_the_field(case):
    selector, field, why = BAD[case]
    planned, problems = parse_and_plan(with_selector(selector))
    assert planned is None
    assert any(p.field == field and why in p.message for p in problems), [str(p) for p in problems]
    response = sync(
        {"parent": with_selector(selector), "children": {}, "related": {}}, Settings(), "2026-11-26T12:00:00Z"
    )
    assert response["children"] == []
    assert any(field in c.get("message", "") for c in response["status"]["conditions"])


@pytest.mark.parametrize("case", sorted(BAD))
def test_the_crd_refuses_a_bad_selector(case):
    assert crd_refuses(with_selector(BAD[case][0]))


@pytest.mark.parametrize("selector", GOOD)
def test_valid_selectors_pass_the_crd_and_the_hook(selector):
    assert not crd_refuses(with_selector(selector))
    planned, problems = parse_and_plan(with_selector(selector))
    assert planned is not None, [str(p) for p in problems]
