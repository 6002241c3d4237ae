"""Data-parallel tuning: examples trained per optimizer step with 1 and 2 processes (DDP, gloo on CPU),
the same per-device batch and the same tiny model and data.

    .venv/bin/python benchmarks/bench_tuning_ddp.py [--steps 4] [--batch 2]

Runs `python -m tuning.train --processes N` (which re-executes itself under torch.distributed.run for
N > 1). The trainer counts the examples each micro-batch really trains on and sums them over the
processes; expect the 2-process run to train about twice the examples per step. On CPU the two
processes share the cores, so the wall time says little; on a GPU node each process has its own GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from tuning_support import tiny  # noqa: E402


def run(tmp: Path, processes: int, steps: int, batch: int) -> tuple[dict, float]:
    (tmp / "cfg.yaml").write_text(tiny.training_yaml(
        "lora", TrainingArguments={"max_steps": steps, "per_device_train_batch_size": batch, "logging_steps": steps},
        DatasetConfig={"packing": False},
    ))  # fmt: skip
    out = tmp / f"out-{processes}"
    started = time.perf_counter()
    subprocess.run(
        tiny.train_argv(tmp / "cfg.yaml", tmp / "model", tmp / "data", out, "--processes", str(processes)),
        cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    return json.loads((out / "fine_tuning_completed.txt").read_text()), time.perf_counter() - started


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--batch", type=int, default=2, help="per_device_train_batch_size")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        tiny.make_model(str(tmp / "model"), "llama")
        tiny.write_parquet(str(tmp / "data" / "train.parquet"), tiny.chat_rows(32))
        results = {n: run(tmp, n, args.steps, args.batch) for n in (1, 2)}
    for n, (summary, wall) in results.items():
        print(f"{n} process(es): {summary['examples_per_step']:g} examples/step over {summary['steps']} steps "
              f"(per-device batch {args.batch}), wall {wall:.1f} s")  # fmt: skip
    ratio = results[2][0]["examples_per_step"] / results[1][0]["examples_per_step"]
    print(f"ratio (2 processes / 1): {ratio:.2f}x examples per step")
    return 0


if __name__ == "__main__":
    sys.exit(main())
