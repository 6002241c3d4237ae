"""`python -m inference.gateway`: the client port (5000), Kaito's POST /chat and the OpenAI API in front
of the model server.

Parses the flags, keeps the gateway from reaching past its runtime (egress_guard), builds the app
(inference.gateway.app) and serves it, in one or several processes on the port. `--worker` (node-rank > 0
pods) serves only the health endpoints: those pods run a runtime worker, not the API.
`--adapter-names-from` (the router pod) serves the names of the desired adapter set
(inference.gateway.names); `--live-adapters` loads and swaps adapters in the runtime
(inference.live_adapters_runner).

What reaches the runtime is bounded: only the app's routes, each to a fixed upstream path; bodies up to
--max-body-mib (inference.gateway.body); `n`, `top_logprobs` and token budgets capped
(inference.gateway.validation). Answers are held to the OpenAI SDK's types and stop strings
(inference.gateway.answers), and every error the gateway makes itself is OpenAI-shaped JSON.
"""

from __future__ import annotations

import argparse
import os
from urllib.parse import urlsplit

from aiohttp import web

from inference import GATEWAY_PORT, UPSTREAM_HOST, UPSTREAM_PORT, egress_guard
from inference.gateway.app import make_app
from inference.gateway.body import DEFAULT_MAX_BODY_BYTES
from inference.gateway.names import NamesFollower
from inference.gateway.state import HEALTH_PATH, SERVED
from inference.gateway.translation import Served


def _fork_workers(workers: int) -> None:
    """Become `workers` processes accepting on one port (SO_REUSEPORT: the kernel spreads the connections),
    so one event loop does not cap a busy port (the router pod's gateway carries every replica's traffic).
    The extra processes exit with the first (PR_SET_PDEATHSIG)."""
    import ctypes
    import signal

    for _ in range(workers - 1):
        if os.fork() == 0:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
            return


def _live_adapters_factory(ns: argparse.Namespace, served: Served):
    from inference.live_adapters import Capacity
    from inference.live_adapters_runner import LiveAdapters

    defaults = Capacity()
    capacity = Capacity(
        ns.max_lora_rank or defaults.max_rank,
        frozenset(ns.lora_target_modules) if ns.lora_target_modules else defaults.target_modules,
        ns.max_adapters or defaults.max_adapters,
    )
    return lambda publish: LiveAdapters(
        served, ns.upstream, ns.live_adapters, ns.adapter_files, ns.adapter_work_dir, capacity, publish
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m inference.gateway")
    p.add_argument("--served-model-name", required=True)
    p.add_argument("--adapter", action="append", default=[])
    p.add_argument("--chat-default-adapter", default=None, help="the adapter /chat uses when none is named")
    p.add_argument("--upstream", default=f"http://{UPSTREAM_HOST}:{UPSTREAM_PORT}")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=GATEWAY_PORT)
    p.add_argument("--runtime-pid", type=int, default=0, help="/healthz fails once this process is gone")
    p.add_argument("--worker", action="store_true", help="node-rank > 0: health endpoints only")
    p.add_argument(
        "--upstream-health-path",
        default="/health",
        help="what /health asks the upstream (the router pod: sglang-router's /readiness)",
    )
    p.add_argument("--workers", type=int, default=1, help="processes sharing the port (SO_REUSEPORT)")
    p.add_argument(
        "--max-body-mib",
        type=float,
        default=DEFAULT_MAX_BODY_BYTES / (1024 * 1024),
        help="request bodies above this many MiB are refused with 413 as they arrive",
    )
    live = p.add_argument_group("live adapters (inference.live_adapters)")
    live.add_argument("--live-adapters", default=None, metavar="FILE", help="the published desired adapter set")
    live.add_argument("--adapter-files", default=None, metavar="DIR", help="where adapter images' files arrive")
    live.add_argument("--adapter-work-dir", default=None, metavar="DIR", help="the served adapter copies")
    live.add_argument("--max-lora-rank", type=int, default=None)
    live.add_argument("--lora-target-modules", nargs="*", default=None)
    live.add_argument("--max-adapters", type=int, default=None)
    live.add_argument(
        "--adapter-names-from",
        default=None,
        metavar="FILE",
        help="serve the names of this desired set (the router pod: replicas load the adapters)",
    )
    ns = p.parse_args(argv)
    served = Served(ns.served_model_name, tuple(ns.adapter), ns.chat_default_adapter)
    if ns.workers < 1:
        p.error("--workers must be at least 1")
    if not 0 < ns.max_body_mib <= 1024:
        p.error("--max-body-mib must be more than 0 and at most 1024")
    if ns.live_adapters and ns.adapter_names_from:
        p.error("--live-adapters and --adapter-names-from exclude each other")
    if ns.live_adapters and (ns.workers > 1 or not ns.adapter_files or not ns.adapter_work_dir):
        p.error("--live-adapters needs --adapter-files and --adapter-work-dir, and one worker process")
    # The gateway talks to its runtime only: nothing it does may reach past this machine.
    egress_guard.install(allowed_hosts=[urlsplit(ns.upstream).hostname or ""])
    app = make_app(
        served,
        ns.upstream,
        ns.runtime_pid,
        ns.worker,
        _live_adapters_factory(ns, served) if ns.live_adapters else None,
        max_body_bytes=int(ns.max_body_mib * 1024 * 1024),
    )
    app[HEALTH_PATH] = ns.upstream_health_path
    if ns.adapter_names_from:
        box = app[SERVED]

        def publish(new: Served) -> None:
            box.current = new

        app.cleanup_ctx.append(NamesFollower(served, ns.adapter_names_from, publish).ctx)
    _fork_workers(ns.workers)
    # handler_cancellation: a client that hangs up cancels its handler, which closes the upstream
    # connection, and SGLang aborts a generation whose HTTP client has gone (aiohttp's default lets the
    # handler, and so the generation, run to completion for nobody).
    web.run_app(
        app,
        host=ns.host,
        port=ns.port,
        access_log=None,
        print=None,
        handler_cancellation=True,
        reuse_port=ns.workers > 1,
    )


if __name__ == "__main__":
    main()
