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

from tuning import choices, parallel
from tuning.config import ConfigError, load_training_config
from tuning.dataset import DatasetError, load_examples, select_for_training
from tuning.packing import pack, pad_packed
from tuning.render import features, pad_batch

log = logging.getLogger("tuning.train")

MARKER = "fine_tuning_completed.txt"
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


def _quantization(config: dict[str, Any]) -> str | None:
    quant = config.get("QuantizationConfig") or {}
    return "4bit" if quant.get("load_in_4bit") else "8bit" if quant.get("load_in_8bit") else None


def _gpus() -> tuple[int, int]:
    """(GPU count, memory of the smallest GPU in bytes); (0, 0) without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return 0, 0
    n = torch.cuda.device_count()
    return n, min(torch.cuda.get_device_properties(i).total_memory for i in range(n))


def _step_shape(config: dict[str, Any]) -> tuple[int, int]:
    """(sequence length, per-device batch) of one training step."""
    args = config.get("TrainingArguments") or {}
    seq = int((config.get("DatasetConfig") or {}).get("max_seq_length") or 1024)
    return seq, int(args.get("per_device_train_batch_size") or 8)


def plan_processes(config: dict[str, Any], model_dir: str, gpu_count: int, gpu_bytes: int) -> int:
    """How many data-parallel processes (one per GPU) this run should use."""
    if gpu_count <= 1:
        return 1
    shape, _type, _b = model_shape(model_dir)
    seq, batch = _step_shape(config)
    dtype_bytes = (
        4 if choices.compute_dtype((config.get("ModelConfig") or {}).get("torch_dtype"), (8, 0)) == "float32" else 2
    )
    fits = (
        parallel.per_gpu_need(shape, _quantization(config), dtype_bytes, seq, batch, checkpointing=True)
        <= parallel.USABLE * gpu_bytes
    )
    return parallel.data_parallel_processes(gpu_count, fits, (config.get("ModelConfig") or {}).get("device_map"))


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
    if not on_gpu:
        kwargs["device_map"] = {"": "cpu"}
    elif _world_size() > 1:
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


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


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

    capability = _capability()
    on_gpu = capability is not None
    dtype_name = choices.compute_dtype((config.get("ModelConfig") or {}).get("torch_dtype"), capability)
    log.info(
        "device=%s capability=%s compute dtype=%s processes=%d",
        "cuda" if on_gpu else "cpu",
        capability,
        dtype_name,
        _world_size(),
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
        _n, gpu_bytes = _gpus()
        seq, batch = _step_shape(config)
        checkpointing = parallel.needs_checkpointing(
            shape,
            _quantization(config),
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
            "processes": _world_size(),
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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tuning.train", description=__doc__)
    p.add_argument("--config", required=True, help="Kaito training_config.yaml")
    p.add_argument(
        "--model",
        required=True,
        help="base model directory (with --model-repo: the weights cache when no --weights-cache)",
    )
    p.add_argument("--model-repo", help="Hugging Face repo id of the base model (token from env HF_TOKEN)")
    p.add_argument("--revision", default="main", help="branch, tag or commit of --model-repo")
    p.add_argument("--weights-cache", help="the node-local weights cache (see inference.weights_cache)")
    p.add_argument("--data", required=True, help="directory holding parquet/json/jsonl/csv dataset files")
    p.add_argument("--output", required=True, help="where the adapter files and completion marker go")
    p.add_argument("--method", choices=["lora", "qlora"], help="default: inferred from QuantizationConfig")
    p.add_argument("--base-model-name", help=argparse.SUPPRESS)  # the repo id, passed to torchrun workers
    p.add_argument(
        "--processes",
        default="auto",
        help="data-parallel processes: auto (one per GPU when the model fits one GPU) or a number",
    )
    return p.parse_args(argv)


def torchrun_argv(processes: int, args: argparse.Namespace, model_path: str) -> list[str]:
    """This trainer again under torchrun, one process per GPU, on the already fetched model."""
    argv = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={processes}",
        "-m",
        "tuning.train",
        "--config",
        args.config,
        "--model",
        model_path,
        "--data",
        args.data,
        "--output",
        args.output,
        "--processes",
        "1",
    ]
    if args.model_repo:
        argv += ["--base-model-name", args.model_repo]
    if args.method:
        argv += ["--method", args.method]
    return argv


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stdout)
    args = parse_args(argv)
    try:
        with open(args.config, encoding="utf-8") as f:
            config = load_training_config(f.read(), args.method)
        model_path, entry = ensure_model(args.model, args.model_repo, args.weights_cache, args.revision)
        if args.processes == "auto":
            processes = plan_processes(config, model_path, *_gpus())
        else:
            try:
                processes = int(args.processes)
            except ValueError:
                raise ConfigError(f"--processes {args.processes!r}: expected auto or a number") from None
        if processes > 1 and "LOCAL_RANK" not in os.environ:
            run = torchrun_argv(processes, args, model_path)
            log.info("data parallel: %d processes, one per GPU: %s", processes, " ".join(run))
            if entry is not None:
                entry.keep_across_exec()  # the workers read the cache entry: keep it from eviction
            sys.stdout.flush()
            os.execv(run[0], run)
        train(config, model_path, args.data, args.output, args.model_repo or args.base_model_name)
    except (ConfigError, DatasetError, TrainError) as exc:
        log.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
