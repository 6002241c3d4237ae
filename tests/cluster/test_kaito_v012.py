"""Kaito v0.12 users apply their YAML unchanged, on the real control plane: every example Workspace and
InferenceSet in ../shared/reference/kaito-v0.12.0-examples/ is admitted by the apiserver and reconciled
(or refused by the hook with a message naming the field and the fix); a v1beta1 Workspace and its
v1alpha1 view are the same object with the same columns; quick start 1 as v1beta1 goes Ready; an
InferenceSet with 2 replicas makes two Machines and `kubectl scale inferenceset` changes them; a MIG
Workspace packs 3 replicas onto one MIG1g Machine whose kwok node carries 7 slices."""

from __future__ import annotations

import copy
import json
import re

import pytest
import yaml
from observe import WAIT_S, condition, get, items, printed_columns, wait_condition
from operator_stack import REPO
from workspace_support import KAITO_V012_EXAMPLES, kaito_v012_documents, need_shared

V012 = KAITO_V012_EXAMPLES
SERVED_KINDS = ("Workspace", "InferenceSet")
FIELD_FIRST = re.compile(r"^(metadata|resource|inference|tuning|spec)[\w.\[\]/'-]*: ")


def v012_documents() -> list[tuple[str, dict]]:
    """(file#index, doc) of every Workspace and InferenceSet in Kaito's examples, as written."""
    return kaito_v012_documents(*SERVED_KINDS)


def companions(name: str) -> list[dict]:
    """The file's other objects a user applies with it (ConfigMaps; not Kaito's placeholder Secrets)."""
    path = next(V012.rglob(name.split("#")[0]))
    return [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == "ConfigMap"]


def apply(cluster, namespace: str, doc: dict, *extra: str):
    """`kubectl apply -n NAMESPACE`; the test's namespace stands in for a `namespace: default` in the file."""
    doc = {**doc, "metadata": {k: v for k, v in doc["metadata"].items() if k != "namespace"}}
    return cluster.kubectl("apply", "-n", namespace, *extra, "-f", "-", input=json.dumps(doc), check=False)


DOCS = v012_documents()


@pytest.mark.parametrize("name, doc", DOCS, ids=[n for n, _ in DOCS])
def test_every_v012_example_is_admitted_unchanged_by_the_apiserver(cluster, namespace, name, doc):
    out = apply(cluster, namespace, doc, "--dry-run=server", "--validate=strict")
    assert out.returncode == 0, out.stderr


def test_the_v012_examples_are_here():
    need_shared(V012)
    assert len(DOCS) >= 32  # 29 Workspaces and 3 InferenceSets (MultiRoleInference is not served)


@pytest.mark.parametrize("name, doc", DOCS, ids=[n for n, _ in DOCS])
def test_every_v012_example_is_reconciled_or_refused_by_field(cluster, aks, namespace, name, doc):
    for companion in companions(name):
        assert apply(cluster, namespace, companion).returncode == 0
    out = apply(cluster, namespace, doc)
    assert out.returncode == 0, out.stderr
    kind, obj_name = doc["kind"].lower(), doc["metadata"]["name"]
    first = "Ready" if kind == "inferenceset" else "ResourceReady"

    def reconciled():
        obj = get(cluster, kind, obj_name, "-n", namespace)
        return obj if condition(obj, first) else None

    obj = cluster.wait_for(f"{kind}/{obj_name} reconciled", reconciled, timeout=WAIT_S)
    verdict = condition(obj, first)
    if verdict.get("reason") in ("InvalidWorkspace", "InvalidInferenceSet"):
        # Field first, and every problem the offline check finds (render) is in the status.
        assert FIELD_FIRST.match(verdict["message"]), f"refusal without a field path: {verdict['message']}"
        for problem in offline_problems(doc):
            assert problem in verdict["message"]
    elif kind == "inferenceset":
        ws = cluster.wait_for(
            f"the Workspace of {obj_name}", lambda: get(cluster, "workspace", obj_name, "-n", namespace), timeout=WAIT_S
        )
        assert ws["spec"]["replicas"] == doc["spec"].get("replicas", 1)


def offline_problems(doc: dict) -> list[str]:
    from hooks.inferenceset.workspace import check
    from hooks.workspace.planning import parse_and_plan

    _, problems = check(doc) if doc["kind"] == "InferenceSet" else parse_and_plan(doc)
    return [str(p) for p in problems]


