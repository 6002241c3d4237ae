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


def dry_run(args: list[str]) -> tuple[int, list[str] | None, str]:
    p = subprocess.run(
        [sys.executable, "-c", _GUARD, *args, "--dry-run"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    lines = p.stdout.strip().splitlines()
    return p.returncode, (json.loads(lines[-1]) if p.returncode == 0 else None), p.stderr


def dry_run_gateway(args: list[str]) -> list[str]:
    p = subprocess.run(
        [sys.executable, "-c", _GUARD, *args, "--dry-run"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    [line] = [x for x in p.stdout.splitlines() if x.startswith("gateway: ")]
    return json.loads(line[len("gateway: ") :])


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
