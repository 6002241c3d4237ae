"""Our CRDs and controller configs against the real schemas: apiextensions (Kubernetes 1.33 strict),
Metacontroller v4.17.2's own CRDs, and the CEL rules evaluated by a CEL implementation (cel-python)."""

from __future__ import annotations

import copy

import jsonschema
import kubernetes_validate
import pytest
import yaml
from crd_support import (
    IMMUTABLE_CHANGES,
    REJECTED_OBJECTS,
    TUNING,
    cel_violations,
    load_yaml,
    schema_root,
    strict,
    with_defaults,
    workspace_schema,
)
from workspace_support import METACONTROLLER_CRDS, REPO, need_shared, workspace

CRD_FILES = ["workspace-crd.yaml", "machine-crd.yaml"]


@pytest.mark.parametrize("name", CRD_FILES)
def test_crd_is_a_valid_apiextensions_v1_object(name):
    kubernetes_validate.validate(load_yaml(name), "1.33.0", strict=True)


def test_workspace_crd_identity_and_printer_columns():
    crd = load_yaml("workspace-crd.yaml")
    spec = crd["spec"]
    assert (spec["group"], spec["scope"], spec["names"]["kind"]) == ("kaito.sh", "Namespaced", "Workspace")
    assert spec["names"]["shortNames"] == ["wk", "wks"]
    version = spec["versions"][0]
    assert version["name"] == "v1alpha1" and set(version["subresources"]) == {"status", "scale"}
    cols = [(c["name"], c.get("priority", 0)) for c in version["additionalPrinterColumns"]]
    assert cols == [
        ("Instance", 0),
        ("ResourceReady", 0),
        ("InferenceReady", 0),
        ("JobStarted", 1),
        ("WorkspaceReady", 0),
        ("Replicas", 1),
        ("Ready", 1),
        ("Scale", 0),
        ("Waking", 1),
        ("Age", 0),
    ]
    adapters = version["schema"]["openAPIV3Schema"]["properties"]["inference"]["properties"]["adapters"]
    assert adapters["maxItems"] == 10


def test_v1beta1_is_served_with_the_same_schema_columns_and_subresources_so_conversion_none_is_lossless():
    spec = load_yaml("workspace-crd.yaml")["spec"]
    versions = {v["name"]: v for v in spec["versions"]}
    assert set(versions) == {"v1alpha1", "v1beta1"}
    assert all(v["served"] for v in versions.values())
    assert [n for n, v in versions.items() if v["storage"]] == ["v1alpha1"]
    assert spec.get("conversion", {"strategy": "None"})["strategy"] == "None"
    alpha, beta = (
        {k: v for k, v in versions[n].items() if k not in ("name", "storage")} for n in ("v1alpha1", "v1beta1")
    )
    assert alpha == beta


def test_a_digit_first_workspace_name_is_refused_by_the_rule_that_names_dns_1035():
    """Its Services would be refused (DNS-1035); a letter-first name with digits is fine."""
    assert any("DNS-1035" in v for v in cel_violations(schema_root(), workspace(metadata={"name": "7b-chat"})))
    assert cel_violations(schema_root(), workspace(metadata={"name": "chat-7b"})) == []


