"""InferenceSet (Kaito v0.12): the CRD (v1alpha1 and v1beta1, scale subresource), the CompositeController,
the hook that makes one Workspace of the set's replicas (and a KEDA ScaledObject where KEDA is installed),
its status, and Kaito's example InferenceSets."""

from __future__ import annotations

import copy
import subprocess

import jsonschema
import kubernetes_validate
import pytest
import yaml
from crd_support import cel_violations, load_yaml, strict
from workspace_support import NOW, SHARED, by_kind, need_shared, request

from hooks.inferenceset import autoscaling
from hooks.inferenceset import sync as inferenceset_sync
from hooks.settings import Settings
from hooks.workspace.sync import sync as workspace_sync

KAITO_V012_INFERENCE = SHARED / "reference" / "kaito-v0.12.0-examples" / "inference"
KEDA = autoscaling.SCALEDOBJECTS


def inference_set(**spec_overrides) -> dict:
    iset = {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "InferenceSet",
        "metadata": {"name": "phi-4-mini", "namespace": "team", "uid": "u-is", "generation": 1},
        "spec": {
            "replicas": 2,
            "labelSelector": {"matchLabels": {"apps": "phi-4-mini"}},
            "template": {
                "resource": {"instanceType": "Standard_NC24ads_A100_v4"},
                "inference": {"preset": {"name": "phi-4-mini-instruct"}},
            },
        },
    }
    iset["spec"].update(copy.deepcopy(spec_overrides))
    return iset


def sync(iset: dict, keda: bool = False, workspace: dict | None = None) -> dict:
    children: dict = {inferenceset_sync.WORKSPACES: {}}
    if keda:
        children[KEDA] = {}
    if workspace is not None:
        children[inferenceset_sync.WORKSPACES] = {f"team/{workspace['metadata']['name']}": workspace}
    req = {"controller": {"metadata": {"name": "inferenceset"}}, "parent": iset, "children": children, "related": {}}
    return inferenceset_sync.sync(req, NOW)


def the(children: list[dict], kind: str) -> dict:
    [found] = [c for c in children if c["kind"] == kind]
    return found


