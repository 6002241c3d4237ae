"""Kaito's inference.config ConfigMap: its `sglang:` flags reach SGLang's own parser; its `vllm:` keys are mapped
to SGLang's flags or refused by name (more in tests/test_inference_kaito_config.py)."""

from __future__ import annotations

import pytest
from inference_support.launcher import PRESET, base_args, dry_run, make_adapter, sglang_parse, sglang_prefix
from workspace_support import NOW, find, request, workspace

from hooks.settings import Settings
from hooks.workspace.sync import sync


def test_hook_mounts_the_config_map_and_passes_it_to_the_launcher():
    ws = workspace(inference={"preset": {"name": "phi-3-mini-4k-instruct"}, "config": "my-inference-config"})
    sts = find(
        sync(request(ws), Settings(), NOW)["children"], "Deployment"
    )  # a one-node preset: a Deployment (replicas)
    pod = sts["spec"]["template"]["spec"]
    main = pod["containers"][0]
    assert {"name": "config-volume", "configMap": {"name": "my-inference-config"}} in pod["volumes"]
    assert {"name": "config-volume", "mountPath": "/mnt/config", "readOnly": True} in main["volumeMounts"]
    args = main["args"]
    assert args[args.index("--config-file") + 1] == "/mnt/config/inference_config.yaml"


def test_sglang_section_becomes_flags_that_sglang_accepts(tmp_path):
    config = tmp_path / "inference_config.yaml"
    config.write_text(
        "sglang:\n  mem-fraction-static: 0.8\n  context-length: 8192\n  enable-torch-compile: true\n  disable-radix-cache: false\n"
    )
    make_adapter(tmp_path / "adapters", "support", 8, ["qkv_proj", "o_proj"])
    (tmp_path / "weights").mkdir()
    rc, argv, err = dry_run(base_args(tmp_path, "--adapter", "support", "--config-file", str(config)))
    assert rc == 0, err
    assert argv[-5:] == ["--mem-fraction-static", "0.8", "--context-length", "8192", "--enable-torch-compile"]
    sa = sglang_parse(sglang_prefix(argv))
    assert sa.mem_fraction_static == 0.8 and sa.context_length == 8192 and sa.enable_torch_compile is True
    assert sa.served_model_name == PRESET and sa.enable_lora is True


@pytest.mark.parametrize(
    "text, message",
    [
        ("sglang: [1, 2]\n", "must map flag names"),
        ("- not a mapping\n", "expected a mapping"),
        ("vllm:\n  num-scheduler-steps: 1\n", "vllm.num-scheduler-steps has no SGLang equivalent"),
        ("probe: 1\n", "unknown top-level key(s) probe"),
    ],
)
def test_unusable_config_is_a_clear_start_error(tmp_path, text, message):
    config = tmp_path / "inference_config.yaml"
    config.write_text(text)
    (tmp_path / "weights").mkdir()
    rc, _, err = dry_run(base_args(tmp_path, "--config-file", str(config)))
    assert rc == 2 and message in err and str(config) in err


def test_missing_config_file_names_the_configmap_key(tmp_path):
    (tmp_path / "weights").mkdir()
    rc, _, err = dry_run(base_args(tmp_path, "--config-file", str(tmp_path / "nope.yaml")))
    assert rc == 2 and "inference_config.yaml" in err
