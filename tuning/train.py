"""`python -m tuning.train`: QLoRA/LoRA fine-tuning from a Kaito training_config.yaml.

Writes ONLY adapter_config.json and adapter_model.safetensors to --output, then the completion marker
fine_tuning_completed.txt (the pusher waits for it). Trainer scratch state lives in a temp dir.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from typing import Any

from tuning import choices
from tuning.config import ConfigError, load_training_config
from tuning.dataset import DatasetError, load_examples, select_for_training
from tuning.render import features, pad_batch

log = logging.getLogger("tuning.train")

MARKER = "fine_tuning_completed.txt"
_MODEL_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken", "*.py"]
# ModelConfig keys that the trainer interprets itself instead of passing to from_pretrained.
_MODEL_KEYS_HANDLED = {"torch_dtype", "dtype", "device_map", "chat_template"}


class TrainError(RuntimeError):
    pass


def ensure_model(model_dir: str, model_repo: str | None, downloader=None) -> None:
    """Download `model_repo` into `model_dir` unless it already holds a config.json."""
    if os.path.isfile(os.path.join(model_dir, "config.json")):
        return
    if not model_repo:
        raise TrainError(f"{model_dir} holds no config.json and no --model-repo was given to download")
    if downloader is None:
        from huggingface_hub import snapshot_download as downloader
    log.info("downloading %s into %s", model_repo, model_dir)
    os.makedirs(model_dir, exist_ok=True)
    try:
        downloader(
            repo_id=model_repo,
            local_dir=model_dir,
            token=os.environ.get("HF_TOKEN") or None,
            allow_patterns=_MODEL_PATTERNS,
        )
    except Exception as exc:  # hub errors come in many types; the message is what the user needs
        raise TrainError(f"downloading {model_repo} failed: {type(exc).__name__}: {exc}") from exc
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise TrainError(f"download of {model_repo} left no config.json in {model_dir}")


def _capability() -> tuple[int, int] | None:
    import torch

    if not torch.cuda.is_available():
        return None
    return min(torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count()))


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
    kwargs["device_map"] = (model_cfg.get("device_map") or "auto") if on_gpu else {"": "cpu"}
    quantized = bool(quant_cfg.get("load_in_4bit") or quant_cfg.get("load_in_8bit"))
    if quantized:
        if quant_cfg.get("load_in_4bit"):
            quant_cfg["bnb_4bit_compute_dtype"] = dtype
        kwargs["quantization_config"] = BitsAndBytesConfig(**quant_cfg)
    model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
    return model, tokenizer, quantized


def training_arguments(section: dict[str, Any], scratch: str, dtype_name: str, on_gpu: bool):
    from transformers import TrainingArguments

    args = {k: v for k, v in section.items() if k != "output_dir"}
    args.setdefault("report_to", [])
    args.setdefault("logging_steps", 10)
    args.setdefault("save_strategy", "no")
    args.setdefault("disable_tqdm", True)
    if not any(k in args for k in ("gradient_checkpointing", "activation_checkpointing")):
        fields = getattr(TrainingArguments, "__dataclass_fields__", {})
        name = "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
        args[name] = on_gpu  # memory for long sequences on the GPU; needless slowness on CPU tests
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


def write_adapter(adapter_dir: str, output_dir: str, base_model: str | None, summary: dict[str, Any]) -> None:
    """Copy the two adapter files to `output_dir`, then write the completion marker last."""
    os.makedirs(output_dir, exist_ok=True)
    marker = os.path.join(output_dir, MARKER)
    if os.path.exists(marker):
        os.remove(marker)
    with open(os.path.join(adapter_dir, "adapter_config.json"), encoding="utf-8") as f:
        adapter_config = json.load(f)
    adapter_config["base_model_name_or_path"] = base_model
    tmp = os.path.join(output_dir, ".adapter_config.json.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(adapter_config, f, indent=2, sort_keys=True)
    os.replace(tmp, os.path.join(output_dir, "adapter_config.json"))
    shutil.copyfile(
        os.path.join(adapter_dir, "adapter_model.safetensors"),
        os.path.join(output_dir, "adapter_model.safetensors"),
    )
    with open(marker, "w", encoding="utf-8") as f:
        f.write(json.dumps(summary, sort_keys=True) + "\n")


def train(config: dict[str, Any], model_dir: str, data_dir: str, output_dir: str, model_repo: str | None = None) -> dict[str, Any]:
    """Run one fine-tuning job from an effective (merged, validated) config; returns a summary."""
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import Trainer

    dataset_cfg = config.get("DatasetConfig") or {}
    examples = select_for_training(load_examples(data_dir, dataset_cfg), dataset_cfg)

    capability = _capability()
    on_gpu = capability is not None
    dtype_name = choices.compute_dtype((config.get("ModelConfig") or {}).get("torch_dtype"), capability)
    log.info("device=%s capability=%s compute dtype=%s", "cuda" if on_gpu else "cpu", capability, dtype_name)

    model, tokenizer, quantized = load_model_and_tokenizer(model_dir, config, dtype_name, on_gpu)
    max_length = int(dataset_cfg.get("max_seq_length") or 1024)
    rows = [f for f in (features(ex, tokenizer, max_length) for ex in examples) if f is not None]
    if not rows:
        raise DatasetError("no example has trainable tokens after rendering and truncation")
    log.info("examples: %d loaded, %d trainable", len(examples), len(rows))

    with tempfile.TemporaryDirectory(prefix="tuning-") as scratch:
        args = training_arguments(dict(config.get("TrainingArguments") or {}), scratch, dtype_name, on_gpu)
        checkpointing = bool(getattr(args, "activation_checkpointing", None) or getattr(args, "gradient_checkpointing", False))
        if quantized:
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing)
        elif checkpointing:
            model.enable_input_require_grads()
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
        log.info("LoRA targets=%s trainable params=%d of %d", sorted(model.peft_config["default"].target_modules), trainable, total)

        counter = {"tokens": 0}
        collator_cfg = config.get("DataCollator") or {}
        multiple = collator_cfg.get("pad_to_multiple_of")

        def collate(batch):
            padded = pad_batch(batch, tokenizer.pad_token_id, multiple)
            counter["tokens"] += sum(len(f["input_ids"]) for f in batch)
            return {k: torch.tensor(v) for k, v in padded.items()}

        trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=collate, callbacks=[_progress_callback(counter)])
        started = time.monotonic()
        result = trainer.train()
        seconds = time.monotonic() - started
        adapter_dir = os.path.join(scratch, "adapter")
        model.save_pretrained(adapter_dir, safe_serialization=True)
        summary = {
            "steps": int(result.global_step),
            "train_loss": float(result.training_loss),
            "seconds": round(seconds, 3),
            "tokens": counter["tokens"],
            "examples": len(rows),
            "compute_dtype": dtype_name,
            "base_model": model_repo,
        }
        write_adapter(adapter_dir, output_dir, model_repo, summary)
    log.info("done %s", json.dumps(summary))
    return summary


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tuning.train", description=__doc__)
    p.add_argument("--config", required=True, help="Kaito training_config.yaml")
    p.add_argument("--model", required=True, help="base model directory (downloaded there if it has no config.json)")
    p.add_argument("--model-repo", help="Hugging Face repo id of the base model (token from env HF_TOKEN)")
    p.add_argument("--data", required=True, help="directory holding parquet/json/jsonl/csv dataset files")
    p.add_argument("--output", required=True, help="where the adapter files and completion marker go")
    p.add_argument("--method", choices=["lora", "qlora"], help="default: inferred from QuantizationConfig")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stdout)
    args = parse_args(argv)
    try:
        with open(args.config, encoding="utf-8") as f:
            config = load_training_config(f.read(), args.method)
        ensure_model(args.model, args.model_repo)
        train(config, args.model, args.data, args.output, args.model_repo)
    except (ConfigError, DatasetError, TrainError) as exc:
        log.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
