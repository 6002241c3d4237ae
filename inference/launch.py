"""Entry point of the inference pod's main container: `python -m inference.launch ...`.

Order: weights (from the node-local cache, downloaded there first if needed) -> adapters (scaled copies for strength != 1) -> start the
gateway on --port as a child -> exec the runtime, which thus becomes the container's main process.
The gateway dies with it (PR_SET_PDEATHSIG), and the runtime's exit ends the container.
`--dry-run` only reads adapter configs and prints the runtime argv as JSON on the last line.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

from inference.adapters import AdapterError, check_sglang_servable, prepare_adapters
from inference.commands import gateway_argv, runtime_argv
from inference.launch_args import UsageError, parse_launch_args
from inference.offline_env import HUB_OFFLINE
from inference.server_args_check import check_with_sglang_parser
from inference.weights import ensure_weights
from workload_contract.inference_config import RuntimeConfigError, flags_from_config


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
        adapters = prepare_adapters(cfg.adapters, cfg.adapters_dir, cfg.work_dir, write=False)
        config_flags = (
            flags_from_config(cfg.config_file, cfg.runtime, cfg.tp_size, cfg.work_dir) if cfg.config_file else []
        )
    except (UsageError, AdapterError, RuntimeConfigError) as e:
        return _fail(e, 2)
    run = runtime_argv(cfg, adapters) + config_flags
    if config_flags and cfg.runtime == "sglang":
        try:  # a misspelt flag fails here, naming it, rather than in SGLang's usage message
            check_with_sglang_parser(run[3:])
        except ImportError:
            pass  # no SGLang in this environment (dry runs): it checks its own arguments when exec'd
        except RuntimeConfigError as e:
            return _fail(e, 2)
    gateway = gateway_argv(cfg, os.getpid(), adapters=adapters)
    if cfg.dry_run:
        print("gateway: " + json.dumps(gateway))
        print(json.dumps(run))
        return 0

    # The gateway first: /healthz answers during a long download; /health stays 503 until the model is up.
    subprocess.Popen(gateway, preexec_fn=_die_with_parent)  # noqa: PLW1509 (no threads exist yet)
    try:
        model_path, weights_entry = ensure_weights(
            cfg.model, cfg.weights_dir, os.environ.get("HF_TOKEN") or None, cfg.weights_cache, cfg.revision, log=_log
        )
        prepared = prepare_adapters(cfg.adapters, cfg.adapters_dir, cfg.work_dir, write=True)
        if cfg.runtime == "sglang":
            check_sglang_servable(prepared)
    except FileNotFoundError as e:
        return _fail(e, 2)
    except AdapterError as e:
        return _fail(e, 2)
    except Exception as e:  # noqa: BLE001 (the download: network, auth of a gated model, disk; all end here)
        return _fail(f"cannot fetch model {cfg.model!r} into {cfg.weights_dir}: {type(e).__name__}: {e}", 1)
    if weights_entry is not None:
        weights_entry.keep_across_exec()  # the model server holds the entry's `use` lock: no eviction under it
        run = runtime_argv(dataclasses.replace(cfg, weights_dir=model_path), adapters) + config_flags
    # Everything is local now: a wrong adapter path must fail fast instead of the runtime trying the Hub,
    # and the libraries' own Hub lookups (bitsandbytes' `kernels`) stay in the cache.
    env = {**os.environ, **HUB_OFFLINE}
    _log("exec " + " ".join(run))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(run[0], run, env)
    return 1  # not reached


def _log(message: str) -> None:
    print(f"inference.launch: {message}", file=sys.stderr, flush=True)


def _fail(error, code: int) -> int:
    _log(f"error: {error}")
    return code


if __name__ == "__main__":
    sys.exit(main())
