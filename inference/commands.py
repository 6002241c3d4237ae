"""Pure builders of the argv lists the launcher execs / spawns."""

from __future__ import annotations

import os
import sys

from inference import UPSTREAM_HOST
from inference.adapters import ALL_MODULES, PreparedAdapter, chat_default_adapter, max_rank, union_target_modules
from inference.launch_args import LaunchConfig


def _server(module: str, cfg: LaunchConfig, python: str) -> list[str]:
    """Both runtimes serve the local weights under the preset's name on the loopback port."""
    return [
        python,
        "-m",
        module,
        "--model-path",
        cfg.weights_dir,
        "--served-model-name",
        cfg.served_model_name,
        "--host",
        UPSTREAM_HOST,
        "--port",
        str(cfg.runtime_port),
    ]


def sglang_argv(cfg: LaunchConfig, adapters: list[PreparedAdapter], python: str = sys.executable) -> list[str]:
    argv = _server("sglang.launch_server", cfg, python) + ["--tp-size", str(cfg.tp_size), "--enable-metrics"]
    if cfg.nnodes > 1:
        assert cfg.dist_init_addr, "parse_launch_args requires --dist-init-addr with --nnodes > 1"
        argv += ["--nnodes", str(cfg.nnodes), "--node-rank", str(cfg.node_rank), "--dist-init-addr", cfg.dist_init_addr]
    if cfg.live_adapters:
        # Room for the adapters that arrive later: any supported module, up to --max-lora-rank.
        argv += [
            "--enable-lora",
            "--lora-strict-loading",
            "--max-lora-rank",
            str(cfg.max_lora_rank),
            "--max-loras-per-batch",
            str(max_loras_per_batch([])),
            "--lora-target-modules",
            ALL_MODULES,
        ]
    elif adapters:
        argv += [
            "--enable-lora",
            "--lora-strict-loading",
            "--max-lora-rank",
            str(max_rank(adapters)),
            "--max-loras-per-batch",
            str(max_loras_per_batch(adapters)),
            "--lora-target-modules",
            *union_target_modules(adapters),
            "--lora-paths",
            *[f"{a.name}={a.path}" for a in adapters],
        ]
    return argv + list(cfg.extra_runtime_args)


def max_loras_per_batch(adapters: list[PreparedAdapter]) -> int:
    """Every adapter and the base model (it takes a slot too) fit in one batch; SGLang's default is 8."""
    return max(8, len(adapters) + 1)


def transformers_argv(cfg: LaunchConfig, adapters: list[PreparedAdapter], python: str = sys.executable) -> list[str]:
    argv = _server("inference.hf_server", cfg, python)
    for a in adapters:
        argv += ["--lora", f"{a.name}={a.path}"]
    return argv + list(cfg.extra_runtime_args)


def runtime_argv(cfg: LaunchConfig, adapters: list[PreparedAdapter], python: str = sys.executable) -> list[str]:
    if cfg.runtime == "sglang":
        return sglang_argv(cfg, adapters, python)
    return transformers_argv(cfg, adapters, python)


def gateway_argv(
    cfg: LaunchConfig, runtime_pid: int, python: str = sys.executable, adapters: list[PreparedAdapter] | None = None
) -> list[str]:
    """`adapters`: the prepared ones (with the combined adapter); None: the names on the command line."""
    argv = [
        python,
        "-m",
        "inference.gateway",
        "--served-model-name",
        cfg.served_model_name,
        "--upstream",
        f"http://{UPSTREAM_HOST}:{cfg.runtime_port}",
        "--port",
        str(cfg.port),
        "--runtime-pid",
        str(runtime_pid),
    ]
    if cfg.node_rank > 0:
        argv.append("--worker")
    names = [a.name for a in (cfg.adapters if adapters is None else adapters)]
    for name in names:
        argv += ["--adapter", name]
    default = chat_default_adapter(adapters) if adapters is not None else None
    if default:
        argv += ["--chat-default-adapter", default]
    if cfg.live_adapters and cfg.node_rank == 0:
        assert cfg.adapter_files, "parse_launch_args requires --adapter-files with --live-adapters"
        argv += [
            "--live-adapters",
            cfg.live_adapters,
            "--adapter-files",
            cfg.adapter_files,
            "--adapter-work-dir",
            os.path.join(cfg.work_dir, "live"),
            "--max-lora-rank",
            str(cfg.max_lora_rank),
            "--lora-target-modules",
            ALL_MODULES,
        ]
    return argv
