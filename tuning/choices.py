"""Pure decisions for the trainer: compute dtype from the hardware, LoRA targets per model family."""

from __future__ import annotations

_ATTN_MLP = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

TARGET_MODULES: dict[str, list[str]] = {
    "llama": _ATTN_MLP,
    "mistral": _ATTN_MLP,
    "mixtral": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qwen2": _ATTN_MLP,
    "qwen3": _ATTN_MLP,
    "gemma": _ATTN_MLP,
    "gemma2": _ATTN_MLP,
    "phi3": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
    "phi": ["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"],
    "falcon": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
}


def default_target_modules(model_type: str | None) -> list[str] | str:
    """LoRA target modules for a transformers `model_type`; "all-linear" for families we do not know."""
    return list(TARGET_MODULES.get((model_type or "").lower(), [])) or "all-linear"


def target_modules(lora_config: dict, model_type: str | None, env_value: str | None) -> list[str] | str:
    """LoraConfig.target_modules when set, else Kaito's DEFAULT_TARGET_MODULES env (comma-separated), else
    the family default."""
    if lora_config.get("target_modules"):
        return lora_config["target_modules"]
    from_env = [m.strip() for m in (env_value or "").split(",") if m.strip()]
    return from_env or default_target_modules(model_type)


def compute_dtype(requested: str | None, capability: tuple[int, int] | None) -> str:
    """The dtype name to compute in: float32 on CPU (capability None), float16 below compute
    capability 8.0 (no bfloat16, e.g. V100), otherwise what the config asks for (bfloat16 by default)."""
    if capability is None:
        return "float32"
    wanted = (requested or "bfloat16").lower().replace("torch.", "")
    if wanted in ("auto", "bf16"):
        wanted = "bfloat16"
    if wanted in ("fp16", "half"):
        wanted = "float16"
    if wanted == "bfloat16" and tuple(capability) < (8, 0):
        return "float16"
    if wanted not in ("bfloat16", "float16", "float32"):
        raise ValueError(f"unsupported torch_dtype {requested!r}; use bfloat16, float16 or float32")
    return wanted


def mixed_precision_flags(dtype: str) -> dict[str, bool]:
    """TrainingArguments bf16/fp16 flags for the compute dtype."""
    return {"bf16": dtype == "bfloat16", "fp16": dtype == "float16"}
