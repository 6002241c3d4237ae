"""The argument contract of `python -m inference.launch` (rendered by the workspace hook)."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field

from inference import GATEWAY_PORT, UPSTREAM_PORT


@dataclass(frozen=True)
class AdapterSpec:
    name: str
    strength: float = 1.0


@dataclass(frozen=True)
class LaunchConfig:
    runtime: str
    served_model_name: str
    model: str | None
    weights_dir: str
    adapters_dir: str
    adapters: tuple[AdapterSpec, ...] = ()
    gpus_per_node: int = 1
    nnodes: int = 1
    node_rank: int = 0
    dist_init_addr: str | None = None
    port: int = GATEWAY_PORT
    runtime_port: int = UPSTREAM_PORT
    work_dir: str = "/tmp/adapters"
    dry_run: bool = False
    config_file: str | None = None
    extra_runtime_args: tuple[str, ...] = field(default=())
    weights_cache: str | None = None
    revision: str = "main"
    # Live adapters (inference.live_adapters): the published desired set and where adapter files arrive.
    live_adapters: str | None = None
    adapter_files: str | None = None
    max_lora_rank: int = 64

    @property
    def tp_size(self) -> int:
        return self.gpus_per_node * self.nnodes


class UsageError(ValueError):
    """A launch argument that cannot work; the message names the flag."""


def parse_adapter(text: str) -> AdapterSpec:
    name, sep, strength = text.partition("=")
    name = name.strip()
    if not name:
        raise UsageError(f"--adapter {text!r}: expected NAME or NAME=STRENGTH")
    if not sep:
        return AdapterSpec(name)
    try:
        value = float(strength)
    except ValueError:
        raise UsageError(f"--adapter {text!r}: strength {strength!r} is not a number") from None
    if not math.isfinite(value):
        raise UsageError(f"--adapter {text!r}: strength must be finite")
    return AdapterSpec(name, value)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m inference.launch",
        description="Prepare weights and LoRA adapters, start the gateway on --port, exec the model runtime.",
    )
    p.add_argument("--runtime", choices=["sglang", "transformers"], required=True)
    p.add_argument("--served-model-name", required=True, help="the preset name; clients use it as `model`")
    p.add_argument("--model", default=None, help="HF repo id, fetched into the weights cache and served from there")
    p.add_argument("--revision", default="main", help="branch, tag or commit of --model")
    p.add_argument(
        "--weights-dir",
        required=True,
        help="the weights when no --model is given; else the pod-local cache when no --weights-cache",
    )
    p.add_argument("--weights-cache", default=None, help="the node-local weights cache (see inference.weights_cache)")
    p.add_argument("--adapters-dir", required=True, help="init containers put each adapter in <dir>/<name>")
    p.add_argument("--adapter", action="append", default=[], metavar="NAME[=STRENGTH]")
    p.add_argument("--gpus-per-node", type=int, default=1)
    p.add_argument("--nnodes", type=int, default=1)
    p.add_argument("--node-rank", type=int, default=0)
    p.add_argument("--dist-init-addr", default=None, metavar="HOST:PORT")
    p.add_argument("--port", type=int, default=GATEWAY_PORT)
    p.add_argument("--runtime-port", type=int, default=UPSTREAM_PORT, help="loopback port of the model server")
    p.add_argument("--work-dir", default="/tmp/adapters", help="writable dir for strength-scaled adapter copies")
    p.add_argument(
        "--config-file", default=None, help="inference_config.yaml: its `sglang:` map becomes extra SGLang flags"
    )
    p.add_argument(
        "--live-adapters",
        default=None,
        metavar="FILE",
        help="follow this desired adapter set without restarting the runtime (inference.live_adapters)",
    )
    p.add_argument("--adapter-files", default=None, metavar="DIR", help="with --live-adapters: adapter files by key")
    p.add_argument(
        "--max-lora-rank",
        type=int,
        default=64,
        help="with --live-adapters: the largest adapter rank the runtime makes room for",
    )
    p.add_argument("--dry-run", action="store_true", help="print the runtime argv as JSON (last line) and exit")
    p.add_argument("runtime_args", nargs="*", help="after `--`: extra flags passed to the runtime verbatim")
    return p


def parse_launch_args(argv: list[str]) -> LaunchConfig:
    ns = build_parser().parse_args(argv)
    adapters = tuple(parse_adapter(a) for a in ns.adapter)
    names = [a.name for a in adapters]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UsageError(f"--adapter: duplicate adapter names {dupes}")
    if ":" in ns.served_model_name:
        raise UsageError("--served-model-name must not contain ':' (it separates the adapter in `model`)")
    if ns.gpus_per_node < 1 or ns.nnodes < 1:
        raise UsageError("--gpus-per-node and --nnodes must be >= 1")
    if not 0 <= ns.node_rank < ns.nnodes:
        raise UsageError(f"--node-rank {ns.node_rank} must be in [0, --nnodes {ns.nnodes})")
    if ns.nnodes > 1 and not ns.dist_init_addr:
        raise UsageError("--dist-init-addr HOST:PORT is required when --nnodes > 1")
    if ns.live_adapters and (ns.adapter or not ns.adapter_files):
        raise UsageError("--live-adapters needs --adapter-files and no --adapter (the desired set names the adapters)")
    if ns.max_lora_rank < 1:
        raise UsageError("--max-lora-rank must be >= 1")
    if ns.runtime == "transformers" and ns.nnodes > 1:
        raise UsageError("--runtime transformers serves on a single node only (--nnodes 1)")
    return LaunchConfig(
        runtime=ns.runtime,
        served_model_name=ns.served_model_name,
        model=ns.model,
        weights_dir=ns.weights_dir,
        adapters_dir=ns.adapters_dir,
        adapters=adapters,
        gpus_per_node=ns.gpus_per_node,
        nnodes=ns.nnodes,
        node_rank=ns.node_rank,
        dist_init_addr=ns.dist_init_addr,
        port=ns.port,
        runtime_port=ns.runtime_port,
        work_dir=ns.work_dir,
        dry_run=ns.dry_run,
        config_file=ns.config_file,
        extra_runtime_args=tuple(ns.runtime_args),
        weights_cache=ns.weights_cache,
        revision=ns.revision,
        live_adapters=ns.live_adapters,
        adapter_files=ns.adapter_files,
        max_lora_rank=ns.max_lora_rank,
    )
