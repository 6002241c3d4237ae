"""Kaito v0.12's inference.config ConfigMap under SGLang: `vllm:` keys mapped to SGLang's flags (checked by
SGLang's own argument parser) or refused naming the key; `sglang:` flags passed through except those that
would change the listen address, port, API key or paths; tool calling's argv and the gateway's pass-through
of `tools` and `tool_choice`."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
import yaml
from inference_support.launcher import base_args, dry_run, sglang_parse, sglang_prefix
from workspace_support import SHARED, need_shared

from inference.server_args_check import check_with_sglang_parser
from workload_contract.inference_config import RuntimeConfigError, flags_from_config

KAITO_V012_INFERENCE = SHARED / "reference" / "kaito-v0.12.0-examples" / "inference"


def config_file(tmp_path, text: str):
    path = tmp_path / "config" / "inference_config.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def launch_argv(tmp_path, text: str, *extra: str) -> list[str]:
    (tmp_path / "weights").mkdir(exist_ok=True)
    rc, argv, err = dry_run(base_args(tmp_path, "--config-file", str(config_file(tmp_path, text)), *extra))
    assert rc == 0, err
    return sglang_prefix(argv)


def test_vllm_keys_become_sglang_flags_that_sglang_parses(tmp_path):
    argv = launch_argv(
        tmp_path,
        "max_probe_steps: 6\n"
        "vllm:\n"
        "  max-model-len: 8192\n"
        "  gpu-memory-utilization: 0.82\n"
        "  tool-call-parser: hermes\n"
        "  enable-auto-tool-choice: true\n"
        "  reasoning-parser: deepseek_r1\n"
        "  max-num-seqs: 64\n"
        "  enable-prefix-caching: false\n"
        "  enable-chunked-prefill: true\n"
        "  kv-cache-dtype: fp8\n"
        "  tensor-parallel-size: 1\n",
    )
    sa = sglang_parse(argv)
    assert sa.context_length == 8192 and sa.mem_fraction_static == 0.82
    assert sa.tool_call_parser == "hermes" and sa.reasoning_parser == "deepseek-r1"
    assert sa.max_running_requests == 64 and sa.disable_radix_cache is True
    assert sa.kv_cache_dtype == "fp8_e4m3" and sa.tp_size == 1
    assert sa.host == "127.0.0.1"  # still loopback


def test_an_inline_chat_template_is_written_to_a_file_sglang_reads(tmp_path):
    template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    argv = launch_argv(tmp_path, yaml.safe_dump({"vllm": {"chat-template": template}}))
    path = argv[argv.index("--chat-template") + 1]
    assert Path(path).read_text() == template
    assert sglang_parse(argv).chat_template == path


def test_a_chat_template_kept_in_the_same_config_map_is_used_by_its_mounted_path(tmp_path):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "tools.jinja").write_text("{{ messages }}")
    argv = launch_argv(tmp_path, "vllm:\n  chat-template: tools.jinja\n")
    assert argv[argv.index("--chat-template") + 1] == str(tmp_path / "config" / "tools.jinja")


def test_kaito_gpt_oss_example_config_maps_to_mem_fraction_static(tmp_path):
    doc = next(
        d
        for d in yaml.safe_load_all(need_shared(KAITO_V012_INFERENCE / "kaito_workspace_gpt_oss_20b.yaml").read_text())
        if d["kind"] == "ConfigMap"
    )
    argv = launch_argv(tmp_path, doc["data"]["inference_config.yaml"])
    assert sglang_parse(argv).mem_fraction_static == 0.82


def test_kaito_custom_config_example_is_refused_naming_every_key_without_an_equivalent(tmp_path):
    doc = next(
        d
        for d in yaml.safe_load_all(
            need_shared(KAITO_V012_INFERENCE / "kaito_workspace_custom_config.yaml").read_text()
        )
        if d["kind"] == "ConfigMap"
    )
    with pytest.raises(RuntimeConfigError) as refused:
        flags_from_config(str(config_file(tmp_path, doc["data"]["inference_config.yaml"])), "sglang", tp_size=1)
    message = str(refused.value)
    for key in (
        "vllm.swap-space",
        "vllm.tensor-parallel-size 2",
        "vllm.max-seq-len-to-capture",
        "vllm.num-scheduler-steps",
    ):
        assert key in message
    assert "gpu-memory-utilization" not in message and "max-model-len" not in message


@pytest.mark.parametrize(
    "key, value",
    [
        ("host", "0.0.0.0"),
        ("port", 8000),
        ("api-key", "s3cret"),
        ("admin-api-key", "s3cret"),
        ("model-path", "/etc"),
        ("tokenizer-path", "/tmp/t"),
        ("download-dir", "/tmp"),
        ("lora-paths", ["x=/etc"]),
        ("ssl-keyfile", "/k"),
        ("file-storage-path", "/tmp"),
        ("dist-init-addr", "10.0.0.1:1"),
        ("grpc-port", 9000),
        ("tp-size", 8),
        ("served-model-name", "other"),
    ],
)
def test_sglang_flags_that_change_listen_address_port_key_or_paths_are_refused(tmp_path, key, value):
    path = config_file(tmp_path, yaml.safe_dump({"sglang": {key: value}}))
    with pytest.raises(RuntimeConfigError, match=f"sglang.{key} is not allowed"):
        flags_from_config(str(path), "sglang")


def test_the_launcher_refuses_host_0000_before_sglang_starts(tmp_path):
    (tmp_path / "weights").mkdir()
    path = config_file(tmp_path, "sglang:\n  host: 0.0.0.0\n")
    rc, _, err = dry_run(base_args(tmp_path, "--config-file", str(path)))
    assert rc == 2 and "sglang.host is not allowed" in err


def test_other_sglang_flags_pass_through_and_sglang_parses_them(tmp_path):
    argv = launch_argv(tmp_path, "sglang:\n  chunked-prefill-size: 4096\n  enable-hierarchical-cache: true\n")
    sa = sglang_parse(argv)
    assert sa.chunked_prefill_size == 4096 and sa.enable_hierarchical_cache is True


def test_sglangs_own_parser_names_a_misspelt_flag(tmp_path):
    pytest.importorskip("sglang.srt.server_args", reason="sglang is not installed")
    argv = launch_argv(tmp_path, "sglang:\n  chunked-prefil-size: 4096\n")
    with pytest.raises(RuntimeConfigError, match="--chunked-prefil-size"):
        check_with_sglang_parser(argv)
    check_with_sglang_parser(launch_argv(tmp_path, "sglang:\n  chunked-prefill-size: 4096\n"))


def test_an_unknown_vllm_tool_parser_is_refused_with_the_mapped_ones(tmp_path):
    path = config_file(tmp_path, "vllm:\n  tool-call-parser: jamba\n")
    with pytest.raises(RuntimeConfigError, match=r"vllm.tool-call-parser: 'jamba' has no SGLang equivalent.*hermes"):
        flags_from_config(str(path), "sglang")


def test_every_mapped_tool_and_reasoning_parser_is_one_sglang_knows():
    parsers = pytest.importorskip("sglang.srt.server_args", reason="sglang is not installed")
    import argparse

    from workload_contract.inference_config import REASONING_PARSERS, TOOL_CALL_PARSERS

    parser = argparse.ArgumentParser()
    parsers.ServerArgs.add_cli_args(parser)
    choices = {a.dest: set(a.choices or ()) for a in parser._actions}
    assert set(TOOL_CALL_PARSERS.values()) <= choices["tool_call_parser"]
    assert set(REASONING_PARSERS.values()) <= choices["reasoning_parser"]


# ---- tool calling through the gateway ----------------------------------------------------------------


@pytest.mark.integration
def test_the_gateway_passes_tools_and_tool_choice_through_untouched():
    from inference_support.procs import start_gateway, stop
    from inference_support.stub_sglang import StubSGLang

    stub = StubSGLang("phi-4-mini-instruct").start()
    gateway, port = start_gateway("phi-4-mini-instruct", stub.url)
    try:
        tools = [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Weather in a city",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
                },
            }
        ]
        tool_choice = {"type": "function", "function": {"name": "get_weather"}}
        r = requests.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json={
                "model": "phi-4-mini-instruct",
                "messages": [{"role": "user", "content": "Weather in Oslo?"}],
                "tools": tools,
                "tool_choice": tool_choice,
            },
            timeout=30,
        )
        assert r.status_code == 200, r.text
        path, body = stub.requests[-1]
        assert path == "/v1/chat/completions"
        assert body["tools"] == tools and body["tool_choice"] == tool_choice
    finally:
        stop(gateway)
        stub.stop()
