"""Pure decisions about how a tuning run uses its GPUs: how many data-parallel processes, whether
activations must be recomputed (gradient checkpointing) to fit, whether examples are packed.

The memory model is deliberately rough and errs toward "does not fit" (the cost of a wrong "fits" is an
out-of-memory crash; the cost of a wrong "does not fit" is a slower run):
- weights: parameters x bytes per parameter as loaded (4-bit NF4 ~0.55 byte, 8-bit ~1.05, else the dtype);
- activations per layer (Korthikanti et al. 2022, with memory-efficient attention, so no seq^2 term):
  34 x seq x batch x hidden bytes at 16-bit; with checkpointing only each layer's input (2 x seq x batch x
  hidden) plus one layer recomputed at a time;
- logits: seq x batch x vocab x 4 bytes, twice (values and gradient);
- 2 GiB for the CUDA context, allocator slack and LoRA optimizer state; 90 % of the GPU is usable.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 1 << 30
USABLE = 0.9
OVERHEAD = 2 * GIB
# Families whose transformers models build their attention masks with masking_utils.create_causal_mask,
# which keeps packed examples apart when given per-example position_ids and no attention mask.
PACKING_FAMILIES = frozenset({"llama", "mistral", "qwen2", "qwen3", "phi3", "gemma", "gemma2", "gemma3_text"})


@dataclass(frozen=True)
class ModelShape:
    parameters: int
    hidden_size: int
    num_layers: int
    vocab_size: int


def loaded_weight_bytes(shape: ModelShape, quantization: str | None, dtype_bytes: int) -> int:
    per_param = {"4bit": 0.55, "8bit": 1.05}.get(quantization or "", float(dtype_bytes))
    return int(shape.parameters * per_param)


def activation_bytes(shape: ModelShape, seq_len: int, batch: int, checkpointing: bool) -> int:
    per_token_layer = 34 * shape.hidden_size  # bytes at 16-bit
    full_layer = per_token_layer * seq_len * batch
    if checkpointing:
        layers = 2 * shape.hidden_size * seq_len * batch * shape.num_layers + full_layer
    else:
        layers = full_layer * shape.num_layers
    logits = 2 * seq_len * batch * shape.vocab_size * 4
    return layers + logits


def per_gpu_need(
    shape: ModelShape, quantization: str | None, dtype_bytes: int, seq_len: int, batch: int, checkpointing: bool
) -> int:
    return (
        loaded_weight_bytes(shape, quantization, dtype_bytes)
        + activation_bytes(shape, seq_len, batch, checkpointing)
        + OVERHEAD
    )


def needs_checkpointing(
    shape: ModelShape, quantization: str | None, dtype_bytes: int, seq_len: int, batch: int, gpu_bytes: int
) -> bool:
    """True when the activations of a step do not fit one GPU without recomputation."""
    return per_gpu_need(shape, quantization, dtype_bytes, seq_len, batch, False) > USABLE * gpu_bytes


def data_parallel_processes(gpu_count: int, fits_one_gpu: bool, device_map: object) -> int:
    """One process per GPU (DDP) when a whole model copy fits one GPU and the user did not place the
    model themselves (ModelConfig.device_map other than "auto"); otherwise one process over all GPUs."""
    if gpu_count <= 1 or not fits_one_gpu:
        return 1
    if device_map not in (None, "auto"):
        return 1
    return gpu_count


def packing_supported(model_type: str | None) -> bool:
    return (model_type or "").lower() in PACKING_FAMILIES
