"""LoRA adapter preparation: read what the runtime needs from each adapter, apply strength once.

Strength s != 1 is applied by scaling every lora_B tensor by s in a copy of the adapter (the delta
is (alpha/r)·B·A, so this equals PEFT scaling the adapter by s). rsLoRA adapters (PEFT scales them
by alpha/sqrt(r); SGLang ignores use_rslora and applies alpha/r) get the sqrt(r) factor folded into
lora_B the same way, and their copy says use_rslora: false, so every runtime computes PEFT's answer.
Adapters SGLang would serve wrongly without an error are refused: regex target_modules, per-module
rank_pattern/alpha_pattern. The mounted adapter dir is never modified.

With several adapters, a `combined` adapter is built too: the exact weighted sum of all of them
(A and B concatenated along the rank, each B scaled by its strength and scaling), which is what
Kaito's /chat applies when a request names no adapter.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass

from inference.adapter_files import MAX_CONFIG_BYTES, UnsafeAdapterFiles, read_bounded
from workload_contract.adapter_names import COMBINED_ADAPTER

CONFIG_FILE = "adapter_config.json"
SAFETENSORS_FILE = "adapter_model.safetensors"
BIN_FILE = "adapter_model.bin"

# Module names SGLang 0.5.23 accepts for --lora-target-modules (sglang.srt.utils.common
# SUPPORTED_LORA_TARGET_MODULES; a test checks this list against the installed SGLang).
SGLANG_TARGET_MODULES = frozenset(
    {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "q_a_proj",
        "kv_a_proj_with_mqa",
        "q_b_proj",
        "kv_b_proj",
        "wq_b",
        "wk",
        "weights_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
        "qkv_proj",
        "gate_up_proj",
        "embed_tokens",
        "lm_head",
        "qkvr",
        "wo_ud",
    }
)
ALL_MODULES = "all"


class AdapterError(ValueError):
    """An adapter that cannot be served; the message names the adapter and the file."""


@dataclass(frozen=True)
class AdapterInfo:
    name: str
    rank: int
    target_modules: tuple[str, ...]
    use_rslora: bool = False


@dataclass(frozen=True)
class PreparedAdapter:
    name: str
    path: str
    rank: int
    target_modules: tuple[str, ...]
    strength: float
    b_factor: float = 1.0  # what lora_B is multiplied by in the served copy (1: the mount is served)


def lora_b_factor(info: AdapterInfo, strength: float) -> float:
    """The factor on lora_B that makes plain alpha/r scaling give PEFT's answer at this strength."""
    return strength * (math.sqrt(info.rank) if info.use_rslora else 1.0)


