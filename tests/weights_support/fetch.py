"""The model-weights init container's command (`python -m inference.weights`) as the tests run it."""

from __future__ import annotations

import sys
from pathlib import Path


def fetch_argv(model: str, cache: Path, termination_log: Path, *flags: str) -> list[str]:
    """Fetch `model` into the node cache at `cache` with no disk reserve, writing its outcome to
    `termination_log` (the pod's terminationMessagePath), with any further `flags`."""
    return [
        sys.executable,
        "-m",
        "inference.weights",
        "--model",
        model,
        "--cache",
        str(cache),
        "--reserve-gib",
        "0",
        "--termination-log",
        str(termination_log),
        *flags,
    ]