def kaito_inference_sets() -> list[tuple[str, dict]]:
    if not KAITO_V012_INFERENCE.exists():
        return []
    out = []
    for path in sorted(KAITO_V012_INFERENCE.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "InferenceSet":
                out.append((path.name, doc))
    return out


# ---- the CRD ------------------------------------------------------------------------------------


def crd_schema(version: int = 0) -> dict:
    return load_yaml("inferenceset-crd.yaml")["spec"]["versions"][version]["schema"]["openAPIV3Schema"]


def test_the_crd_is_valid_and_serves_both_versions_alike():
    crd = load_yaml("inferenceset-crd.yaml")
    kubernetes_validate.validate(crd, "1.33.0", strict=True)
    versions = {v["name"]: v for v in crd["spec"]["versions"]}
    assert set(versions) == {"v1alpha1", "v1beta1"} and crd["spec"]["conversion"]["strategy"] == "None"
    assert [n for n, v in versions.items() if v["storage"]] == ["v1alpha1"]
    alpha, beta = ({k: v for k, v in versions[n].items() if k not in ("name", "storage")} for n in versions)
    assert alpha == beta
    scale = versions["v1alpha1"]["subresources"]["scale"]
    assert scale == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    assert [c["name"] for c in versions["v1alpha1"]["additionalPrinterColumns"]][:2] == ["Replicas", "ReadyReplicas"]


@pytest.mark.parametrize("name, doc", kaito_inference_sets(), ids=[n for n, _ in kaito_inference_sets()])
def test_kaitos_example_inference_sets_pass_the_crd_schema_and_cel(name, doc):
    jsonschema.validate(doc, strict(crd_schema()))
    assert cel_violations(crd_schema(), doc) == []


def test_the_crd_refuses_a_digit_first_name_and_a_changed_template_resource():
    bad = inference_set()
    bad["metadata"]["name"] = "4-mini"
    assert any("DNS-1035" in v for v in cel_violations(crd_schema(), bad))
    old, new = inference_set(), inference_set()
    new["spec"]["template"]["resource"]["instanceType"] = "Standard_NC48ads_A100_v4"
    assert any("spec.template.resource is immutable" in v for v in cel_violations(crd_schema(), new, old))
    scaled = inference_set(replicas=5)
    assert cel_violations(crd_schema(), scaled, inference_set()) == []  # replicas may change


# ---- the hook -----------------------------------------------------------------------------------


def test_two_replicas_make_one_workspace_that_runs_two_replicas_on_two_machines():
    response = sync(inference_set())
    ws = the(response["children"], "Workspace")
    assert ws["metadata"]["name"] == "phi-4-mini" and ws["spec"] == {"replicas": 2}
    assert ws["resource"]["labelSelector"] == {"matchLabels": {"apps": "phi-4-mini"}}
    assert ws["metadata"]["labels"]["kaito.sh/inferenceset"] == "phi-4-mini"
    children = workspace_sync(request(ws), Settings(), NOW)["children"]
    assert len([c for c in children if c["kind"] == "Machine"]) == 2
    model = next(c for c in children if c["kind"] == "Deployment" and c["metadata"]["name"] == "phi-4-mini")
    assert model["spec"]["replicas"] == 2
    assert response["status"]["selector"] == "kaito.sh/workspace=phi-4-mini"


def test_scaling_the_set_changes_the_workspaces_replicas():
    assert the(sync(inference_set(replicas=3))["children"], "Workspace")["spec"]["replicas"] == 3
    assert the(sync(inference_set(replicas=0))["children"], "Workspace")["spec"]["replicas"] == 0


def test_node_count_limit_caps_the_replicas_and_says_so():
    response = sync(inference_set(replicas=5, nodeCountLimit=3))
    assert the(response["children"], "Workspace")["spec"]["replicas"] == 3
    assert "nodeCountLimit 3" in response["status"]["conditions"][0]["message"]


def test_node_count_limit_counts_nodes_not_replicas_with_mig_slices():
    iset = inference_set(replicas=7, nodeCountLimit=1)
    iset["spec"]["template"]["resource"]["partition"] = {"mode": "mig", "profile": "1g.10gb"}
    ws = the(sync(iset)["children"], "Workspace")
    assert ws["spec"]["replicas"] == 7 and ws["resource"]["partition"] == {"mode": "mig", "profile": "1g.10gb"}
    machines = [c for c in workspace_sync(request(ws), Settings(), NOW)["children"] if c["kind"] == "Machine"]
    assert len(machines) == 1 and machines[0]["spec"]["gpuInstanceProfile"] == "MIG1g"


def test_status_follows_the_workspace():
    ws = the(sync(inference_set())["children"], "Workspace")
    ws["status"] = {"replicas": 2, "readyReplicas": 1}
    status = sync(inference_set(), workspace=ws)["status"]
    assert (status["replicas"], status["readyReplicas"]) == (2, 1)
    assert status["conditions"][0]["type"] == "Ready" and status["conditions"][0]["status"] == "False"
    ws["status"]["readyReplicas"] = 2
    ready = sync(inference_set(), workspace=ws)
    assert ready["status"]["conditions"][0]["status"] == "True" and ready["resyncAfterSeconds"] == 0


def test_an_invalid_template_is_refused_with_the_sets_field_paths_and_keeps_its_workspace():
    ws = the(sync(inference_set())["children"], "Workspace")
    bad = inference_set()
    bad["spec"]["template"]["inference"]["preset"]["name"] = "phi-5"
    response = sync(bad, workspace=ws)
    [ready] = response["status"]["conditions"]
    assert ready["reason"] == "InvalidInferenceSet"
    assert ready["message"].startswith("spec.template.inference.preset.name: unknown preset 'phi-5'")
    assert [c["metadata"]["name"] for c in response["children"]] == ["phi-4-mini"]


@pytest.mark.parametrize(
    "field, value, says",
    [
        ("autoUpgrade", {"enabled": True}, "spec.autoUpgrade.enabled: "),
        ("updateStrategy", {"type": "OnDelete"}, "spec.updateStrategy.type: "),
        ("replicas", 65, "spec.replicas: "),
    ],
)
def test_unsupported_set_fields_are_refused_by_name(field, value, says):
    message = sync(inference_set(**{field: value}))["status"]["conditions"][0]["message"]
    assert message.startswith(says), message


# ---- autoscaling ----------------------------------------------------------------------------------


def annotated(**annotations) -> dict:
    iset = inference_set()
    iset["metadata"]["annotations"] = {
        "scaledobject.kaito.sh/auto-provision": "true",
        "scaledobject.kaito.sh/metricName": "vllm:num_requests_waiting",
        "scaledobject.kaito.sh/threshold": "10",
        **annotations,
    }
    return iset


def test_with_keda_the_annotations_become_a_scaled_object_on_sglangs_queue_metric():
    keda = pytest.importorskip(
        "cloudcoil.models.keda.v1alpha1", reason="cloudcoil-models-keda (test extra) is not installed"
    )
    from test_autoscaling_example import check_against

    response = sync(annotated(), keda=True)
    so = the(response["children"], "ScaledObject")
    check_against(keda.ScaledObject, so)
    assert so["spec"]["scaleTargetRef"] == {
        "apiVersion": "kaito.sh/v1alpha1",
        "kind": "InferenceSet",
        "name": "phi-4-mini",
    }
    (trigger,) = so["spec"]["triggers"]
    assert (
        trigger["metadata"]["query"] == 'sum(sglang:num_queue_reqs{namespace="team", kaito_sh_workspace="phi-4-mini"})'
    )
    assert trigger["metadata"]["threshold"] == "10" and trigger["metricType"] == "AverageValue"
    # The Workspace does not inherit the set's scaledobject annotations (KEDA scales the set, not it).
    assert "annotations" not in the(response["children"], "Workspace")["metadata"]


def test_node_count_limit_bounds_the_autoscaler():
    iset = annotated()
    iset["spec"]["nodeCountLimit"] = 4
    assert the(sync(iset, keda=True)["children"], "ScaledObject")["spec"]["maxReplicaCount"] == 4


def keda_reports(status: str, reason: str = "", message: str = "") -> dict:
    """A ScaledObject as Metacontroller observes it once KEDA's operator has written its Ready condition."""
    so = the(sync(annotated(), keda=True)["children"], "ScaledObject")
    so["status"] = {"conditions": [{"type": "Ready", "status": status, "reason": reason, "message": message}]}
    return so


def autoscaler_condition(iset: dict, scaled_object: dict | None) -> dict:
    observed = {} if scaled_object is None else {f"team/{scaled_object['metadata']['name']}": scaled_object}
    children = {inferenceset_sync.WORKSPACES: {}, KEDA: observed}
    req = {"controller": {"metadata": {"name": "inferenceset"}}, "parent": iset, "children": children, "related": {}}
    conditions = inferenceset_sync.sync(req, NOW)["status"]["conditions"]
    return next(c for c in conditions if c["type"] == "AutoscalerReady")


def test_the_autoscaler_is_ready_only_once_keda_reports_the_scaled_object_ready():
    iset = annotated()
    waiting = autoscaler_condition(iset, None)
    assert waiting["status"] == "False" and waiting["reason"] == "WaitingForKEDA", waiting
    ready = autoscaler_condition(iset, keda_reports("True", "ScaledObjectReady", "ScaledObject is defined correctly"))
    assert ready["status"] == "True" and "sglang:num_queue_reqs" in ready["message"], ready
    refused = autoscaler_condition(iset, keda_reports("False", "ScaledObjectCheckFailed", "no scale subresource"))
    assert refused["status"] == "False" and refused["reason"] == "ScaledObjectNotReady", refused
    assert "no scale subresource" in refused["message"], refused


def test_without_keda_the_set_serves_and_says_autoscaling_is_not_installed():
    response = sync(annotated())
    assert [c["kind"] for c in response["children"]] == ["Workspace"]
    auto = next(c for c in response["status"]["conditions"] if c["type"] == "AutoscalerReady")
    assert auto["status"] == "False" and auto["reason"] == "KEDANotInstalled" and "overlays/keda/" in auto["message"]


# Shaped like the Kaito annotation refusals in test_workspace_kaito_v012 on purpose: annotation, value, reason.
@pytest.mark.parametrize(
    "annotation, value, says",
    [
        ("scaledobject.kaito.sh/metricName", "vllm:time_to_first_token_seconds", "has no SGLang equivalent"),
        ("scaledobject.kaito.sh/threshold", "ten", "positive number"),
        ("scaledobject.kaito.sh/auto-provision", "yes", '"true" or "false"'),
        ("scaledobject.kaito.sh/minReplicas", "2", "unknown scaledobject annotation"),
    ],
)
def test_bad_scaledobject_annotations_are_refused_naming_the_annotation(annotation, value, says):
    message = sync(annotated(**{annotation: value}), keda=True)["status"]["conditions"][0]["message"]
    assert f"metadata.annotations[{annotation}]: " in message and says in message


@pytest.mark.parametrize("name, doc", kaito_inference_sets(), ids=[n for n, _ in kaito_inference_sets()])
def test_kaitos_example_inference_sets_are_served_or_refused_by_field(name, doc):
    doc = {**doc, "metadata": {"namespace": "default", **doc["metadata"]}}
    response = sync(doc, keda=True)
    ready = response["status"]["conditions"][0]
    if ready["reason"] == "InvalidInferenceSet":
        assert ready["message"].startswith(("spec.", "metadata.")), ready["message"]
        return
    ws = the(response["children"], "Workspace")
    assert ws["spec"]["replicas"] == doc["spec"].get("replicas", 1)
    assert workspace_sync(request(ws), Settings(), NOW)["children"]


def test_which_kaito_example_inference_sets_are_refused():
    need_shared(KAITO_V012_INFERENCE)
    refused = {}
    for name, doc in kaito_inference_sets():
        ready = sync(doc, keda=True)["status"]["conditions"][0]
        if ready["reason"] == "InvalidInferenceSet":
            refused[name] = ready["message"]
    # The MIG example asks for an H100 profile on the default A100 size; the message names both fixes.
    assert set(refused) == {"kaito_inferenceset_mig_mixed_strategy.yaml"}, refused
    assert "Standard_NC40ads_H100_v5" in refused["kaito_inferenceset_mig_mixed_strategy.yaml"]


# ---- install ------------------------------------------------------------------------------------


def test_the_controller_validates_against_metacontrollers_schema():
    from test_crds import metacontroller_schema

    cc = load_yaml("inferenceset-controller.yaml")
    jsonschema.validate(cc, metacontroller_schema("CompositeController"))
    assert cc["spec"]["parentResource"] == {"apiVersion": "kaito.sh/v1alpha1", "resource": "inferencesets"}
    assert [c["resource"] for c in cc["spec"]["childResources"]] == ["workspaces"]
    assert cc["spec"]["hooks"]["sync"]["webhook"]["path"] == "/sync/inferenceset"


def test_the_keda_component_adds_scaled_objects_to_the_controller_and_the_role(tmp_path):
    import shutil

    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (its built-in kustomize builds the component)")
    from workspace_support import REPO

    # The base reduced to the two objects the overlay patches (the full install needs upstream's manifests).
    work = tmp_path / "repo"
    shutil.copytree(REPO / "metacontroller", work / "metacontroller")
    shutil.copytree(REPO / "overlays" / "keda", work / "overlays" / "keda")
    (work / "metacontroller" / "kustomization.yaml").write_text(
        yaml.safe_dump({"resources": ["inferenceset-controller.yaml", "metacontroller-rbac.yaml"]})
    )
    out = subprocess.run(
        [kubectl, "kustomize", str(work / "overlays" / "keda")], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    docs = {d["kind"]: d for d in yaml.safe_load_all(out.stdout) if d}
    children = docs["CompositeController"]["spec"]["childResources"]
    assert {
        "apiVersion": "keda.sh/v1alpha1",
        "resource": "scaledobjects",
        "updateStrategy": {"method": "InPlace"},
    } in children
    assert any(r["apiGroups"] == ["keda.sh"] and "create" in r["verbs"] for r in docs["ClusterRole"]["rules"])


def test_the_hook_server_answers_the_sync_route():
    from hooks.server.app import create_app

    client = create_app().test_client()
    body = {"controller": {}, "parent": inference_set(), "children": {inferenceset_sync.WORKSPACES: {}}, "related": {}}
    response = client.post("/sync/inferenceset", json=body)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert [c["kind"] for c in response.get_json()["children"]] == ["Workspace"]


def test_render_prints_the_sets_workspace_and_its_children(tmp_path):

    from workspace_support import render_cli

    path = tmp_path / "iset.yaml"
    path.write_text(yaml.safe_dump(annotated()))
    out = render_cli(str(path))
    assert out.returncode == 0, out.stderr
    kinds = [d["kind"] for d in yaml.safe_load_all(out.stdout) if d]
    assert kinds[:2] == ["Workspace", "ScaledObject"] and kinds.count("Machine") == 2 and "Deployment" in kinds


def test_desired_children_fed_back_give_the_same_answer():
    first = sync(annotated(), keda=True)
    ws = the(first["children"], "Workspace")
    again = sync(annotated(), keda=True, workspace=ws)
    assert again["children"] == first["children"]
    assert by_kind(first["children"]).keys() == {"Workspace.kaito.sh/v1alpha1", "ScaledObject.keda.sh/v1alpha1"}
