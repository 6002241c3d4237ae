"""One fine-tuning run from an effective (merged, validated) training config: the dataset rendered (and
packed where the model family allows), LoRA on the base model, Hugging Face's Trainer with progress
lines, and the adapter written by the first process. Trainer scratch state lives in a temp dir.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from typing import Any

from tuning import choices, parallel
from tuning.adapter_output import write_adapter
from tuning.base_model import load_model_and_tokenizer
from tuning.config import ConfigError
from tuning.dataset import DatasetError, load_examples, select_for_training
from tuning.packing import pack, pad_packed
from tuning.render import features, pad_batch
from tuning.run_plan import capability, gpus, model_shape, packing_choice, quantization, step_shape, world_size

# One logger for the whole trainer: its lines read as tuning.train wherever they come from.
log = logging.getLogger("tuning.train")


def training_arguments(
    section: dict[str, Any],
    scratch: str,
    dtype_name: str,
    on_gpu: bool,
    checkpointing: bool | None = None,
    group_by_length: bool = False,
):
    """TrainingArguments from the Kaito section. `checkpointing`: the memory decision, used unless the
    section sets it (None: on the GPU only); `group_by_length`: the default sampler when not packing."""
    from transformers import TrainingArguments

    args = {k: v for k, v in section.items() if k != "output_dir"}
    if "group_by_length" in args:  # Kaito's (older transformers') name of the length-grouped sampler
        if args.pop("group_by_length"):
            args.setdefault("train_sampling_strategy", "group_by_length")
    elif group_by_length:
        args.setdefault("train_sampling_strategy", "group_by_length")
    args.setdefault("report_to", [])
    args.setdefault("logging_steps", 10)
    args.setdefault("save_strategy", "no")
    args.setdefault("disable_tqdm", True)
    if not any(k in args for k in ("gradient_checkpointing", "activation_checkpointing")):
        fields = getattr(TrainingArguments, "__dataclass_fields__", {})
        name = "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
        # Recompute activations only where a step would not fit the GPU otherwise (about 30 % slower).
        args[name] = on_gpu if checkpointing is None else checkpointing
    args.setdefault("remove_unused_columns", False)
    for flag, value in choices.mixed_precision_flags(dtype_name).items():
        args[flag] = value
    if not on_gpu:
        args["use_cpu"] = True
        optim = str(args.get("optim", ""))
        if "paged" in optim or "8bit" in optim:
            args["optim"] = "adamw_torch"  # bitsandbytes has no CPU 8-bit/paged optimizers
    try:
        return TrainingArguments(output_dir=scratch, **args)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"training_config.TrainingArguments: {exc}") from exc


def _progress_callback(counter: dict[str, int]):
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            self.t0 = time.monotonic()

        def on_log(self, args, state, control, logs=None, **kw):
            elapsed = max(time.monotonic() - self.t0, 1e-9)
            line = {"step": state.global_step, "max_steps": state.max_steps}
            for key in ("loss", "learning_rate", "grad_norm", "train_loss"):
                if logs and key in logs:
                    line[key] = round(float(logs[key]), 6)
            # Averages since the start: the collator runs ahead of the optimizer step, so per-interval
            # token counts would jitter.
            line["steps_per_s"] = round(state.global_step / elapsed, 3)
            line["tokens_per_s"] = round(counter["tokens"] / elapsed, 1)
            line["elapsed_s"] = round(elapsed, 2)
            log.info("progress %s", json.dumps(line))

    return Progress()


def _all_reduce_sum(value: int) -> int:
    """The sum over all data-parallel processes (the value itself when there is one process)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return value
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([value], dtype=torch.long, device=device)
    dist.all_reduce(t)
    return int(t.item())


