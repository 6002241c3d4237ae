"""Kaito's `inference.config` ConfigMap (key inference_config.yaml), read at start.

Kaito v0.12 writes vLLM settings in a `vllm:` map. Each key with an SGLang equivalent becomes that SGLang
flag (max-model-len -> --context-length, gpu-memory-utilization -> --mem-fraction-static, tool-call-parser
-> SGLang's parser of the same format, ...); a key without one is refused, naming the key and what to
write instead, rather than silently dropped. An `sglang:` map holds SGLang flags by their own names and is
passed through, except the flags that would move the server off loopback, change its API key, or point it
at other files: the gateway in front of SGLang is the only door in, and the operator decides the model,
adapter and cache paths. Everything is appended after the operator's own flags.

The hook runs this translation on the ConfigMap before any pod starts, the launcher when the pod starts;
in the runtime image SGLang's own parser then checks the result (inference/server_args_check.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml


class RuntimeConfigError(ValueError):
    """The config file cannot be used; the message names the file and the key."""


# Kaito's own top-level knob (how many times its vLLM launcher halves max-model-len to fit GPU memory).
# SGLang sizes its KV cache from --mem-fraction-static itself, so there is nothing to probe.
IGNORED_TOP_LEVEL = ("max_probe_steps",)

# vLLM tool-call parser -> SGLang's parser for the same tool-call format.
TOOL_CALL_PARSERS = {
    "hermes": "hermes",
    "mistral": "mistral",
    "llama3_json": "llama3",
    "pythonic": "pythonic",
    "deepseek_v3": "deepseekv3",
    "deepseek_v31": "deepseekv31",
    "qwen3_coder": "qwen3_coder",
    "kimi_k2": "kimi_k2",
    "glm45": "glm45",
    "openai": "gpt-oss",
    "step3": "step3",
    "minimax_m2": "minimax-m2",
}
# vLLM reasoning parser -> SGLang's.
REASONING_PARSERS = {
    "deepseek_r1": "deepseek-r1",
    "deepseek_v3": "deepseek-v3",
    "qwen3": "qwen3",
    "glm45": "glm45",
    "openai_gptoss": "gpt-oss",
    "kimi_k2": "kimi_k2",
    "step3": "step3",
    "mistral": "mistral",
    "granite": "granite_thinking_parser",
    "minimax_m2": "minimax",
}

Flags = list[str]


def _value(flag: str) -> Callable[[str, Any], Flags]:
    return lambda _key, v: [flag, _scalar(v)]


def _switch(flag_if_true: str | None, flag_if_false: str | None = None) -> Callable[[str, Any], Flags]:
    def convert(key: str, v: Any) -> Flags:
        if not isinstance(v, bool):
            raise RuntimeConfigError(f"vllm.{key}: expected true or false, got {v!r}")
        chosen = flag_if_true if v else flag_if_false
        return [chosen] if chosen else []

    return convert


def _named(flag: str, table: dict[str, str]) -> Callable[[str, Any], Flags]:
    def convert(key: str, v: Any) -> Flags:
        if str(v) not in table:
            raise RuntimeConfigError(
                f"vllm.{key}: {v!r} has no SGLang equivalent here; use one of {', '.join(sorted(table))}, "
                f"or name SGLang's own parser in an `sglang:` section ({flag.lstrip('-')}: ...)"
            )
        return [flag, table[str(v)]]

    return convert


def _no_equivalent(advice: str) -> Callable[[str, Any], Flags]:
    def convert(key: str, _v: Any) -> Flags:
        raise RuntimeConfigError(f"vllm.{key} has no SGLang equivalent: {advice}")

    return convert


def _operator_owned(what: str) -> Callable[[str, Any], Flags]:
    def convert(key: str, _v: Any) -> Flags:
        raise RuntimeConfigError(f"vllm.{key} is set by the operator ({what}); remove it from the ConfigMap")

    return convert


VLLM_KEYS: dict[str, Callable[[str, Any], Flags]] = {
    "max-model-len": _value("--context-length"),
    "gpu-memory-utilization": _value("--mem-fraction-static"),
    "tool-call-parser": _named("--tool-call-parser", TOOL_CALL_PARSERS),
    "reasoning-parser": _named("--reasoning-parser", REASONING_PARSERS),
    "max-num-seqs": _value("--max-running-requests"),
    "max-num-batched-tokens": _value("--max-prefill-tokens"),
    "kv-cache-dtype": lambda _k, v: ["--kv-cache-dtype", "fp8_e4m3" if v == "fp8" else _scalar(v)],
    "quantization": _value("--quantization"),
    "dtype": _value("--dtype"),
    "seed": _value("--random-seed"),
    "cpu-offload-gb": _value("--cpu-offload-gb"),
    "max-lora-rank": _value("--max-lora-rank"),
    "max-loras": _value("--max-loras-per-batch"),
    "trust-remote-code": _switch("--trust-remote-code"),
    # SGLang chunks prefills and caches prefixes (its radix cache) by default.
    "enable-chunked-prefill": lambda _k, v: [] if v else ["--chunked-prefill-size", "-1"],
    "enable-prefix-caching": _switch(None, "--disable-radix-cache"),
    "enforce-eager": _switch("--disable-cuda-graph"),
    "enable-auto-tool-choice": _switch(None),  # SGLang calls tools whenever --tool-call-parser is set
    "max-seq-len-to-capture": _no_equivalent(
        "SGLang captures CUDA graphs by batch size, not sequence length; remove the key, or set "
        "cuda-graph-max-bs in an `sglang:` section"
    ),
    "num-scheduler-steps": _no_equivalent(
        "SGLang overlaps scheduling with the GPU by default (vLLM's multi-step scheduling); remove the key"
    ),
    "swap-space": _no_equivalent(
        "SGLang keeps evicted KV cache in host memory with its hierarchical cache instead of swap space; "
        "remove the key, or set enable-hierarchical-cache: true in an `sglang:` section"
    ),
    "pipeline-parallel-size": _no_equivalent(
        "the operator shards a model across the node's GPUs and nodes with tensor parallelism; remove the key"
    ),
    "served-model-name": _operator_owned("the preset's name, which the gateway routes by"),
    "model": _operator_owned("the preset's weights"),
    "tokenizer": _operator_owned("the preset's tokenizer, beside its weights"),
    "download-dir": _operator_owned("the node's weights cache"),
    "host": _operator_owned("SGLang listens on loopback behind the gateway"),
    "port": _operator_owned("SGLang listens on loopback behind the gateway"),
    "api-key": _operator_owned("the gateway in front of SGLang is the only way in"),
}


# `sglang:` flags that would open SGLang beyond loopback, change who may call it, or point it at other
# files (model, tokenizer, adapters, caches, certificates, dumps): refused by name. Flags are split on '-'
# and refused when a part names an address, a port, a path or a secret.
_LISTEN_OR_PATH_PARTS = frozenset(
    {"host", "port", "ports", "addr", "socket", "endpoint", "endpoints", "url", "urls", "ssl"}
    | {"path", "paths", "dir", "file", "certs", "certfile", "keyfile"}
)
# Parts that look like a path but are counts.
_NOT_A_PATH = frozenset({"mamba-max-states-per-path"})
# What the launcher derives from the Workspace (node's GPUs, nodes, the preset's name, live adapters).
OPERATOR_FLAGS = frozenset(
    {"tp-size", "tensor-parallel-size", "nnodes", "node-rank", "served-model-name", "enable-lora", "lora-paths"}
)


def refused_sglang_flag(name: str) -> str | None:
    """Why an `sglang:` flag is not passed through, or None when it is."""
    if "api-key" in name:
        return "the gateway in front of SGLang checks who may call; SGLang's own key is not configurable here"
    if name in OPERATOR_FLAGS:
        return "the operator sets it from the Workspace (GPUs per node, nodes, preset, adapters)"
    if name not in _NOT_A_PATH and _LISTEN_OR_PATH_PARTS.intersection(name.split("-")):
        return (
            "it would change where SGLang listens or which files it reads or writes; SGLang serves on "
            "loopback behind the gateway, and the operator sets the model, adapter and cache paths"
        )
    return None


def _scalar(v: Any) -> str:
    if isinstance(v, dict):
        return json.dumps(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _flag_name(key: Any) -> str:
    return str(key).lstrip("-").replace("_", "-")


def _chat_template(v: Any, config_dir: Path, work_dir: Path | None) -> Flags:
    """An inline Jinja template is written to a file; a path must be a key of the same ConfigMap.
    Without a work directory (the hook checking the ConfigMap) nothing is written."""
    text = str(v)
    if "{{" in text or "{%" in text:
        if work_dir is None:
            return ["--chat-template", "inline"]
        work_dir.mkdir(parents=True, exist_ok=True)
        target = work_dir / "chat_template.jinja"
        target.write_text(text)
        return ["--chat-template", str(target)]
    if "/" not in text:  # SGLang's built-in template name, or a key of this ConfigMap
        local = config_dir / text
        return ["--chat-template", str(local) if local.is_file() else text]
    if Path(text).resolve().parent != config_dir.resolve():
        raise RuntimeConfigError(
            f"vllm.chat-template: {text!r} is outside the ConfigMap; add the template to the same ConfigMap "
            f"under its own key (it is mounted beside inference_config.yaml) and write that key's name here"
        )
    return ["--chat-template", text]


def vllm_flags(section: dict[str, Any], tp_size: int, config_dir: Path, work_dir: Path | None = None) -> Flags:
    """SGLang flags for Kaito's `vllm:` map; RuntimeConfigError names every key that cannot be honoured."""
    flags: Flags = []
    problems: list[str] = []
    for raw_key, value in section.items():
        key = _flag_name(raw_key)
        if value is None:
            continue
        try:
            if key == "chat-template":
                flags += _chat_template(value, config_dir, work_dir)
            elif key == "tensor-parallel-size":
                if int(value) != tp_size:
                    raise RuntimeConfigError(
                        f"vllm.tensor-parallel-size {value}: the operator shards the model across all {tp_size} "
                        "GPU(s) of the Workspace's nodes; remove the key, or choose a resource.instanceType with "
                        f"{value} GPUs"
                    )
            elif key in VLLM_KEYS:
                flags += VLLM_KEYS[key](key, value)
            else:
                raise RuntimeConfigError(
                    f"vllm.{key} is not mapped to SGLang; move it to an `sglang:` section under SGLang's name for "
                    "the setting (see `python -m sglang.launch_server --help`), or remove it"
                )
        except RuntimeConfigError as e:
            problems.append(str(e))
        except (TypeError, ValueError) as e:
            problems.append(f"vllm.{key}: {e}")
    if problems:
        raise RuntimeConfigError("; ".join(problems))
    return flags


