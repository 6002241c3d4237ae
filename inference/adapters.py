"""LoRA adapter preparation: read what the runtime needs from each adapter, apply strength once.

Strength s != 1 is applied by scaling every lora_B tensor by s in a copy of the adapter (the delta
is (alpha/r)·B·A, so this equals PEFT scaling the adapter by s, and it survives rsLoRA and
rank/alpha patterns, which SGLang ignores). The mounted adapter dir is never modified.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass

CONFIG_FILE = "adapter_config.json"
SAFETENSORS_FILE = "adapter_model.safetensors"
BIN_FILE = "adapter_model.bin"

# Module names SGLang 0.5.23 accepts for --lora-target-modules (sglang.srt.utils.common
# SUPPORTED_LORA_TARGET_MODULES; a test checks this list against the installed SGLang).
SGLANG_TARGET_MODULES = frozenset({
    "q_proj", "k_proj", "v_proj", "o_proj", "q_a_proj", "kv_a_proj_with_mqa", "q_b_proj", "kv_b_proj",
    "wq_b", "wk", "weights_proj", "gate_proj", "up_proj", "down_proj", "qkv_proj", "gate_up_proj",
    "embed_tokens", "lm_head", "qkvr", "wo_ud",
})
ALL_MODULES = "all"


class AdapterError(ValueError):
    """An adapter that cannot be served; the message names the adapter and the file."""


@dataclass(frozen=True)
class AdapterInfo:
    name: str
    rank: int
    target_modules: tuple[str, ...] | str  # names, or a regex / "all-linear" string as PEFT stores it


@dataclass(frozen=True)
class PreparedAdapter:
    name: str
    path: str
    rank: int
    target_modules: tuple[str, ...] | str
    strength: float


def read_adapter_info(name: str, adapter_dir: str) -> AdapterInfo:
    path = os.path.join(adapter_dir, CONFIG_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
    except FileNotFoundError:
        raise AdapterError(
            f"adapter {name!r}: {path} not found (the adapter image must hold /data/{CONFIG_FILE})"
        ) from None
    except json.JSONDecodeError as e:
        raise AdapterError(f"adapter {name!r}: {path} is not valid JSON: {e}") from None
    return adapter_info_from_config(name, cfg)


def adapter_info_from_config(name: str, cfg: dict) -> AdapterInfo:
    peft_type = str(cfg.get("peft_type", "LORA")).upper()
    if peft_type != "LORA":
        raise AdapterError(f"adapter {name!r}: peft_type {peft_type} is not LORA")
    if cfg.get("use_dora"):
        raise AdapterError(f"adapter {name!r}: DoRA adapters are not supported by the runtime")
    try:
        rank = int(cfg.get("r", 8))
    except (TypeError, ValueError):
        raise AdapterError(f"adapter {name!r}: r={cfg.get('r')!r} is not an integer") from None
    ranks = [rank] + [int(v) for v in (cfg.get("rank_pattern") or {}).values()]
    targets = cfg.get("target_modules")
    if targets is None:
        raise AdapterError(f"adapter {name!r}: {CONFIG_FILE} has no target_modules")
    if isinstance(targets, str):
        return AdapterInfo(name, max(ranks), targets)
    return AdapterInfo(name, max(ranks), tuple(sorted({str(t) for t in targets})))


def max_rank(adapters: list[AdapterInfo] | list[PreparedAdapter]) -> int:
    return max(a.rank for a in adapters)


def union_target_modules(adapters: list[AdapterInfo] | list[PreparedAdapter]) -> list[str]:
    """The --lora-target-modules value: the sorted union, or ["all"] when an adapter targets
    modules by pattern ("all-linear", a regex) or by a name SGLang does not list."""
    names: set[str] = set()
    for a in adapters:
        if isinstance(a.target_modules, str):
            return [ALL_MODULES]
        names.update(a.target_modules)
    if not names or not names <= SGLANG_TARGET_MODULES:
        return [ALL_MODULES]
    return sorted(names)


def planned_path(adapters_dir: str, work_dir: str, name: str, strength: float) -> str:
    """Where the runtime reads adapter `name` from: the mounted dir, or the scaled copy."""
    if strength == 1.0:
        return os.path.join(adapters_dir, name)
    return os.path.join(work_dir, name)


def scale_lora_b(src_dir: str, dest_dir: str, strength: float) -> None:
    """Copy the adapter in src_dir to dest_dir with every lora_B tensor multiplied by strength."""
    import torch  # lazy: the launcher's dry-run must not need torch
    from safetensors.torch import load_file, save_file

    if os.path.exists(dest_dir):
        shutil.rmtree(dest_dir)
    shutil.copytree(src_dir, dest_dir, ignore=shutil.ignore_patterns(SAFETENSORS_FILE, BIN_FILE))
    st_path = os.path.join(src_dir, SAFETENSORS_FILE)
    if os.path.exists(st_path):
        from safetensors import safe_open

        with safe_open(st_path, framework="pt") as f:
            metadata = f.metadata()
        tensors = load_file(st_path)
    elif os.path.exists(os.path.join(src_dir, BIN_FILE)):
        tensors = torch.load(os.path.join(src_dir, BIN_FILE), map_location="cpu", weights_only=True)
        metadata = {"format": "pt"}
    else:
        raise AdapterError(f"adapter dir {src_dir} holds neither {SAFETENSORS_FILE} nor {BIN_FILE}")
    scaled = 0
    for key, t in tensors.items():
        if is_lora_b_key(key):
            tensors[key] = (t.to(torch.float32) * strength).to(t.dtype).contiguous()
            scaled += 1
    if scaled == 0:
        raise AdapterError(f"adapter dir {src_dir}: no lora_B tensors found to scale")
    save_file(tensors, os.path.join(dest_dir, SAFETENSORS_FILE), metadata=metadata)


def is_lora_b_key(key: str) -> bool:
    parts = key.split(".")
    return "lora_B" in parts or "lora_embedding_B" in parts


def prepare_adapters(adapters, adapters_dir: str, work_dir: str, write: bool = True) -> list[PreparedAdapter]:
    """Read each adapter's config and, when write is True, make the scaled copies (strength != 1)."""
    prepared = []
    for spec in adapters:
        src = os.path.join(adapters_dir, spec.name)
        info = read_adapter_info(spec.name, src)
        path = planned_path(adapters_dir, work_dir, spec.name, spec.strength)
        if write and path != src:
            scale_lora_b(src, path, spec.strength)
        prepared.append(PreparedAdapter(spec.name, path, info.rank, info.target_modules, spec.strength))
    return prepared
