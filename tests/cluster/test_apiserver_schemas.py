"""Our CRDs in a real kube-apiserver: accepted (structural schemas, CEL rules compiled within their
cost budget), Established, and enforcing exactly what tests/test_crds.py expects with cel-python and
jsonschema: the same examples admitted, the same bad objects refused with the same messages, the
same immutable fields. No Metacontroller needed."""

from __future__ import annotations

import copy
import json

import crd_support as offline  # the offline model of the apiserver (cel-python, jsonschema)
import pytest
import yaml
from crd_support import IMMUTABLE_CHANGES, REJECTED_OBJECTS
from operator_stack import INSTALL, METACONTROLLER_CRDS, REPO
from workspace_support import KAITO_EXAMPLES, workspace

OUR_EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
GROUP, VERSION, PLURAL = "kaito.sh", "v1alpha1", "workspaces"


def as_user_object(doc: dict) -> dict:
    """A Workspace as a user writes it: only a name in metadata (tests' helpers add uid etc.)."""
    doc = copy.deepcopy(doc)
    doc["metadata"] = {"name": doc["metadata"]["name"]}
    return doc


def create(cluster, namespace: str, doc: dict, dry_run: bool = True) -> tuple[bool, str]:
    """(admitted, the apiserver's message) for creating `doc` with strict field validation."""
    args = ["create", "-n", namespace, "--validate=strict", "-o", "name", "-f", "-"]
    if dry_run:
        args.append("--dry-run=server")
    out = cluster.kubectl(*args, input=json.dumps(as_user_object(doc)), check=False)
    return out.returncode == 0, out.stderr.strip()


def offline_verdict(doc: dict) -> list[str]:
    """What the offline model (jsonschema + cel-python) says: schema errors, else CEL messages."""
    import jsonschema

    problems = [e.message for e in jsonschema.Draft7Validator(offline.workspace_schema()).iter_errors(doc)]
    if not problems:
        problems = offline.cel_violations(offline.schema_root(), doc)
    return problems


def test_crds_apply_and_are_established(cluster):
    files = [INSTALL / "workspace-crd.yaml", INSTALL / "machine-crd.yaml"]
    out = cluster.kubectl("apply", *(f"-f={f}" for f in files))
    assert "customresourcedefinition.apiextensions.k8s.io/workspaces.kaito.sh" in out.stdout
    for name in ("workspaces.kaito.sh", "machines.kaito.sh"):
        crd = json.loads(cluster.kubectl("get", "crd", name, "-o", "json").stdout)
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions.get("Established") == "True" and conditions.get("NamesAccepted") == "True", conditions
        assert "NonStructuralSchema" not in conditions, conditions
    listed = cluster.kubectl("get", "crd").stdout
    assert "workspaces.kaito.sh" in listed and "machines.kaito.sh" in listed


def test_shipped_controller_configs_are_admitted_by_metacontrollers_crds(cluster):
    if not METACONTROLLER_CRDS.exists():
        pytest.skip(
            f"{METACONTROLLER_CRDS} is absent (../shared, the reference folder beside the checkout, is not there)"
        )
    for name in ("composite-controller.yaml", "machine-controller.yaml"):
        out = cluster.kubectl("apply", "--dry-run=server", "--validate=strict", "-f", str(INSTALL / name))
        assert "created (server dry run)" in out.stdout or "configured (server dry run)" in out.stdout, out.stdout
    typo = yaml.safe_load((INSTALL / "composite-controller.yaml").read_text())
    typo["spec"]["childResources"][0]["updateStrategy"]["method"] = "Inplace"
    out = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(typo), check=False)
    assert out.returncode != 0 and "Inplace" in out.stderr, out.stderr


@pytest.mark.parametrize("path", OUR_EXAMPLES, ids=lambda p: p.name)
def test_our_examples_are_admitted(cluster, namespace, path):
    doc = yaml.safe_load(path.read_text())
    assert offline_verdict(doc) == []
    admitted, message = create(cluster, namespace, doc)
    assert admitted, message