def read_adapter_info(name: str, adapter_dir: str) -> AdapterInfo:
    path = os.path.join(adapter_dir, CONFIG_FILE)
    try:
        cfg = json.loads(read_bounded(path, MAX_CONFIG_BYTES))
    except FileNotFoundError:
        raise AdapterError(
            f"adapter {name!r}: {path} not found (the adapter image must hold /data/{CONFIG_FILE})"
        ) from None
    except UnsafeAdapterFiles as e:
        raise AdapterError(f"adapter {name!r}: {e}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AdapterError(f"adapter {name!r}: {path} is not valid JSON: {e}") from None
    if not isinstance(cfg, dict):
        raise AdapterError(f"adapter {name!r}: {path} is not a JSON object")
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
    for key in ("rank_pattern", "alpha_pattern"):
        if cfg.get(key):
            raise AdapterError(
                f"adapter {name!r}: {CONFIG_FILE} sets {key} {cfg[key]!r}; SGLang applies one r and lora_alpha "
                f"to every module and would serve it with the wrong scale: train without {key}"
            )
    targets = cfg.get("target_modules")
    if targets is None:
        raise AdapterError(f"adapter {name!r}: {CONFIG_FILE} has no target_modules")
    if isinstance(targets, str):
        raise AdapterError(
            f"adapter {name!r}: {CONFIG_FILE} target_modules is the pattern {targets!r}; SGLang matches module "
            "names only and would apply it to other modules: train with a list of module names "
            '(e.g. ["q_proj", "v_proj"])'
        )
    return AdapterInfo(name, rank, tuple(sorted({str(t) for t in targets})), bool(cfg.get("use_rslora")))


def max_rank(adapters: list[AdapterInfo] | list[PreparedAdapter]) -> int:
    return max(a.rank for a in adapters)


def union_target_modules(adapters: list[AdapterInfo] | list[PreparedAdapter]) -> list[str]:
    """The --lora-target-modules value: the sorted union, or ["all"] when an adapter targets a module
    name SGLang does not list."""
    names: set[str] = set()
    for a in adapters:
        names.update(a.target_modules)
    if not names or not names <= SGLANG_TARGET_MODULES:
        return [ALL_MODULES]
    return sorted(names)


def planned_path(adapters_dir: str, work_dir: str, name: str, b_factor: float) -> str:
    """Where the runtime reads adapter `name` from: the mounted dir, or the scaled copy."""
    if b_factor == 1.0:
        return os.path.join(adapters_dir, name)
    return os.path.join(work_dir, name)


def _load_tensors(src_dir: str):
    import torch  # lazy: the launcher's dry-run must not need torch
    from safetensors.torch import load_file

    st_path = os.path.join(src_dir, SAFETENSORS_FILE)
    if os.path.exists(st_path):
        from safetensors import safe_open

        with safe_open(st_path, framework="pt") as f:
            metadata = f.metadata()
        return load_file(st_path), metadata
    if os.path.exists(os.path.join(src_dir, BIN_FILE)):
        return torch.load(os.path.join(src_dir, BIN_FILE), map_location="cpu", weights_only=True), {"format": "pt"}
    raise AdapterError(f"adapter dir {src_dir} holds neither {SAFETENSORS_FILE} nor {BIN_FILE}")


def _read_config(adapter_dir: str) -> dict:
    with open(os.path.join(adapter_dir, CONFIG_FILE), encoding="utf-8") as f:
        return json.load(f)


def _write_config(adapter_dir: str, cfg: dict) -> None:
    with open(os.path.join(adapter_dir, CONFIG_FILE), "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)


def scale_lora_b(src_dir: str, dest_dir: str, factor: float) -> None:
    """Copy the adapter in src_dir to dest_dir with every lora_B tensor multiplied by factor; the
    copy's config says use_rslora: false (a rsLoRA factor is part of `factor`)."""
    import torch
    from safetensors.torch import save_file

    if os.path.exists(dest_dir):
        shutil.rmtree(dest_dir)
    tensors, metadata = _load_tensors(src_dir)
    shutil.copytree(src_dir, dest_dir, ignore=shutil.ignore_patterns(SAFETENSORS_FILE, BIN_FILE))
    scaled = 0
    for key, t in tensors.items():
        if is_lora_b_key(key):
            tensors[key] = (t.to(torch.float32) * factor).to(t.dtype).contiguous()
            scaled += 1
    if scaled == 0:
        raise AdapterError(f"adapter dir {src_dir}: no lora_B tensors found to scale")
    save_file(tensors, os.path.join(dest_dir, SAFETENSORS_FILE), metadata=metadata)
    cfg = _read_config(src_dir)
    if cfg.get("use_rslora"):
        _write_config(dest_dir, {**cfg, "use_rslora": False})


def is_lora_b_key(key: str) -> bool:
    parts = key.split(".")
    return "lora_B" in parts or "lora_embedding_B" in parts


def prepare_adapters(adapters, adapters_dir: str, work_dir: str, write: bool = True) -> list[PreparedAdapter]:
    """Read each adapter's config and, when write is True, make the scaled copies (strength != 1,
    rsLoRA). With two or more adapters the combined adapter comes last."""
    prepared = []
    for spec in adapters:
        if spec.name == COMBINED_ADAPTER and len(adapters) > 1:
            raise AdapterError(
                f"adapter name {COMBINED_ADAPTER!r} is reserved for the weighted sum of all adapters "
                "(Kaito's /chat default): rename the adapter"
            )
        src = os.path.join(adapters_dir, spec.name)
        info = read_adapter_info(spec.name, src)
        factor = lora_b_factor(info, spec.strength)
        path = planned_path(adapters_dir, work_dir, spec.name, factor)
        if write and path != src:
            scale_lora_b(src, path, factor)
        prepared.append(PreparedAdapter(spec.name, path, info.rank, info.target_modules, spec.strength, factor))
    if len(prepared) > 1:
        combined = planned_combination(prepared, work_dir)
        if write:
            write_combination(prepared, combined.path)
        prepared.append(combined)
    return prepared


# Module path parts of vision encoders in multimodal checkpoints (Gemma 3: vision_tower,
# multi_modal_projector). SGLang files LoRA weights by layer index alone, so a vision layer's q_proj
# weights would land in the language model's layer of the same index.
VISION_PARTS = frozenset({"vision_tower", "vision_model", "multi_modal_projector", "visual", "vision_encoder"})


def check_sglang_servable(prepared: list[PreparedAdapter]) -> None:
    """Refuse adapters whose weights SGLang would apply to the wrong modules without an error."""
    for a in prepared:
        for key in _tensor_keys(a.path):
            if VISION_PARTS & set(key.split(".")):
                raise AdapterError(
                    f"adapter {a.name!r}: holds LoRA weights for the vision encoder ({key}); SGLang would apply "
                    "them to the language model's layer of the same index. Train it with target_modules that "
                    "match the language model only, or serve it with the transformers runtime "
                    "(Workspace annotation kaito.sh/runtime: transformers)"
                )


def _tensor_keys(adapter_dir: str) -> list[str]:
    st_path = os.path.join(adapter_dir, SAFETENSORS_FILE)
    if os.path.exists(st_path):
        from safetensors import safe_open

        with safe_open(st_path, framework="pt") as f:
            return list(f.keys())
    return list(_load_tensors(adapter_dir)[0])


def chat_default_adapter(prepared: list[PreparedAdapter]) -> str | None:
    """What Kaito's /chat applies when a request names no adapter: all adapters at their strengths."""
    if len(prepared) == 1:
        return prepared[0].name
    return COMBINED_ADAPTER if prepared else None


def planned_combination(prepared: list[PreparedAdapter], work_dir: str) -> PreparedAdapter:
    names: set[str] = set()
    for a in prepared:
        names.update(a.target_modules)
    return PreparedAdapter(
        COMBINED_ADAPTER,
        os.path.join(work_dir, COMBINED_ADAPTER),
        sum(a.rank for a in prepared),
        tuple(sorted(names)),
        1.0,
    )


def _lora_modules(tensors: dict, adapter_dir: str) -> dict[str, tuple]:
    """module key prefix -> (lora_A weight, lora_B weight)."""
    modules: dict[str, dict] = {}
    for key, t in tensors.items():
        for part in ("lora_A", "lora_B"):
            suffix = f".{part}.weight"
            if key.endswith(suffix):
                modules.setdefault(key[: -len(suffix)], {})[part] = t
                break
        else:
            raise AdapterError(
                f"adapter dir {adapter_dir}: tensor {key!r} is not a lora_A/lora_B weight; "
                "such adapters cannot be combined for /chat"
            )
    return {k: (v.get("lora_A"), v.get("lora_B")) for k, v in modules.items()}


def write_combination(prepared: list[PreparedAdapter], dest_dir: str) -> None:
    """The exact sum of the adapters' deltas as one adapter: A stacked along the rank, B side by side,
    each B times its runtime scaling (alpha/r of the served copy, which already holds strength and any
    rsLoRA factor); lora_alpha = r, so the combined adapter's own scaling is 1. A module some adapters
    do not target gets zero blocks for them."""
    import torch
    from safetensors.torch import save_file

    loaded = []
    for a in prepared:
        cfg = _read_config(a.path)
        tensors, _ = _load_tensors(a.path)
        scaling = float(cfg.get("lora_alpha", 8)) / a.rank
        loaded.append((a, scaling, _lora_modules(tensors, a.path)))
    keys = sorted({k for _, _, mods in loaded for k in mods})
    out = {}
    for key in keys:
        present = [mods[key] for _, _, mods in loaded if key in mods]
        in_dim, out_dim = present[0][0].shape[1], present[0][1].shape[0]
        dtype = present[0][0].dtype
        a_blocks, b_blocks = [], []
        for a, scaling, mods in loaded:
            if key in mods:
                lora_a, lora_b = mods[key]
                a_blocks.append(lora_a.to(torch.float32))
                b_blocks.append(lora_b.to(torch.float32) * scaling)
            else:
                a_blocks.append(torch.zeros(a.rank, in_dim))
                b_blocks.append(torch.zeros(out_dim, a.rank))
        out[f"{key}.lora_A.weight"] = torch.cat(a_blocks, 0).to(dtype).contiguous()
        out[f"{key}.lora_B.weight"] = torch.cat(b_blocks, 1).to(dtype).contiguous()
    rank = sum(a.rank for a in prepared)
    if os.path.exists(dest_dir):
        shutil.rmtree(dest_dir)
    os.makedirs(dest_dir)
    save_file(out, os.path.join(dest_dir, SAFETENSORS_FILE), metadata={"format": "pt"})
    cfg = _read_config(prepared[0].path)
    targets: set[str] = set()
    for a in prepared:
        targets.update(a.target_modules)
    _write_config(
        dest_dir,
        {
            **cfg,
            "r": rank,
            "lora_alpha": rank,
            "use_rslora": False,
            "rank_pattern": {},
            "alpha_pattern": {},
            "target_modules": sorted(targets),
        },
    )
