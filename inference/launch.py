"""Entry point of the inference pod's main container: `python -m inference.launch ...`.

Order: weights (download unless present) -> adapters (scaled copies for strength != 1) -> start the
gateway on --port as a child -> exec the runtime, which thus becomes the container's main process.
The gateway dies with it (PR_SET_PDEATHSIG), and the runtime's exit ends the container.
`--dry-run` only reads adapter configs and prints the runtime argv as JSON on the last line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from inference.adapters import AdapterError, prepare_adapters
from inference.cli import UsageError, parse_launch_args
from inference.commands import gateway_argv, runtime_argv
from inference.weights import ensure_weights


def _die_with_parent() -> None:
    try:
        import ctypes
        import signal

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = parse_launch_args(sys.argv[1:] if argv is None else argv)
        adapters = prepare_adapters(cfg.adapters, cfg.adapters_dir, cfg.work_dir, write=not cfg.dry_run)
    except (UsageError, AdapterError) as e:
        print(f"inference.launch: error: {e}", file=sys.stderr)
        return 2
    run = runtime_argv(cfg, adapters)
    gateway = gateway_argv(cfg, os.getpid())
    if cfg.dry_run:
        print("gateway: " + json.dumps(gateway))
        print(json.dumps(run))
        return 0

    try:
        ensure_weights(cfg.model, cfg.weights_dir, os.environ.get("HF_TOKEN") or None)
    except FileNotFoundError as e:
        print(f"inference.launch: error: {e}", file=sys.stderr)
        return 2
    env = dict(os.environ)
    # Everything is local now: a wrong adapter path must fail fast instead of SGLang trying the Hub.
    env["HF_HUB_OFFLINE"] = "1"
    sys.stdout.flush()
    subprocess.Popen(gateway, preexec_fn=_die_with_parent)
    os.execvpe(run[0], run, env)
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main())