@pytest.mark.parametrize("path", sorted((REPO / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_our_examples_validate_against_our_crd_schema(path):
    jsonschema.validate(yaml.safe_load(path.read_text()), workspace_schema())


def test_schema_rejects_a_misspelt_field_and_too_many_adapters():
    bad = workspace(resource={"instancetype": "x", "labelSelector": {"matchLabels": {"a": "b"}}})
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, workspace_schema())
    many = workspace(
        inference={
            "preset": {"name": "phi-2"},
            "adapters": [{"source": {"name": f"a{i}", "image": "r.io/a:1"}} for i in range(11)],
        }
    )
    with pytest.raises(jsonschema.ValidationError, match=r"too long|maxItems|is too long"):
        jsonschema.validate(many, workspace_schema())


# --- CEL -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted((REPO / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_examples_pass_every_cel_rule(path):
    assert cel_violations(schema_root(), yaml.safe_load(path.read_text())) == []


@pytest.mark.parametrize(
    "obj, message",
    REJECTED_OBJECTS,
)
def test_cel_rules_reject_bad_objects(obj, message):
    violations = cel_violations(schema_root(), obj)
    assert any(message in v for v in violations), violations


@pytest.mark.parametrize("strength", ["0", "0.5", "1", "1.0", ".25"])
def test_cel_strength_accepts_numbers_in_range(strength):
    obj = workspace(
        inference={
            "preset": {"name": "phi-2"},
            "adapters": [{"source": {"name": "a", "image": "r.io/a"}, "strength": strength}],
        }
    )
    assert cel_violations(schema_root(), obj) == []


def test_cel_valid_tuning_workspace_passes():
    assert cel_violations(schema_root(), workspace(inference=None, tuning=TUNING)) == []


@pytest.mark.parametrize(
    "change, message",
    IMMUTABLE_CHANGES,
)
def test_cel_transition_rules_make_fields_immutable(change, message):
    old = workspace()
    old["resource"]["count"] = 1
    new = copy.deepcopy(old)
    change(new)
    assert any(message in v for v in cel_violations(schema_root(), new, old))
    assert cel_violations(schema_root(), old, old) == []


def test_cel_tuning_method_is_immutable_and_adapters_may_change():
    old = workspace(inference=None, tuning=TUNING)
    new = copy.deepcopy(old)
    new["tuning"]["method"] = "lora"
    assert any("tuning.method is immutable" in v for v in cel_violations(schema_root(), new, old))
    inf_old = workspace()
    inf_new = workspace(
        inference={
            "preset": {"name": "phi-3-mini-4k-instruct"},
            "adapters": [{"source": {"name": "a", "image": "r.io/a:1"}}],
        }
    )
    assert cel_violations(schema_root(), inf_new, inf_old) == []


# --- Metacontroller controller configs -----------------------------------------------------------


def metacontroller_schema(kind: str) -> dict:
    docs = list(yaml.safe_load_all(need_shared(METACONTROLLER_CRDS).read_text()))
    crd = next(d for d in docs if d and d["spec"]["names"]["kind"] == kind)
    return strict(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def test_composite_controller_validates_against_metacontroller_schema():
    cc = load_yaml("composite-controller.yaml")
    jsonschema.validate(cc, metacontroller_schema("CompositeController"))
    spec = cc["spec"]
    assert spec["generateSelector"] is True and spec["resyncPeriodSeconds"] > 0
    assert spec["parentResource"] == {"apiVersion": "kaito.sh/v1alpha1", "resource": "workspaces"}
    children = {c["resource"]: c["updateStrategy"]["method"] for c in spec["childResources"]}
    assert set(children) == {
        "machines",
        "statefulsets",
        "deployments",
        "services",
        "jobs",
        "configmaps",
        "serviceaccounts",
        "roles",
        "rolebindings",
    }
    assert {h: spec["hooks"][h]["version"] for h in spec["hooks"]} == {"sync": "v2", "customize": "v2"}


def test_a_typo_in_the_controller_config_is_caught():
    cc = load_yaml("composite-controller.yaml")
    cc["spec"]["childResources"][0]["updateStrategy"]["method"] = "Inplace"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(cc, metacontroller_schema("CompositeController"))


# --- replicas and the scale subresource ------------------------------------------------------------


def _schema_at(path: str) -> dict:
    node = schema_root()
    for part in path.strip(".").split("."):
        node = node["properties"][part]
    return node


def test_scale_subresource_points_at_replica_fields_of_the_right_types():
    """The API server serves /scale from these paths: spec under .spec (it insists), an int32 count, a string selector."""
    scale = load_yaml("workspace-crd.yaml")["spec"]["versions"][0]["subresources"]["scale"]
    assert scale["specReplicasPath"].startswith(".spec.") and scale["statusReplicasPath"].startswith(".status.")
    assert _schema_at(scale["specReplicasPath"])["type"] == "integer"
    assert _schema_at(scale["statusReplicasPath"])["type"] == "integer"
    assert _schema_at(scale["labelSelectorPath"])["type"] == "string"
    assert _schema_at(".status.readyReplicas")["type"] == "integer"


def test_spec_replicas_is_mutable_and_may_be_zero():
    old = workspace(spec={"replicas": 1})
    new = workspace(spec={"replicas": 4})
    assert cel_violations(schema_root(), new, old) == []
    jsonschema.validate(new, workspace_schema())
    jsonschema.validate(workspace(spec={"replicas": 0}), workspace_schema())  # scaled to zero
    with pytest.raises(jsonschema.ValidationError, match="minimum"):
        jsonschema.validate(workspace(spec={"replicas": -1}), workspace_schema())
    violations = cel_violations(schema_root(), workspace(inference=None, tuning=TUNING, spec={"replicas": 0}))
    assert any("a tuning Workspace runs one Job: spec.replicas must be 1" in v for v in violations), violations


def test_a_tuning_workspace_cannot_be_scaled():
    assert cel_violations(schema_root(), workspace(inference=None, tuning=TUNING, spec={"replicas": 1})) == []
    violations = cel_violations(schema_root(), workspace(inference=None, tuning=TUNING, spec={"replicas": 2}))
    assert any("a tuning Workspace runs one Job: spec.replicas must be 1" in v for v in violations), violations


def test_every_workspace_gets_spec_replicas_so_the_scale_subresource_can_answer():
    """Without a value at specReplicasPath the API server refuses GET and PATCH of /scale."""
    defaulted = with_defaults(schema_root(), workspace())
    assert defaulted["spec"] == {"replicas": 1}
