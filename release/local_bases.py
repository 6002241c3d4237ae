"""Local stand-ins for the Dockerfiles' pinned bases, for machines that cannot pull them (no Docker Hub).

    python -m release.local_bases [python] [pytorch] [sglang]     # make them (all by default)

- python: Debian bookworm with its Python 3.11, pip and venv, made by mmdebstrap from this machine's apt
  sources; it stands for python:3.11-slim-bookworm and for debian:bookworm-slim (a superset of it).
- pytorch: that plus torch 2.7.1 from PyPI (the CUDA 12.6 build), for pytorch/pytorch:2.7.1-cuda12.6-...
- sglang: that plus SGLang 0.5.23 as the real-SGLang tests install it (no CUDA-only kernels), for
  lmsysorg/sglang:v0.5.23. It can run SGLang on CPU; it is not the CUDA image.

Each is tagged by a hash of what makes it, so a change rebuilds it; an existing one is reused.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from release.container_engine import Engine, build_argv
from release.images import REPO, Image

BASES_DIR = Path(__file__).resolve().parent / "bases"
SUITE = "bookworm"
ROOTFS_PACKAGES = ("python3", "python3-venv", "python3-pip", "python-is-python3", "ca-certificates", "passwd")
# The official Python image has no PEP 668 marker: pip installs into the system Python, as the Dockerfiles do.
ROOTFS_HOOK = 'rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED'
ROOTFS_ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8")
ROOTFS_CMD = ("python3",)


@dataclass(frozen=True)
class LocalBase:
    name: str
    stands_for: str
    containerfile: str | None  # under release/bases/; None for the mmdebstrap root filesystem
    built_from: str | None  # the local base its Containerfile starts FROM (its PYTHON_IMAGE build arg)


BASES = {
    "python": LocalBase("python", "python:3.11-slim-bookworm, debian:bookworm-slim", None, None),
    "pytorch": LocalBase("pytorch", "pytorch/pytorch:2.7.1-cuda12.6-cudnn9-runtime", "pytorch.Containerfile", "python"),
    "sglang": LocalBase("sglang", "lmsysorg/sglang:v0.5.23", "sglang.Containerfile", "python"),
}
# Which local base replaces each base build arg of the Dockerfiles.
FOR_BUILD_ARG = {
    "PYTHON_IMAGE": "python",
    "DEBIAN_IMAGE": "python",
    "PYTORCH_IMAGE": "pytorch",
    "SGLANG_IMAGE": "sglang",
}


def recipe_key(base: LocalBase) -> str:
    """Changes whenever what makes the base changes (its Containerfile, the files it copies, its parent)."""
    parts = [SUITE, *ROOTFS_PACKAGES, ROOTFS_HOOK, *ROOTFS_ENV]
    if base.containerfile:
        text = (BASES_DIR / base.containerfile).read_text()
        parts.append(text)
        for line in text.splitlines():
            if line.startswith("COPY "):
                parts.append((REPO / line.split()[1]).read_text())
    if base.built_from:
        parts.append(recipe_key(BASES[base.built_from]))
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]


def base_ref(name: str) -> str:
    return f"localhost/kaito-base/{name}:{recipe_key(BASES[name])}"


def build_args_for(image: Image) -> dict[str, str]:
    """The local base for each base build arg of `image`."""
    unknown = [arg for arg in image.base_args if arg not in FOR_BUILD_ARG]
    if unknown:
        raise ValueError(f"image {image.name}: no local base for build arg(s) {unknown} (release/local_bases.py)")
    return {arg: base_ref(FOR_BUILD_ARG[arg]) for arg in image.base_args}


def bases_needed(images: Sequence[Image]) -> list[str]:
    """The local bases, parents first, that `images` are built from."""
    names: list[str] = []
    for image in images:
        for arg in image.base_args:
            chain = []
            name: str | None = FOR_BUILD_ARG[arg]
            while name:
                chain.append(name)
                name = BASES[name].built_from
            names += [n for n in reversed(chain) if n not in names]
    return names


def mmdebstrap_argv(tarball: Path) -> list[str]:
    return [
        "mmdebstrap",
        "--quiet",
        "--variant=apt",
        f"--include={','.join(ROOTFS_PACKAGES)}",
        f"--customize-hook={ROOTFS_HOOK}",
        SUITE,
        str(tarball),
    ]


def ensure(engine: Engine, name: str, secrets: Sequence[tuple[str, Path]]) -> str:
    """The local base `name`, made if it is not there yet; returns its reference."""
    ref = base_ref(name)
    if engine.exists(ref):
        return ref
    base = BASES[name]
    started = time.monotonic()
    if base.containerfile is None:
        with tempfile.TemporaryDirectory(prefix="kaito-rootfs-") as tmp:
            tarball = Path(tmp) / "rootfs.tar"
            subprocess.run(mmdebstrap_argv(tarball), check=True)
            engine.import_rootfs(tarball, ref, ROOTFS_ENV, ROOTFS_CMD)
    else:
        assert base.built_from is not None
        parent = ensure(engine, base.built_from, secrets)
        argv = build_argv(
            engine.builder,
            str(BASES_DIR / base.containerfile),
            None,
            str(REPO),
            ref,
            {"PYTHON_IMAGE": parent},
            secrets,
        )
        engine.run(argv, cwd=REPO)
    print(f"local base {ref} (for {base.stands_for}) made in {time.monotonic() - started:.0f} s", flush=True)
    return ref


def main(argv: list[str]) -> int:
    from release.build_images import machine_pip_settings
    from release.pip_secrets import write_secrets

    names = argv or list(BASES)
    unknown = [n for n in names if n not in BASES]
    if unknown:
        print(f"release.local_bases: unknown base(s) {unknown}; the bases are {', '.join(BASES)}", file=sys.stderr)
        return 2
    engine = Engine.detect()
    with tempfile.TemporaryDirectory(prefix="kaito-pip-secrets-") as tmp:
        secrets = write_secrets(machine_pip_settings(), Path(tmp))
        for name in names:
            print(ensure(engine, name, secrets))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
