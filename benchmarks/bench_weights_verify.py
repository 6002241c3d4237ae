"""What checking a cached weights entry costs on each pod start, against hashing it all.

    .venv/bin/python benchmarks/bench_weights_verify.py [--gib 2] [--shards 4] [--rounds 3]

Builds one complete cache entry of --shards random files totalling --gib GiB (written through the cache's
own ensure(), so the marker is the real one), then times, per round:
- the quick check a pod start does (the model container's read-only open: for every file its size, mtime,
  ctime and inode against the marker; nothing hashed), and
- a full verification (sha256 of every file, 4 threads: `python -m inference.weights --full-verify`).
The page cache is not dropped (that needs root on the host), so the hash figure is CPU-bound: a cold read
from disk is slower still. Prints the medians.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from inference.weights_cache.cache import Listing, RepoFile, WeightsCache  # noqa: E402


def build_entry(root: str, gib: float, shards: int) -> Listing:
    size = int(gib * (1 << 30)) // shards
    src = Path(root) / "src"
    src.mkdir()
    files = []
    for i in range(shards):
        path = src / f"model-{i:05d}.safetensors"
        with open(path, "wb") as f:
            left = size
            while left:
                chunk = os.urandom(min(left, 64 << 20))
                f.write(chunk)
                left -= len(chunk)
        files.append(RepoFile(path.name, size, hashlib.sha256(path.read_bytes()).hexdigest()))
    listing = Listing("bench/verify", "0" * 40, tuple(files))

    def fetch(f: RepoFile, entry_dir: str) -> int:
        os.link(src / f.path, os.path.join(entry_dir, f.path))
        return f.size or 0

    WeightsCache(os.path.join(root, "cache"), reserve_bytes=0).ensure(listing, fetch).release()
    return listing


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gib", type=float, default=2.0)
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as root:
        listing = build_entry(root, args.gib, args.shards)
        cache = WeightsCache(os.path.join(root, "cache"), reserve_bytes=0)
        quick, full = [], []
        for _ in range(args.rounds):
            started = time.perf_counter()
            entry = cache.open_read_only(listing.repo, listing.commit)
            quick.append(time.perf_counter() - started)
            assert entry is not None
            entry.release()
            started = time.perf_counter()
            assert not cache.problems(listing, full=True)
            full.append(time.perf_counter() - started)
    total = listing.total_bytes
    # The report reads like bench_weights.py's on purpose: medians, then the figure its goal is about.
    q, f = statistics.median(quick), statistics.median(full)
    print(f"entry: {args.shards} files, {total / (1 << 30):.2f} GiB")
    print(f"quick check (stat per file): {q * 1e3:.2f} ms")
    print(f"full sha256: {f:.2f} s = {total / f / 1e6:.0f} MB/s on {os.cpu_count()} cores")
    print(f"a 131 GiB model (llama-3.3-70b) would take {131 * (1 << 30) / (total / f) / 60:.1f} min to hash")
    return 0


if __name__ == "__main__":
    sys.exit(main())
