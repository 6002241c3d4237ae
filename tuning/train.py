"""`python -m tuning.train`: QLoRA/LoRA fine-tuning from a Kaito training_config.yaml.

Writes ONLY adapter_config.json and adapter_model.safetensors to --output, then the completion marker
fine_tuning_completed.txt (the pusher waits for it). Trainer scratch state lives in a temp dir.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from tuning.base_model import TrainError, ensure_model
from tuning.config import ConfigError, load_training_config
from tuning.dataset import DatasetError
from tuning.run_plan import gpus, plan_processes
from tuning.training_loop import train

# The command's steps: the base model from tuning.base_model, the process count from tuning.run_plan, the
# run itself in tuning.training_loop (which writes the output through tuning.adapter_output). The module
# docstring is the command's --help.
log = logging.getLogger("tuning.train")


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
            processes = plan_processes(config, model_path, *gpus())
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
