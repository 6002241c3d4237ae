"""Kaito training_config.yaml: loading and validation for the trainer (stdlib + pyyaml only).

`load_training_config` merges the user's file over the method's template (workload_contract, where the
hook reads the same template for the Job's default ConfigMap) and names every key it cannot use.
"""

from __future__ import annotations

import copy
import posixpath
from typing import Any

import yaml

from workload_contract.training_templates import METHODS, default_training_config

SECTIONS = (
    "ModelConfig",
    "QuantizationConfig",
    "LoraConfig",
    "TrainingArguments",
    "DatasetConfig",
    "DataCollator",
)
DATASET_KEYS = frozenset(
    {
        "dataset_path",
        "dataset_extension",
        "shuffle_dataset",
        "shuffle_seed",
        "train_test_split",
        "context_column",
        "response_column",
        "messages_column",
        "max_seq_length",
        "packing",  # ours, not Kaito's: pack short examples into max_seq_length rows (default: where supported)
    }
)
DATASET_DEFAULTS = {
    "shuffle_dataset": True,
    "shuffle_seed": 42,
    "train_test_split": 1.0,
    "response_column": "text",
    "messages_column": "messages",
    "max_seq_length": 1024,
}
RESULTS_ROOT = "/mnt"


class ConfigError(ValueError):
    """The training config is not usable; the message names the key."""


def parse_training_config(text: str) -> dict[str, Any]:
    """Parse YAML text into the `training_config` mapping (sections only); raise ConfigError on shape errors."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"training config is not valid YAML: {exc}") from exc
    if not isinstance(doc, dict) or "training_config" not in doc:
        raise ConfigError("training config must have a top-level key 'training_config'")
    extra = sorted(set(doc) - {"training_config"})
    if extra:
        raise ConfigError(f"unknown top-level key(s) {extra}; only 'training_config' is allowed")
    body = doc["training_config"]
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise ConfigError("'training_config' must be a mapping of sections")
    for name, section in body.items():
        if name not in SECTIONS:
            raise ConfigError(f"unknown section training_config.{name}; allowed sections: {', '.join(SECTIONS)}")
        if section is not None and not isinstance(section, dict):
            raise ConfigError(f"training_config.{name} must be a mapping")
    return {name: dict(section or {}) for name, section in body.items()}


def infer_method(config: dict[str, Any]) -> str:
    quant = config.get("QuantizationConfig") or {}
    return "qlora" if quant.get("load_in_4bit") or quant.get("load_in_8bit") else "lora"


def output_dir_problem(output_dir: Any) -> str | None:
    """None when TrainingArguments.output_dir is an absolute path under /mnt (where the pod mounts results)."""
    if not isinstance(output_dir, str) or not output_dir:
        return "training_config.TrainingArguments.output_dir must be a non-empty string"
    norm = posixpath.normpath(output_dir)
    if not output_dir.startswith("/") or not norm.startswith(RESULTS_ROOT + "/"):
        return (
            f"training_config.TrainingArguments.output_dir {output_dir!r} must be a directory under "
            f"{RESULTS_ROOT}/ (e.g. /mnt/results)"
        )
    return None


def config_problems(config: dict[str, Any], method: str | None = None, in_pod: bool = True) -> list[str]:
    """Every problem of a parsed config (sections mapping) for `method`; empty when it is usable."""
    problems: list[str] = []
    m = (method or infer_method(config)).lower()
    if m not in METHODS:
        return [f"unknown tuning method {method!r}; expected one of: lora, qlora"]
    quant = config.get("QuantizationConfig") or {}
    four, eight = bool(quant.get("load_in_4bit")), bool(quant.get("load_in_8bit"))
    if m == "lora" and (four or eight):
        problems.append(
            "training_config.QuantizationConfig: method lora must not set load_in_4bit or load_in_8bit "
            "(use method qlora for a quantized base model)"
        )
    if m == "qlora" and four == eight:
        problems.append(
            "training_config.QuantizationConfig: method qlora must set exactly one of load_in_4bit, load_in_8bit"
        )
    lora = config.get("LoraConfig") or {}
    for key in ("r", "lora_alpha"):
        if key in lora and (not isinstance(lora[key], (int, float)) or isinstance(lora[key], bool) or lora[key] <= 0):
            problems.append(f"training_config.LoraConfig.{key} must be a positive number")
    for key in ("use_dora", "use_rslora", "modules_to_save"):
        if lora.get(key):
            problems.append(
                f"training_config.LoraConfig.{key} is not supported: the adapter must be servable by SGLang"
            )
    dataset = config.get("DatasetConfig") or {}
    unknown = sorted(set(dataset) - DATASET_KEYS)
    if unknown:
        problems.append(
            f"training_config.DatasetConfig: unknown key(s) {unknown}; known: {', '.join(sorted(DATASET_KEYS))}"
        )
    if dataset.get("packing") is not None and not isinstance(dataset.get("packing"), bool):
        problems.append("training_config.DatasetConfig.packing must be true or false (or left out for the default)")
    split = dataset.get("train_test_split", 1.0)
    if not isinstance(split, (int, float)) or isinstance(split, bool) or not 0 < split <= 1:
        problems.append("training_config.DatasetConfig.train_test_split must be a number in (0, 1]")
    if in_pod:
        args = config.get("TrainingArguments") or {}
        problem = output_dir_problem(args.get("output_dir", "/mnt/results"))
        if problem:
            problems.append(problem)
    return problems


def merge_over_template(user: dict[str, Any], method: str) -> dict[str, Any]:
    """The effective config: the method's template with each user section's keys laid over it."""
    merged = copy.deepcopy(parse_training_config(default_training_config(method)))
    for name, section in user.items():
        if name == "QuantizationConfig":
            merged[name] = dict(section)  # a quantization choice replaces the template's, never mixes with it
        else:
            merged.setdefault(name, {}).update(section)
    merged["DatasetConfig"] = {**DATASET_DEFAULTS, **merged.get("DatasetConfig", {})}
    return merged


def load_training_config(text: str, method: str | None = None, in_pod: bool = False) -> dict[str, Any]:
    """Parse, merge over the template of `method` (inferred from quantization when None) and validate."""
    user = parse_training_config(text)
    m = (method or infer_method(user)).lower()
    if m not in METHODS:
        raise ConfigError(f"unknown tuning method {method!r}; expected one of: lora, qlora")
    merged = merge_over_template(user, m)
    problems = config_problems(merged, m, in_pod=in_pod)
    if problems:
        raise ConfigError("; ".join(problems))
    return merged


def training_config_problems(text: str, method: str, in_pod: bool = True) -> list[str]:
    """Every problem of a user's training_config.yaml text for `method` (empty when fine)."""
    try:
        load_training_config(text, method, in_pod=in_pod)
    except ConfigError as exc:
        return str(exc).split("; ")
    return []