def kaito_examples() -> list:
    return sorted(KAITO_EXAMPLES.glob("*.yaml")) if KAITO_EXAMPLES.exists() else []


@pytest.mark.skipif(not KAITO_EXAMPLES.exists(), reason=f"{KAITO_EXAMPLES} is absent (../shared)")
def test_kaito_examples_are_admitted_or_refused_as_the_offline_checks_say(cluster, namespace):
    disagreements, refused = [], 0
    for path in kaito_examples():
        doc = yaml.safe_load(path.read_text())
        expected = offline_verdict(doc)
        admitted, message = create(cluster, namespace, doc)
        if admitted != (not expected):
            disagreements.append(f"{path.name}: apiserver admitted={admitted} ({message}); offline: {expected}")
        cel_messages = [p.split(": ", 1)[1] for p in expected if p.startswith(".")]
        for cel in cel_messages:
            if cel not in message:
                disagreements.append(f"{path.name}: apiserver's refusal lacks {cel!r}: {message}")
        refused += not admitted
    assert not disagreements, "\n".join(disagreements)
    assert len(kaito_examples()) >= 15 and refused < len(kaito_examples())


@pytest.mark.parametrize("obj, message", REJECTED_OBJECTS)
def test_cel_rules_refuse_with_our_messages(cluster, namespace, obj, message):
    admitted, answer = create(cluster, namespace, obj)
    assert not admitted and message in answer, answer


def test_schema_refuses_a_misspelt_field_and_too_many_adapters(cluster, namespace):
    bad = workspace(resource={"instancetype": "x", "labelSelector": {"matchLabels": {"a": "b"}}})
    admitted, answer = create(cluster, namespace, bad)
    assert not admitted and 'unknown field "resource.instancetype"' in answer, answer
    many = workspace(
        inference={
            "preset": {"name": "phi-2"},
            "adapters": [{"source": {"name": f"a{i}", "image": "r.io/a:1"}} for i in range(11)],
        }
    )
    admitted, answer = create(cluster, namespace, many)
    assert not admitted and "must have at most 10 items" in answer, answer


@pytest.mark.parametrize("change, message", IMMUTABLE_CHANGES)
def test_updates_of_immutable_fields_are_refused(cluster, namespace, change, message):
    old = workspace()
    old["resource"]["count"] = 1
    admitted, answer = create(cluster, namespace, old, dry_run=False)
    assert admitted, answer
    live = json.loads(
        cluster.kubectl("get", "workspace", old["metadata"]["name"], "-n", namespace, "-o", "json").stdout
    )
    change(live)
    out = cluster.kubectl("replace", "-n", namespace, "-f", "-", input=json.dumps(live), check=False)
    assert out.returncode != 0 and message in out.stderr, out.stderr
    unchanged = json.loads(
        cluster.kubectl("get", "workspace", old["metadata"]["name"], "-n", namespace, "-o", "json").stdout
    )
    unchanged["metadata"]["labels"] = {"touched": "yes"}
    cluster.kubectl("replace", "-n", namespace, "-f", "-", input=json.dumps(unchanged))


def test_tuning_method_is_immutable_and_adapters_may_change(cluster, namespace):
    tuning = workspace(inference=None, tuning=offline.TUNING)
    tuning["metadata"]["name"] = "tune"
    assert create(cluster, namespace, tuning, dry_run=False)[0]
    out = cluster.kubectl(
        "patch",
        "workspace",
        "tune",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"tuning": {"method": "lora"}}),
        check=False,
    )
    assert out.returncode != 0 and "tuning.method is immutable" in out.stderr, out.stderr
    assert create(cluster, namespace, workspace(), dry_run=False)[0]
    adapters = {"inference": {"adapters": [{"source": {"name": "a", "image": "r.io/a:1"}}]}}
    cluster.kubectl("patch", "workspace", "ws1", "-n", namespace, "--type=merge", "-p", json.dumps(adapters))
