"""Time to weights for a second pod on the same node, with and without the node-local weights cache.

    .venv/bin/python benchmarks/bench_weights.py [--mib 64] [--mbps 100] [--rounds 3]

A tiny model (a random safetensors shard of --mib MiB and its config) is served by the loopback Hub
stand-in (tests/weights_support/loopback_hub.py; the real Hub is unreachable here) at --mbps MB/s, a
stand-in for the network. Each round starts `python -m inference.weights` (the weights init container's
command) as two pods would: a first pod fills the cache, then a second pod starts
- without the cache: into a fresh folder of its own (an emptyDir: what every pod did before), and
- with the cache: on the same node cache (verify the marker, sizes and mtimes, download nothing).
Both include the process start and the Hub listing call. Prints the medians and their ratio.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from weights_support.loopback_hub import LoopbackHub  # noqa: E402

MODEL = "bench/tiny"


def start_pod(hub_url: str, cache: str) -> float:
    # Online to the loopback Hub only (make bench runs the benchmarks with the Hub offline).
    env = {
        **os.environ,
        "HF_ENDPOINT": hub_url,
        "HF_HUB_OFFLINE": "0",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "PYTHONPATH": str(REPO),
    }
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "inference.weights", "--model", MODEL, "--cache", cache, "--reserve-gib", "0",
         "--termination-log", os.devnull],
        cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return time.perf_counter() - started


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mib", type=int, default=64, help="size of the model's weights")
    p.add_argument("--mbps", type=float, default=100.0, help="the stand-in network's bandwidth, MB/s")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    files = {"config.json": b'{"model_type": "llama"}', "model.safetensors": os.urandom(args.mib << 20)}
    without, with_cache = [], []
    with LoopbackHub({MODEL: files}, bytes_per_s=args.mbps * 1e6) as hub, tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            node = os.path.join(tmp, f"node-{i}")
            start_pod(hub.url, node)  # the first pod on the node fills the cache
            without.append(start_pod(hub.url, os.path.join(tmp, f"pod-local-{i}")))
            with_cache.append(start_pod(hub.url, node))
            shutil.rmtree(tmp, ignore_errors=True)
            os.makedirs(tmp, exist_ok=True)
    a, b = statistics.median(without), statistics.median(with_cache)
    print(f"weights: {args.mib} MiB over a {args.mbps:g} MB/s stand-in network, {args.rounds} rounds")
    print(f"second pod, no node cache (own emptyDir): median {a:.2f} s  {[round(x, 2) for x in without]}")
    print(f"second pod, node cache:                  median {b:.2f} s  {[round(x, 2) for x in with_cache]}")
    print(f"ratio (no cache / cache): {a / b:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