def v1beta1(doc: dict) -> dict:
    doc = copy.deepcopy(doc)
    doc["apiVersion"] = "kaito.sh/v1beta1"
    return doc


def test_a_v1beta1_workspace_reads_back_unchanged_in_both_versions_with_the_same_columns(cluster, namespace):
    doc = v1beta1(yaml.safe_load((REPO / "examples" / "inference-phi-3-with-adapters.yaml").read_text()))
    doc["resource"]["partition"] = {"mode": "mig", "profile": "3g.40gb"}
    assert apply(cluster, namespace, doc, "--validate=strict").returncode == 0
    name = doc["metadata"]["name"]
    beta = get(cluster, "workspaces.v1beta1.kaito.sh", name, "-n", namespace)
    alpha = get(cluster, "workspaces.v1alpha1.kaito.sh", name, "-n", namespace)
    assert (beta["apiVersion"], alpha["apiVersion"]) == ("kaito.sh/v1beta1", "kaito.sh/v1alpha1")
    for top in ("resource", "inference", "spec"):
        assert alpha[top] == beta[top], top
    # What the user wrote comes back (the schema's defaults, e.g. accessMode, are added beside it).
    assert alpha["resource"]["partition"] == {"mode": "mig", "profile": "3g.40gb"}
    assert alpha["resource"]["labelSelector"] == doc["resource"]["labelSelector"]
    assert alpha["inference"]["adapters"] == doc["inference"]["adapters"]
    assert alpha["inference"]["preset"]["name"] == doc["inference"]["preset"]["name"]
    assert alpha["metadata"]["uid"] == beta["metadata"]["uid"]

    def both_columns() -> dict[str, dict[str, str]] | None:
        """Both versions' columns, read again until they agree: where the operator runs in the same session,
        its first status can land between the two gets (and AGE moves with the clock)."""
        columns = {
            v: printed_columns(cluster, namespace, f"workspaces.{v}.kaito.sh", name) for v in ("v1alpha1", "v1beta1")
        }
        for version in columns.values():
            version.pop("AGE")
        return columns if columns["v1alpha1"] == columns["v1beta1"] else None

    columns = cluster.wait_for("the same columns in both versions", both_columns, timeout=WAIT_S)
    crd = yaml.safe_load((REPO / "metacontroller" / "workspace-crd.yaml").read_text())
    shown = [c["name"].upper() for c in crd["spec"]["versions"][0]["additionalPrinterColumns"] if not c.get("priority")]
    assert list(columns["v1alpha1"]) == ["NAME", *(c for c in shown if c != "AGE")], columns


def test_a_digit_first_name_is_refused_naming_the_rule(cluster, namespace):
    doc = v1beta1(yaml.safe_load((REPO / "examples" / "inference-phi-3.yaml").read_text()))
    doc["metadata"]["name"] = "7b-chat"
    out = apply(cluster, namespace, doc)
    assert out.returncode != 0 and "DNS-1035" in out.stderr, out.stderr


def test_quick_start_1_as_v1beta1_goes_to_workspace_ready(cluster, cluster_arm, aks, simulator, namespace):
    from test_operator_aks import assert_ready_columns, provisioned_machine, running_pod

    doc = v1beta1(yaml.safe_load((REPO / "examples" / "inference-phi-3.yaml").read_text()))
    assert apply(cluster, namespace, doc).returncode == 0
    _, node = provisioned_machine(cluster, cluster_arm, simulator, namespace)
    running_pod(cluster, namespace, node)
    assert_ready_columns(cluster, namespace, doc["metadata"]["name"], doc["resource"]["instanceType"])


def inference_set(name: str = "phi-4-mini", replicas: int = 2) -> dict:
    return {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "InferenceSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "labelSelector": {"matchLabels": {"apps": name}},
            "template": {
                "resource": {"instanceType": "Standard_NC24ads_A100_v4"},
                "inference": {"preset": {"name": "phi-4-mini-instruct"}},
            },
        },
    }


def machines_in(cluster, namespace: str, count: int) -> list[dict]:
    def probe():
        found = items(cluster, "machines", "-n", namespace)
        return found if len(found) == count else None

    return cluster.wait_for(f"{count} Machines in {namespace}", probe, timeout=WAIT_S)


