"""The base model of a tuning run: found in (or fetched into) the node-local weights cache, and loaded
with its tokenizer as the training_config's ModelConfig and QuantizationConfig say.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from tuning.run_plan import world_size

# One logger for the whole trainer: its lines read as tuning.train wherever they come from.
log = logging.getLogger("tuning.train")

# ModelConfig keys that the trainer interprets itself instead of passing to from_pretrained.
_MODEL_KEYS_HANDLED = {"torch_dtype", "dtype", "device_map", "chat_template"}


class TrainError(RuntimeError):
    pass


def ensure_model(model_dir: str, model_repo: str | None, cache_dir: str | None = None, revision: str = "main"):
    """(model path, cache entry or None): `model_repo` from the node-local weights cache (under cache_dir,
    else under model_dir). In a tuning pod the `model-weights` init container has verified it there and
    the trainer reads it through a read-only mount, as a model container does; outside a pod, with a
    writable cache and no entry, it is fetched here. Without a repo, model_dir itself."""
    if not model_repo:
        if not os.path.isfile(os.path.join(model_dir, "config.json")):
            raise TrainError(f"{model_dir} holds no config.json and no --model-repo was given to download")
        return model_dir, None
    from inference.weights import ensure_weights

    try:
        return ensure_weights(model_repo, model_dir, os.environ.get("HF_TOKEN") or None, cache_dir, revision, log.info)
    except Exception as exc:  # hub and cache errors come in many types; the message is what the user needs
        raise TrainError(f"cannot get the base model {model_repo}: {type(exc).__name__}: {exc}") from exc


def _chat_template(value: str) -> str:
    if os.path.isfile(value):
        with open(value, encoding="utf-8") as f:
            return f.read()
    return value


def load_model_and_tokenizer(model_dir: str, config: dict[str, Any], dtype_name: str, on_gpu: bool):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    model_cfg = dict(config.get("ModelConfig") or {})
    quant_cfg = dict(config.get("QuantizationConfig") or {})
    dtype = getattr(torch, dtype_name)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    if model_cfg.get("chat_template"):
        tokenizer.chat_template = _chat_template(model_cfg["chat_template"])
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token

    kwargs = {k: v for k, v in model_cfg.items() if k not in _MODEL_KEYS_HANDLED}
    kwargs.setdefault("local_files_only", True)
    kwargs["dtype"] = dtype
    if not on_gpu:
        kwargs["device_map"] = {"": "cpu"}
    elif world_size() > 1:
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}  # DDP: one whole copy per GPU
    else:
        kwargs["device_map"] = model_cfg.get("device_map") or "auto"
    quantized = bool(quant_cfg.get("load_in_4bit") or quant_cfg.get("load_in_8bit"))
    if quantized:
        if quant_cfg.get("load_in_4bit"):
            quant_cfg["bnb_4bit_compute_dtype"] = dtype
        kwargs["quantization_config"] = BitsAndBytesConfig(**quant_cfg)
    model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
    return model, tokenizer, quantized
