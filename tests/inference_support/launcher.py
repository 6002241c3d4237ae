"""Running `python -m inference.launch` in tests: dry runs without torch, sglang or network, and SGLang's parser."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PRESET = "phi-3-mini-128k-instruct"
PHI3_TARGETS = ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]

_GUARD = """
import runpy, socket, sys
for name in ("torch", "sglang", "transformers", "peft", "huggingface_hub"):
    sys.modules[name] = None
def _no_network(*a, **k):
    raise OSError("network use in --dry-run")
socket.socket = _no_network
socket.create_connection = _no_network
sys.argv = ["inference.launch"] + sys.argv[1:]
runpy.run_module("inference.launch", run_name="__main__")
"""


def _guarded(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", _GUARD, *args, "--dry-run"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def dry_run(args: list[str]) -> tuple[int, list[str] | None, str]:
    p = _guarded(args)
    lines = p.stdout.strip().splitlines()
    return p.returncode, (json.loads(lines[-1]) if p.returncode == 0 else None), p.stderr


def dry_run_gateway(args: list[str]) -> list[str]:
    [line] = [x for x in _guarded(args).stdout.splitlines() if x.startswith("gateway: ")]
    return json.loads(line[len("gateway: ") :])


# A single-node launch: one GPU's worth of processes, no peers to wait for.
ONE_NODE = ["--gpus-per-node", "1", "--nnodes", "1", "--node-rank", "0"]


def transformers_launch(
    served: str, weights_dir: Path, adapters_dir: Path, port: int, runtime_port: int, work_dir: Path, *flags: str
) -> list[str]:
    """The module and arguments of `python -m inference.launch` serving `served` with the transformers runtime
    on loopback `port` (its runtime on `runtime_port`), with any further launcher `flags`."""
    return [
        "inference.launch",
        "--runtime",
        "transformers",
        "--served-model-name",
        served,
        "--weights-dir",
        str(weights_dir),
        "--adapters-dir",
        str(adapters_dir),
        *flags,
        "--port",
        str(port),
        "--runtime-port",
        str(runtime_port),
        "--work-dir",
        str(work_dir),
    ]


def make_adapter(root: Path, name: str, r: int, targets) -> None:
    (root / name).mkdir(parents=True)
    (root / name / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": r, "lora_alpha": 2 * r, "target_modules": targets})
    )


def flag(argv: list[str], name: str, n: int = 1):
    i = argv.index(name)
    return argv[i + 1] if n == 1 else argv[i + 1 : i + 1 + n]


def base_args(tmp_path: Path, *extra: str) -> list[str]:
    return [
        "--runtime",
        "sglang",
        "--served-model-name",
        PRESET,
        "--model",
        "microsoft/Phi-3-mini-128k-instruct",
        "--weights-dir",
        str(tmp_path / "weights"),
        "--adapters-dir",
        str(tmp_path / "adapters"),
        "--work-dir",
        str(tmp_path / "work"),
        "--port",
        "5000",
        *extra,
    ]


def sglang_prefix(argv):
    assert argv[0] == sys.executable and argv[1:3] == ["-m", "sglang.launch_server"]
    return argv[3:]


def sglang_parse(args: list[str]):
    server_args = pytest.importorskip(
        "sglang.srt.server_args", reason="sglang is not installed (pip install --no-deps sglang==0.5.23 ...)"
    )
    return server_args.prepare_server_args(args)


def check_lora(sa, names):
    assert sa.enable_lora is True
    loaded = [str(p).split("=", 1)[0] if isinstance(p, str) else getattr(p, "lora_name", None) for p in sa.lora_paths]
    assert loaded == names
