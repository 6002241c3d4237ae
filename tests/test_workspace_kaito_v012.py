"""Kaito v0.12 users apply their YAML unchanged: v1beta1 Workspaces, and every example in Kaito v0.12's
examples folder either renders children valid under Kubernetes' strict schemas or is refused with a
message that starts with the field to change."""

from __future__ import annotations

import re

import pytest
from test_workspace_corpus import render, validate_child
from workspace_support import KAITO_V012_EXAMPLES, kaito_v012_documents, need_shared, workspace

from hooks.workspace.validation import parse_workspace

FIELD_PATH = re.compile(r"^(metadata|resource|inference|tuning|spec)[\w.\[\]/'-]*: ")


def v012_documents() -> list[tuple[str, dict]]:
    return kaito_v012_documents("Workspace")


def test_a_v1beta1_workspace_parses_like_its_v1alpha1_twin():
    alpha, problems = parse_workspace(workspace())
    beta, beta_problems = parse_workspace(workspace(apiVersion="kaito.sh/v1beta1"))
    assert problems == beta_problems == []
    assert alpha is not None and beta is not None
    assert beta.model_dump(exclude={"apiVersion"}) == alpha.model_dump(exclude={"apiVersion"})


def test_an_unknown_kaito_version_is_refused_naming_the_served_ones():
    _, problems = parse_workspace(workspace(apiVersion="kaito.sh/v1"))
    assert [p.field for p in problems] == ["apiVersion"]
    assert "kaito.sh/v1alpha1" in problems[0].message and "kaito.sh/v1beta1" in problems[0].message


def test_a_digit_first_name_is_refused_by_the_hook_too():
    _, problems = parse_workspace(workspace(metadata={"name": "7b-chat", "namespace": "team"}))
    assert [p.field for p in problems] == ["metadata.name"] and "DNS-1035" in problems[0].message


@pytest.mark.parametrize("name, doc", v012_documents(), ids=[n for n, _ in v012_documents()])
def test_kaito_v012_workspace_renders_valid_children_or_is_refused_by_field(name: str, doc: dict):
    children, problems = render(doc)
    if problems:
        for p in problems:
            assert FIELD_PATH.match(p), f"problem does not start with a field path: {p}"
        return
    assert children
    for child in children:
        validate_child(child)


def test_kaito_v012_examples_are_here_or_the_test_says_why():
    need_shared(KAITO_V012_EXAMPLES)
    assert len(v012_documents()) >= 29


def test_which_kaito_v012_workspaces_are_refused_and_why():
    need_shared(KAITO_V012_EXAMPLES)
    refused = {}
    for name, doc in v012_documents():
        _, problems = render(doc)
        if problems:
            refused[name.split("#")[0]] = problems
    # Kaito's own placeholders (ACR_REPO_HERE) and the accelerator partition, which needs a device plugin we
    # do not assume; everything else renders.
    assert set(refused) == {
        "kaito_workspace_tuning_falcon_7b_mental.yaml",
        "kaito_workspace_tuning_falcon_7b_oai.yaml",
        "kaito_workspace_tuning_phi_3.yaml",
        "kaito_workspace_phi_3_with_adapters.yaml",
        "kaito_workspace_accelerator.yaml",
    }, refused
    assert any("resource.partition.mode" in p for p in refused["kaito_workspace_accelerator.yaml"])


# ---- Kaito v0.12 annotations ----------------------------------------------------------------------


def _main_args(ws: dict) -> list[str]:
    from workspace_support import NOW, find, request

    from hooks.settings import Settings
    from hooks.workspace.sync import sync

    deployment = find(sync(request(ws), Settings(), NOW)["children"], "Deployment")
    return deployment["spec"]["template"]["spec"]["containers"][0]["args"]


def test_performance_mode_throughput_becomes_sglang_scheduler_flags_sglang_accepts(tmp_path):
    from inference_support.launcher import base_args, dry_run, sglang_parse, sglang_prefix

    args = _main_args(workspace(metadata={"name": "ws1", "annotations": {"kaito.sh/performance-mode": "throughput"}}))
    tail = args[args.index("--") :]
    assert tail == ["--", "--enable-mixed-chunk", "--schedule-conservativeness", "0.5"]
    (tmp_path / "weights").mkdir()
    rc, argv, err = dry_run(base_args(tmp_path))
    assert rc == 0, err
    sa = sglang_parse(sglang_prefix(argv) + tail[1:])  # what the launcher appends after its own flags
    assert sa.enable_mixed_chunk is True and sa.schedule_conservativeness == 0.5
    assert "--" not in _main_args(workspace())


