"""Time to serve a new adapter: live (the desired set changes in the pod) against a pod
restart (the launcher's start path with the adapter on its command line), measured side by side.

    python benchmarks/bench_live_adapters.py [--runtime transformers|sglang] [--rounds 3]

Each round, interleaved: (a) on a running stack, write a desired set that adds one adapter and time until
a request naming it answers 200; remove it again; (b) start a fresh stack with the adapter given on the
command line and time until a request naming it answers 200 (what a restart costs before the first request,
weights already on disk). Prints the medians, the spread and restart/live as a ratio. Tiny random model
(tests/real_sglang/tiny_models.py), CPU, loopback only.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests" / "real_sglang"), str(REPO / "tests")]  # the harness and its helpers

from harness import Stack, put_adapter_files, sglang_python, start_live_stack, write_desired  # noqa: E402
from tiny_models import LLAMA_ADAPTERS, LLAMA_PRESET, build  # noqa: E402

TIMEOUT_S = 600


def _until_served(stack: Stack, model: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < TIMEOUT_S:
        if stack.proc.poll() is not None:
            raise RuntimeError(f"the stack exited with {stack.proc.returncode}")
        try:
            r = requests.post(
                f"{stack.url}/v1/completions",
                timeout=60,
                json={"model": model, "prompt": "hello", "max_tokens": 1, "temperature": 0},
            )
            if r.status_code == 200:
                return time.monotonic() - start
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{model} not served within {TIMEOUT_S} s")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runtime", choices=["transformers", "sglang"], default="transformers")
    p.add_argument("--rounds", type=int, default=3)
    ns = p.parse_args()
    if ns.runtime == "sglang" and sglang_python() is None:
        sys.exit("the SGLang venv is not installed: python3 tests/real_sglang/install_sglang.py")
    root = Path(tempfile.mkdtemp(prefix="bench-live-"))
    try:
        tiny = build(root, "llama", [plan for plan, _ in LLAMA_ADAPTERS.values()])
        files, config = root / "files", root / "config"
        config.mkdir()
        for name in ("fin", "legal"):
            put_adapter_files(files, name, tiny.adapters_dir / name)
        desired = config / "adapters.json"
        write_desired(desired, [("fin", "fin", 1.0)])
        live_dir = root / "live"
        live_dir.mkdir()
        live_args = [
            "--adapters-dir",
            str(root / "none"),
            "--live-adapters",
            str(desired),
            "--adapter-files",
            str(files),
        ]
        live = start_live_stack(ns.runtime, LLAMA_PRESET, tiny.weights_dir, live_dir, live_args)
        model = f"{LLAMA_PRESET}:legal"
        live_s, restart_s = [], []
        try:
            _until_served(live, f"{LLAMA_PRESET}:fin")
            for i in range(ns.rounds):
                changed = time.monotonic()
                write_desired(desired, [("fin", "fin", 1.0), ("legal", "legal", 1.0)])
                _until_served(live, model)
                live_s.append(time.monotonic() - changed)
                write_desired(desired, [("fin", "fin", 1.0)])
                time.sleep(2)  # the removal is done before the next round
                cold = root / f"restart-{i}"
                cold.mkdir()
                cold_args = ["--adapters-dir", str(tiny.adapters_dir), "--adapter", "fin", "--adapter", "legal"]
                restart = start_live_stack(ns.runtime, LLAMA_PRESET, tiny.weights_dir, cold, cold_args)
                try:
                    restart_s.append(_until_served(restart, model))
                finally:
                    restart.stop()
        finally:
            live.stop()
        lm, rm = statistics.median(live_s), statistics.median(restart_s)
        print(f"runtime {ns.runtime}, {ns.rounds} rounds (interleaved)")
        print(
            f"  live (desired set changed -> adapter served): median {lm:.2f} s "
            f"(min {min(live_s):.2f}, max {max(live_s):.2f})"
        )
        print(
            f"  restart (launcher start -> adapter served):   median {rm:.2f} s "
            f"(min {min(restart_s):.2f}, max {max(restart_s):.2f})"
        )
        print(f"  restart / live: {rm / lm:.1f}x")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
