"""What a tuning run decides before it trains, from the config, the machine and the model on disk: the
GPUs it has, the model's shape, how many data-parallel processes to start, the shape of one step, and
whether examples are packed.
The decisions themselves are tuning.parallel's; this module reads what they need.
"""

from __future__ import annotations

import json
import os
from typing import Any

from tuning import choices, parallel
from tuning.config import ConfigError


def world_size() -> int:
    """The data-parallel processes of this run (torchrun sets WORLD_SIZE; 1 without it)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def model_shape(model_dir: str) -> tuple[parallel.ModelShape, str | None, int]:
    """(shape, model_type, bytes per parameter on disk) from config.json and the safetensors sizes."""
    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    text = cfg.get("text_config") or cfg
    dtype = str(cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16")
    dtype_bytes = 4 if "32" in dtype else 2
    weights = sum(
        os.path.getsize(os.path.join(model_dir, n)) for n in os.listdir(model_dir) if n.endswith(".safetensors")
    )
    shape = parallel.ModelShape(
        parameters=weights // dtype_bytes,
        hidden_size=int(text.get("hidden_size") or 4096),
        num_layers=int(text.get("num_hidden_layers") or 32),
        vocab_size=int(text.get("vocab_size") or 32000),
    )
    return shape, cfg.get("model_type"), dtype_bytes


def quantization(config: dict[str, Any]) -> str | None:
    """How QuantizationConfig loads the weights: "4bit", "8bit" or None (the compute dtype)."""
    quant = config.get("QuantizationConfig") or {}
    return "4bit" if quant.get("load_in_4bit") else "8bit" if quant.get("load_in_8bit") else None


def gpus() -> tuple[int, int]:
    """(GPU count, memory of the smallest GPU in bytes); (0, 0) without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return 0, 0
    n = torch.cuda.device_count()
    return n, min(torch.cuda.get_device_properties(i).total_memory for i in range(n))


def step_shape(config: dict[str, Any]) -> tuple[int, int]:
    """(sequence length, per-device batch) of one training step."""
    args = config.get("TrainingArguments") or {}
    seq = int((config.get("DatasetConfig") or {}).get("max_seq_length") or 1024)
    return seq, int(args.get("per_device_train_batch_size") or 8)


def plan_processes(config: dict[str, Any], model_dir: str, gpu_count: int, gpu_bytes: int) -> int:
    """How many data-parallel processes (one per GPU) this run should use."""
    if gpu_count <= 1:
        return 1
    shape, _type, _b = model_shape(model_dir)
    seq, batch = step_shape(config)
    dtype_bytes = (
        4 if choices.compute_dtype((config.get("ModelConfig") or {}).get("torch_dtype"), (8, 0)) == "float32" else 2
    )
    fits = (
        parallel.per_gpu_need(shape, quantization(config), dtype_bytes, seq, batch, checkpointing=True)
        <= parallel.USABLE * gpu_bytes
    )
    return parallel.data_parallel_processes(gpu_count, fits, (config.get("ModelConfig") or {}).get("device_map"))


def capability() -> tuple[int, int] | None:
    """The lowest CUDA compute capability among the GPUs; None without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return None
    return min(torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count()))


def packing_choice(dataset_cfg: dict[str, Any], model_type: str | None) -> bool:
    """DatasetConfig.packing: on by default where the model family keeps packed examples apart."""
    wanted = dataset_cfg.get("packing")
    supported = parallel.packing_supported(model_type)
    if wanted is None:
        return supported
    if wanted and not supported:
        raise ConfigError(
            f"training_config.DatasetConfig.packing: model type {model_type!r} cannot keep packed examples apart; "
            "set packing: false"
        )
    return bool(wanted)