@pytest.mark.parametrize(
    "annotation, value, says",
    [
        ("kaito.sh/performance-mode", "fastest", "use balanced or throughput"),
        ("kaito.sh/bypass-resource-checks", "True", "GPU memory check"),
        ("kaito.sh/node-image-family", "AzureLinux", "node image"),
        ("kaito.sh/run-benchmark", "true", "benchmark"),
    ],
)
def test_kaito_annotations_without_an_equivalent_are_refused_with_the_reason(annotation, value, says):
    ws = workspace(metadata={"name": "ws1", "annotations": {annotation: value}})
    _, problems = render(ws)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"metadata.annotations[{annotation}]: ") and says in problems[0]


def test_performance_mode_on_the_transformers_runtime_is_refused():
    ws = workspace(
        metadata={"name": "ws1", "annotations": {"kaito.sh/performance-mode": "throughput"}},
        resource={"instanceType": "Standard_NC6s_v3", "labelSelector": {"matchLabels": {"apps": "x"}}},
    )
    _, problems = render(ws)
    assert any("performance modes tune SGLang" in p for p in problems), problems


# ---- inference.config checked by the hook ----------------------------------------------------------


def _config_request(config_data: dict | None):
    from workspace_support import request

    ws = workspace(inference={"preset": {"name": "phi-3-mini-4k-instruct"}, "config": "my-config"})
    req = request(ws)
    req["related"]["ConfigMap.v1"] = {}
    if config_data is not None:
        cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "my-config", "namespace": "team"}}
        req["related"]["ConfigMap.v1"]["team/my-config"] = {**cm, "data": config_data}
    return req


def _resource_ready(req) -> dict:
    from workspace_support import NOW

    from hooks.settings import Settings
    from hooks.workspace.sync import sync

    response = sync(req, Settings(), NOW)
    return next(c for c in response["status"]["conditions"] if c["type"] == "ResourceReady"), response


def test_customize_relates_the_inference_config_map_by_name():
    from hooks.workspace.sync import customize

    ws = workspace(inference={"preset": {"name": "phi-3-mini-4k-instruct"}, "config": "my-config"})
    rules = customize({"controller": {}, "parent": ws})["relatedResources"]
    assert {"apiVersion": "v1", "resource": "configmaps", "namespace": "team", "names": ["my-config"]} in rules
    assert not [
        r
        for r in customize({"controller": {}, "parent": workspace()})["relatedResources"]
        if r["resource"] == "configmaps"
    ]


def test_a_vllm_key_without_an_sglang_equivalent_is_reported_on_the_workspace_before_any_pod_starts():
    text = "vllm:\n  max-model-len: 8192\n  swap-space: 4\n"
    ready, response = _resource_ready(_config_request({"inference_config.yaml": text}))
    assert ready["status"] == "False" and ready["reason"] == "InvalidWorkspace"
    assert ready["message"].startswith(
        "inference.config: ConfigMap 'my-config': inference_config.yaml: vllm.swap-space"
    )
    assert response["children"] == []


def test_an_sglang_host_flag_is_reported_on_the_workspace():
    ready, _ = _resource_ready(_config_request({"inference_config.yaml": "sglang:\n  host: 0.0.0.0\n"}))
    assert "sglang.host is not allowed" in ready["message"]


def test_a_usable_config_map_lets_the_workspace_proceed():
    ready, response = _resource_ready(
        _config_request({"inference_config.yaml": "vllm:\n  gpu-memory-utilization: 0.82\n"})
    )
    assert ready["reason"] != "InvalidWorkspace" and response["children"]


@pytest.mark.parametrize(
    "data, says", [(None, "does not exist"), ({"other.yaml": "x"}, "has no key inference_config.yaml")]
)
def test_a_missing_config_map_or_key_is_reported(data, says):
    ready, _ = _resource_ready(_config_request(data))
    assert ready["message"].startswith("inference.config: ") and says in ready["message"]


@pytest.mark.parametrize(
    "example, code, says",
    [
        ("kaito_workspace_custom_config.yaml", 2, "inference.config: ConfigMap 'ds-inference-params': "),
        ("kaito_workspace_gpt_oss_20b.yaml", 0, "InferenceReady=False Creating"),
    ],
)
def test_render_checks_the_inference_config_map_kept_in_the_same_file(example, code, says):
    import io

    from hooks.cli.render import render as render_cli
    from hooks.settings import Settings

    path = need_shared(KAITO_V012_EXAMPLES / "inference" / example)
    out, err = io.StringIO(), io.StringIO()
    assert render_cli(str(path), Settings(), out, err) == code, err.getvalue()
    assert says in err.getvalue()