def sglang_flags(section: dict[str, Any]) -> Flags:
    flags: Flags = []
    for key, value in section.items():
        name = _flag_name(key)
        if why := refused_sglang_flag(name):
            raise RuntimeConfigError(f"sglang.{name} is not allowed: {why}; remove it")
        flag = "--" + name
        if value is True:
            flags.append(flag)
        elif value is False or value is None:
            continue
        elif isinstance(value, list):
            flags += [flag, *(str(v) for v in value)]
        else:
            flags += [flag, _scalar(value)]
    return flags


def flags_from_config(path: str, runtime: str, tp_size: int = 1, work_dir: str | None = None) -> Flags:
    file = Path(path)
    if not file.is_file():
        raise RuntimeConfigError(f"--config-file {path}: no such file (is the ConfigMap's key inference_config.yaml?)")
    return flags_from_text(file.read_text(), runtime, tp_size, file.parent, Path(work_dir) if work_dir else None, path)


def flags_from_text(
    text: str,
    runtime: str,
    tp_size: int = 1,
    config_dir: Path | None = None,
    work_dir: Path | None = None,
    path: str = "inference_config.yaml",
) -> Flags:
    """The SGLang flags of an inference_config.yaml's text; RuntimeConfigError names `path` and the keys.
    Pure but for writing an inline chat template into `work_dir` (none is written without one)."""
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise RuntimeConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(doc, dict):
        raise RuntimeConfigError(f"{path}: expected a mapping with a `vllm:` or `sglang:` section")
    unknown = sorted(str(k) for k in doc if k not in ("vllm", "sglang", *IGNORED_TOP_LEVEL))
    if unknown:
        raise RuntimeConfigError(f"{path}: unknown top-level key(s) {', '.join(unknown)}; use `vllm:` or `sglang:`")
    sections = {name: doc.get(name) or {} for name in ("vllm", "sglang")}
    for name, section in sections.items():
        if not isinstance(section, dict):
            raise RuntimeConfigError(f"{path}: `{name}:` must map flag names to values")
    if (sections["vllm"] or sections["sglang"]) and runtime != "sglang":
        raise RuntimeConfigError(
            f"{path}: `vllm:`/`sglang:` settings apply to the SGLang runtime, not {runtime}; remove them or the "
            "kaito.sh/runtime annotation"
        )
    try:
        return vllm_flags(sections["vllm"], tp_size, config_dir or Path("/nonexistent"), work_dir) + sglang_flags(
            sections["sglang"]
        )
    except RuntimeConfigError as e:
        raise RuntimeConfigError(f"{path}: {e}") from None
    except (TypeError, ValueError) as e:
        raise RuntimeConfigError(f"{path}: {e}") from None
