"""Property tests on the sync hook over Workspaces the CRD admits (schema + CEL rules)."""

from __future__ import annotations

import json
import os
import re

import jsonschema
import pytest
from crd_support import cel_violations, schema_root, workspace_schema
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from workspace_support import NOW, by_kind, node, request

from hooks import naming
from hooks.settings import Settings
from hooks.workspace import catalog
from hooks.workspace.sync import sync

pytestmark = pytest.mark.slow  # hundreds of generated Workspaces

SCHEMA = workspace_schema()
ROOT = schema_root()

dns_label = st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?\Z")
label_value = st.from_regex(r"\A[a-zA-Z0-9]([-a-zA-Z0-9_.]{0,8}[a-zA-Z0-9])?\Z")
known_presets = st.sampled_from(sorted(catalog.presets()))
known_skus = st.sampled_from(sorted(k for k, v in catalog.skus().items() if v.gpu_memory * v.gpus >= 80))
# Mostly values that plan successfully, so the fixpoint and determinism checks see real children.
preset_name = st.one_of(
    known_presets, known_presets, known_presets, st.from_regex(r"\A[a-z0-9][a-z0-9.-]{0,20}[a-z0-9]\Z")
)
instance_type = st.one_of(
    known_skus, known_skus, st.sampled_from(sorted(catalog.skus())), st.from_regex(r"\A[A-Za-z][A-Za-z0-9_.-]{0,20}\Z")
)
good_image = st.sampled_from(["r.example.com/a/b:1", "ghcr.io/x/y@sha256:" + "a" * 64, "nginx"])
image = st.one_of(
    good_image,
    good_image,
    good_image,
    st.sampled_from(["<YOUR_IMAGE>", "Bad/Upper:1"]),
    st.text(min_size=1, max_size=20),
)
strength = st.one_of(st.none(), st.sampled_from(["0", "0.25", "1", "1.0", ".5"]))
secret_names = st.one_of(st.none(), st.lists(dns_label, max_size=2))


@st.composite
def adapters(draw):
    names = draw(st.lists(dns_label, max_size=4, unique=True))
    out = []
    for n in names:
        source = {"name": n}
        if draw(st.booleans()):
            source["image"] = draw(image)
        else:
            source["volumeSource"] = {"persistentVolumeClaim": {"claimName": n}}
        if (s := draw(secret_names)) is not None:
            source["imagePullSecrets"] = s
        a = {"source": source}
        if (v := draw(strength)) is not None:
            a["strength"] = v
        out.append(a)
    return out


@st.composite
def workspaces(draw):
    match_labels = draw(st.dictionaries(st.sampled_from(["apps", "team", "pool"]), label_value, min_size=1, max_size=2))
    resource = {"labelSelector": {"matchLabels": match_labels}}
    if draw(st.booleans()):
        resource["instanceType"] = draw(instance_type)
    if draw(st.booleans()):
        resource["count"] = draw(st.sampled_from([1, 1, 1, 2, 3]))
    if draw(st.booleans()):
        resource["preferredNodes"] = draw(st.lists(dns_label, max_size=2))
    ws = {
        "apiVersion": "kaito.sh/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": draw(dns_label), "namespace": draw(dns_label), "generation": draw(st.integers(1, 5))},
        "resource": resource,
    }
    tuning = draw(st.integers(0, 3)) == 0
    tunable = sorted(n for n, p in catalog.presets().items() if p.supports_tuning)
    preset = {"name": draw(st.one_of(st.sampled_from(tunable), preset_name) if tuning else preset_name)}
    if draw(st.integers(0, 3)) == 0:
        opts = {}
        if draw(st.booleans()):
            opts["image"] = draw(image)
        if draw(st.booleans()):
            opts["modelAccessSecret"] = draw(dns_label)
        preset["presetOptions"] = opts
        preset["accessMode"] = draw(st.sampled_from(["public", "private"]))
    if not tuning:
        inference = {"preset": preset}
        if draw(st.booleans()):
            inference["adapters"] = draw(adapters())
        ws["inference"] = inference
    else:
        src = draw(
            st.sampled_from(
                [
                    {"urls": ["https://example.com/data.parquet"]},
                    {"urls": ["https://example.com/data.parquet"]},
                    {"urls": ["http://169.254.169.254/latest"]},
                    {"image": "r.example.com/data:1"},
                    {"volumeSource": {"persistentVolumeClaim": {"claimName": "data"}}},
                ]
            )
        )
        out = draw(
            st.sampled_from(
                [{"image": "r.example.com/out:1", "imagePushSecret": "push"}, {"volumeSource": {"emptyDir": {}}}]
            )
        )
        ws["tuning"] = {
            "preset": preset,
            "method": draw(st.sampled_from(["lora", "qlora"])),
            "input": src,
            "output": out,
        }
    return ws


