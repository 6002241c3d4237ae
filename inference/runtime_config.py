"""Kaito's `inference.config` ConfigMap (key inference_config.yaml), read at start.

Its `sglang:` map holds extra SGLang flags (`mem-fraction-static: 0.8`, `context-length: 8192`,
`enable-torch-compile: true`), appended to the command, as Kaito appends its `vllm:` map to vLLM's.
A `vllm:` map cannot be honoured (the flags differ), so it is refused with a message rather than dropped.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml


class RuntimeConfigError(ValueError):
    """The config file cannot be used; the message names the file and the key."""


def flags_from_config(path: str, runtime: str) -> list[str]:
    file = Path(path)
    if not file.is_file():
        raise RuntimeConfigError(f"--config-file {path}: no such file (is the ConfigMap's key inference_config.yaml?)")
    try:
        doc = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as e:
        raise RuntimeConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(doc, dict):
        raise RuntimeConfigError(f"{path}: expected a mapping with an `sglang:` section")
    if doc.get("vllm"):
        raise RuntimeConfigError(
            f"{path}: the `vllm:` section holds vLLM flags, which SGLang does not take; "
            "move the settings to an `sglang:` section with SGLang's flag names"
        )
    section = doc.get("sglang") or {}
    if not isinstance(section, dict):
        raise RuntimeConfigError(f"{path}: `sglang:` must map flag names to values")
    if section and runtime != "sglang":
        raise RuntimeConfigError(f"{path}: `sglang:` flags apply to the SGLang runtime, not {runtime}")
    flags: list[str] = []
    for key, value in section.items():
        flag = "--" + str(key).lstrip("-").replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value is False or value is None:
            continue
        elif isinstance(value, list):
            flags += [flag, *(str(v) for v in value)]
        elif isinstance(value, dict):
            flags += [flag, json.dumps(value)]
        else:
            flags += [flag, str(value)]
    return flags