def train(
    config: dict[str, Any], model_dir: str, data_dir: str, output_dir: str, model_repo: str | None = None
) -> dict[str, Any]:
    """Run one fine-tuning job from an effective (merged, validated) config; returns a summary.

    Under torchrun (WORLD_SIZE > 1) every process holds a whole model copy on its own GPU and trains on
    its share of each step (DDP); the first process writes the adapter."""
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import Trainer

    dataset_cfg = config.get("DatasetConfig") or {}
    examples = select_for_training(load_examples(data_dir, dataset_cfg), dataset_cfg)

    gpu_capability = capability()
    on_gpu = gpu_capability is not None
    dtype_name = choices.compute_dtype((config.get("ModelConfig") or {}).get("torch_dtype"), gpu_capability)
    log.info(
        "device=%s capability=%s compute dtype=%s processes=%d",
        "cuda" if on_gpu else "cpu",
        gpu_capability,
        dtype_name,
        world_size(),
    )

    shape, model_type, _disk_bytes = model_shape(model_dir)
    packing = packing_choice(dataset_cfg, model_type)
    model, tokenizer, quantized = load_model_and_tokenizer(model_dir, config, dtype_name, on_gpu)
    max_length = int(dataset_cfg.get("max_seq_length") or 1024)
    rows = [f for f in (features(ex, tokenizer, max_length) for ex in examples) if f is not None]
    if not rows:
        raise DatasetError("no example has trainable tokens after rendering and truncation")
    train_rows = pack(rows, max_length) if packing else rows
    log.info(
        "examples: %d loaded, %d trainable, %d training rows (packing %s)",
        len(examples),
        len(rows),
        len(train_rows),
        "on" if packing else "off",
    )

    checkpointing = None
    if on_gpu:
        _n, gpu_bytes = gpus()
        seq, batch = step_shape(config)
        checkpointing = parallel.needs_checkpointing(
            shape,
            quantization(config),
            4 if dtype_name == "float32" else 2,
            seq if packing else min(seq, max(len(r["input_ids"]) for r in rows)),
            batch,
            gpu_bytes,
        )
    with tempfile.TemporaryDirectory(prefix="tuning-") as scratch:
        args = training_arguments(
            dict(config.get("TrainingArguments") or {}),
            scratch,
            dtype_name,
            on_gpu,
            checkpointing=checkpointing,
            group_by_length=not packing,
        )
        checkpointing = bool(
            getattr(args, "activation_checkpointing", None) or getattr(args, "gradient_checkpointing", False)
        )
        if quantized:
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing)
        elif checkpointing:
            model.enable_input_require_grads()
        if packing:
            model.config.use_cache = False  # a KV cache in the forward pass would disable the packed-sequence mask
        lora_section = dict(config.get("LoraConfig") or {})
        lora_section["target_modules"] = choices.target_modules(
            lora_section, getattr(model.config, "model_type", None), os.environ.get("DEFAULT_TARGET_MODULES")
        )
        lora_section.setdefault("bias", "none")
        lora_section["task_type"] = "CAUSAL_LM"
        try:
            lora = LoraConfig(**lora_section)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"training_config.LoraConfig: {exc}") from exc
        model = get_peft_model(model, lora)
        trainable, total = model.get_nb_trainable_parameters()
        log.info(
            "LoRA targets=%s trainable params=%d of %d gradient checkpointing=%s",
            sorted(getattr(model.peft_config["default"], "target_modules", None) or []),
            trainable,
            total,
            checkpointing,
        )

        counter = {"tokens": 0, "examples": 0}
        collator_cfg = config.get("DataCollator") or {}
        multiple = collator_cfg.get("pad_to_multiple_of")

        def collate(batch):
            padded = (pad_packed if packing else pad_batch)(batch, tokenizer.pad_token_id, multiple)
            counter["tokens"] += sum(len(f["input_ids"]) for f in batch)
            return {k: torch.tensor(v) for k, v in padded.items()}

        class CountingTrainer(Trainer):
            """Counts the examples each micro-batch really trains on (the data loader runs ahead)."""

            def training_step(self, model, inputs, *a, **kw):
                if "position_ids" in inputs:
                    counter["examples"] += int((inputs["position_ids"] == 0).sum())
                else:
                    counter["examples"] += int(inputs["input_ids"].shape[0])
                return super().training_step(model, inputs, *a, **kw)

        trainer = CountingTrainer(
            model=model,
            args=args,
            train_dataset=train_rows,
            data_collator=collate,
            callbacks=[_progress_callback(counter)],
        )
        started = time.monotonic()
        result = trainer.train()
        seconds = time.monotonic() - started
        examples_seen = _all_reduce_sum(counter["examples"])
        tokens_seen = _all_reduce_sum(counter["tokens"])
        summary = {
            "steps": int(result.global_step),
            "train_loss": float(result.training_loss),
            "seconds": round(seconds, 3),
            "tokens": tokens_seen,
            "examples": len(rows),
            "examples_per_step": round(examples_seen / max(1, int(result.global_step)), 3),
            "processes": world_size(),
            "packing": packing,
            "gradient_checkpointing": checkpointing,
            "compute_dtype": dtype_name,
            "base_model": model_repo,
        }
        if trainer.is_world_process_zero():
            adapter_dir = os.path.join(scratch, "adapter")
            model.save_pretrained(adapter_dir, safe_serialization=True)
            write_adapter(adapter_dir, output_dir, model_repo, summary)
    log.info("done %s", json.dumps(summary))
    return summary
