"""Install the real SGLang server into its own cached virtual environment, outside the repository.

    python3 tests/real_sglang/install_sglang.py [--print-python] [--venv DIR]

Test-only: the `real_sglang` tests start `python -m inference.launch --runtime sglang` with this
venv's interpreter. SGLang pins its own torch (2.14.1) and transformers, which cannot share the test
venv. The venv lives in ~/.cache/kaito-sglang/sglang-<version>-venv (override: KAITO_SGLANG_VENV),
keyed by version and by this script's package plan, and is reused once complete.

SGLang itself is installed with --no-deps, then its Requires-Dist (read from the installed wheel's
metadata) minus the CUDA-only packages, which have no use without a GPU and some of which cannot be
installed next to torch 2.14.1 (torchaudio 2.11 pins another torch). Stdlib only: runs on a bare python3.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

SGLANG_VERSION = "0.5.23"
# SGLang 0.5.23 pins torch 2.14.1; torchvision 0.29.1 is the build against it (sglang imports torchvision).
PINNED = ["torch==2.14.1", "torchvision==0.29.1"]
# Requirements of SGLang that serve CUDA GPUs only (kernels, CUDA bindings, GPU memory tools), plus
# torchaudio/torchcodec, which pin other torch builds and are used only for audio/video inputs.
CUDA_ONLY = {
    "apache-tvm-ffi",
    "cuda-python",
    "flash-attn-4",
    "flashinfer-python",
    "humming-kernels",
    "nvidia-cutlass-dsl",
    "nvidia-mathdx",
    "nvshmem4py-cu13",
    "quack-kernels",
    "sgl-deep-ep",
    "sgl-deep-gemm",
    "sgl-flash-mla",
    "sglang-kernel",
    "tilelang",
    "torch-memory-saver",
    "torchaudio",
    "torchcodec",
}
DONE_MARKER = ".kaito-install-complete"


def plan_key() -> str:
    """Changes whenever what this script installs changes, so a stale venv is rebuilt."""
    text = json.dumps([SGLANG_VERSION, PINNED, sorted(CUDA_ONLY)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def default_venv() -> Path:
    override = os.environ.get("KAITO_SGLANG_VENV")
    if override:
        return Path(override)
    return Path.home() / ".cache" / "kaito-sglang" / f"sglang-{SGLANG_VERSION}-venv"


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def is_complete(venv: Path) -> bool:
    marker = venv / DONE_MARKER
    return marker.is_file() and marker.read_text().strip() == plan_key() and venv_python(venv).exists()


def normalized(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


# Run inside the new venv: SGLang's runtime requirements for this platform, without extras.
_LIST_REQUIREMENTS = """
import json, sys
from importlib.metadata import requires
from pip._vendor.packaging.requirements import Requirement
out = []
for line in requires("sglang") or []:
    req = Requirement(line)
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue
    out.append([req.name, str(req)])
json.dump(out, sys.stdout)
"""


def non_cuda_requirements(python: Path) -> list[str]:
    listed = json.loads(subprocess.check_output([str(python), "-c", _LIST_REQUIREMENTS], text=True))
    # The marker was evaluated already; strip it so pip does not see `extra` markers it cannot handle.
    return [spec.split(";")[0].strip() for name, spec in listed if normalized(name) not in CUDA_ONLY]


QUIET: list[str] = []


def _pip(python: Path, *args: str) -> None:
    cmd = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off", *QUIET, *args]
    print("+ " + " ".join(cmd), flush=True)
    subprocess.check_call(cmd)


def install(venv: Path, base_python: str) -> None:
    version = subprocess.check_output(
        [base_python, "-c", "import sys; print(sys.version_info[:2] >= (3, 11))"], text=True
    ).strip()
    if version != "True":
        raise SystemExit(f"{base_python}: SGLang {SGLANG_VERSION} needs Python >= 3.11 (use --python)")
    # Whatever is there is incomplete or stale (no matching marker): start over.
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.check_call([base_python, "-m", "venv", str(venv)])
    python = venv_python(venv)
    _pip(python, "--upgrade", "pip")
    _pip(python, "--no-deps", f"sglang=={SGLANG_VERSION}")
    requirements = non_cuda_requirements(python)
    # One resolution for everything, so pip cannot pick another torch for a dependency.
    _pip(python, *PINNED, *requirements)
    subprocess.check_call([str(python), "-c", "import sglang.launch_server, torch, torchvision"])
    (venv / DONE_MARKER).write_text(plan_key() + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--venv", type=Path, default=default_venv())
    p.add_argument("--python", default=sys.executable, help="interpreter (>= 3.11) that creates the venv")
    p.add_argument("--print-python", action="store_true", help="print the venv's python if installed, else exit 1")
    p.add_argument("--quiet", action="store_true", help="pip -q")
    ns = p.parse_args(argv)
    if ns.quiet:
        QUIET.append("-q")
    if ns.print_python:
        if not is_complete(ns.venv):
            return 1
        print(venv_python(ns.venv))
        return 0
    if is_complete(ns.venv):
        print(f"SGLang {SGLANG_VERSION} venv ready: {ns.venv}")
        return 0
    started = time.monotonic()
    install(ns.venv, ns.python)
    print(f"SGLang {SGLANG_VERSION} installed into {ns.venv} in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