def admitted(ws: dict) -> bool:
    try:
        jsonschema.validate(ws, SCHEMA)
    except jsonschema.ValidationError:
        return False
    return not cel_violations(ROOT, ws)


def related_nodes(ws: dict) -> list[dict]:
    labels = dict(ws["resource"]["labelSelector"]["matchLabels"])
    labels["node.kubernetes.io/instance-type"] = ws["resource"].get("instanceType", "Standard_NC24ads_A100_v4")
    return [node("existing-1", labels)]


# CI replays the same examples every run (derandomize); elsewhere each run explores new ones, and
# KAITO_PROPERTY_EXAMPLES=2000 explores more.
PROPERTY_SETTINGS = settings(
    max_examples=int(os.environ.get("KAITO_PROPERTY_EXAMPLES", "150")),
    derandomize=os.environ.get("CI") == "true",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@PROPERTY_SETTINGS
@given(workspaces(), st.sampled_from(["aks", "byo"]), st.booleans())
def test_any_admitted_workspace_gets_a_well_formed_response(ws, mode, with_node):
    assume(admitted(ws))
    resp = sync(request(ws, nodes=related_nodes(ws) if with_node else None), Settings(node_provisioning=mode), NOW)
    assert set(resp) == {"status", "children", "resyncAfterSeconds"}
    assert isinstance(resp["children"], list)
    conds = resp["status"]["conditions"]
    assert {c["type"] for c in conds} >= {"ResourceReady", "WorkspaceReady"}
    for c in conds:
        assert c["status"] in ("True", "False", "Unknown") and c["reason"] and c["message"]
    json.dumps(resp)  # serialisable


@PROPERTY_SETTINGS
@given(workspaces(), st.booleans())
def test_desired_children_fed_back_are_reproduced_and_responses_are_identical(ws, with_node):
    assume(admitted(ws))
    nodes = related_nodes(ws) if with_node else None
    first = sync(request(ws, nodes=nodes), Settings(), NOW)
    again = sync(request(json.loads(json.dumps(ws)), nodes=nodes), Settings(), NOW)
    assert json.dumps(first) == json.dumps(again)
    parent = {**ws, "status": first["status"]}
    second = sync(request(parent, children=by_kind(first["children"]), nodes=nodes), Settings(), NOW)
    assert second["children"] == first["children"]
    assert (
        second["status"]["conditions"][0]["lastTransitionTime"]
        == first["status"]["conditions"][0]["lastTransitionTime"]
    )


DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def names_the_apiserver_refuses(children: list[dict]) -> list[str]:
    """Child names the API server's name validation refuses: Services must be DNS-1035 labels, every other
    name a DNS-1123 subdomain (and pod-producing workloads a DNS-1123 label)."""
    out = []
    for child in children:
        name = child["metadata"]["name"]
        if child["kind"] == "Service" and not (len(name) <= 63 and DNS1035.match(name)):
            out.append(f"Service {name}")
        elif not naming.is_dns_subdomain(name):
            out.append(f"{child['kind']} {name}")
    return out


@settings(PROPERTY_SETTINGS, max_examples=int(os.environ.get("KAITO_ADMITTED_EXAMPLES", "1500")))
@given(workspaces())
def test_no_admitted_workspace_gets_a_child_name_the_apiserver_refuses(ws):
    """A Service name must start with a letter: the CRD's CEL refuses a digit-first Workspace name (7b-chat),
    so every admitted Workspace's children have names the apiserver accepts. 1,500 admitted Workspaces (about
    1 in 9 of the fuzzed ones had such a name before the rule)."""
    assume(admitted(ws))
    assert names_the_apiserver_refuses(sync(request(ws), Settings(), NOW)["children"]) == []


def test_a_digit_first_workspace_is_not_admitted():
    ws = {
        "apiVersion": "kaito.sh/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": "7b-chat", "namespace": "team"},
        "resource": {"labelSelector": {"matchLabels": {"apps": "x"}}},
        "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}},
    }
    assert not admitted(ws)
    assert names_the_apiserver_refuses(sync(request(ws), Settings(), NOW)["children"]) == []