def test_an_inference_set_of_two_makes_two_machines_and_kubectl_scale_changes_them(
    cluster, cluster_arm, aks, simulator, namespace
):
    iset = inference_set()
    assert apply(cluster, namespace, iset).returncode == 0
    machines_in(cluster, namespace, 2)
    ws = get(cluster, "workspace", "phi-4-mini", "-n", namespace)
    assert ws["spec"]["replicas"] == 2
    cluster.kubectl("scale", "inferenceset", "phi-4-mini", "-n", namespace, "--replicas=3")
    machines_in(cluster, namespace, 3)
    scale = json.loads(
        cluster.kubectl(
            "get", "--raw", f"/apis/kaito.sh/v1alpha1/namespaces/{namespace}/inferencesets/phi-4-mini/scale"
        ).stdout
    )
    assert scale["spec"]["replicas"] == 3 and scale["status"]["selector"] == "kaito.sh/workspace=phi-4-mini"
    for machine in items(cluster, "machines", "-n", namespace):
        pool = machine["metadata"]["name"]
        cluster.wait_for(f"the PUT of {pool}", lambda pool=pool: cluster_arm.calls("PUT", pool), timeout=WAIT_S)
        simulator.provision(pool)
    wait_condition(cluster, namespace, "inferenceset", "phi-4-mini", "Ready")
    columns = printed_columns(cluster, namespace, "inferenceset", "phi-4-mini")
    assert (columns["REPLICAS"], columns["READYREPLICAS"]) == ("3", "3"), columns


def test_a_mig_workspace_packs_three_replicas_onto_one_mig1g_node(cluster, cluster_arm, aks, simulator, namespace):
    doc = yaml.safe_load((REPO / "examples" / "inference-phi-3.yaml").read_text())
    doc["resource"]["instanceType"] = "Standard_NC24ads_A100_v4"
    doc["resource"]["partition"] = {"mode": "mig", "profile": "1g.10gb"}
    doc["spec"] = {"replicas": 3}
    assert apply(cluster, namespace, doc).returncode == 0
    [machine] = machines_in(cluster, namespace, 1)
    assert machine["spec"]["gpuInstanceProfile"] == "MIG1g"
    pool = machine["metadata"]["name"]
    cluster.wait_for(f"the PUT of {pool}", lambda: cluster_arm.calls("PUT", pool), timeout=WAIT_S)
    assert cluster_arm.state.pools[pool]["properties"]["gpuInstanceProfile"] == "MIG1g"
    node = simulator.provision(pool)
    # The NVIDIA device plugin (mixed strategy) reports the node's 7 slices of the A100.
    slices = {"nvidia.com/mig-1g.10gb": "7"}
    cluster.kubectl(
        "patch",
        "node",
        node["metadata"]["name"],
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"capacity": slices, "allocatable": slices}}),
    )
    node_name = node["metadata"]["name"]
    allocatable = get(cluster, "node", node_name)["status"]["allocatable"]
    assert allocatable.get("nvidia.com/mig-1g.10gb") == "7", allocatable

    def scheduled():
        pods = [p for p in items(cluster, "pods", "-n", namespace) if p["spec"].get("nodeName") == node_name]
        model = [p for p in pods if "nvidia.com/mig-1g.10gb" in json.dumps(p["spec"]["containers"][0]["resources"])]
        return model if len(model) == 3 else None

    cluster.wait_for("3 replicas scheduled on the MIG node", scheduled, timeout=WAIT_S)


def test_kaitos_custom_config_example_is_refused_on_the_workspace_naming_the_vllm_keys(cluster, aks, namespace):
    """The ConfigMap reaches the hook as a related object (customize's `names` rule): the vLLM keys without
    an SGLang equivalent are named on ResourceReady before any pod is created."""
    need_shared(V012)
    path = V012 / "inference" / "kaito_workspace_custom_config.yaml"
    for doc in yaml.safe_load_all(path.read_text()):
        assert apply(cluster, namespace, doc).returncode == 0
    ws = wait_condition(
        cluster,
        namespace,
        "workspace",
        "workspace-deepseek-r1-distill-qwen-14b",
        "ResourceReady",
        "False",
        "InvalidWorkspace",
    )
    message = condition(ws, "ResourceReady")["message"]
    assert message.startswith("inference.config: ConfigMap 'ds-inference-params': inference_config.yaml: ")
    for key in (
        "vllm.swap-space",
        "vllm.tensor-parallel-size",
        "vllm.max-seq-len-to-capture",
        "vllm.num-scheduler-steps",
    ):
        assert key in message
    assert items(cluster, "deployments", "-n", namespace) == []
