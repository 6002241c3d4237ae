"""The project's version (pyproject.toml is its one source) and the images a release publishes."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_REGISTRY = "ghcr.io/kaito-sglang"
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
# PEP 440 release versions as tags use them (0.1.0, 1.2.3rc1); no local versions, no "latest".
VERSION = re.compile(r"^\d+\.\d+\.\d+(?:(?:a|b|rc)\d+)?$")
# host[:port]/path, lower case as registries require (GitHub owners may have capitals: lower them first).
REGISTRY = re.compile(r"^[a-z0-9.-]+(?::\d+)?(?:/[a-z0-9._-]+)+$")


@dataclass(frozen=True)
class Image:
    name: str  # the repository under the registry: ghcr.io/kaito-sglang/<name>
    dockerfile: str
    target: str | None  # the Dockerfile stage, None for the last one
    platforms: tuple[str, ...]
    env: str | None  # the hook server setting that names it (None: the hook Deployment's own image)
    # The Dockerfile's build args that name the bases this target is built from. The release passes none
    # (the Dockerfile's pinned defaults); `make images` replaces exactly these with local bases where the
    # pinned ones cannot be pulled (release/local_bases.py).
    base_args: tuple[str, ...]
    context: str = "."  # the build context, relative to the repository root


IMAGES = (
    Image("hooks", "hooks/Dockerfile", None, ("linux/amd64", "linux/arm64"), None, ("PYTHON_IMAGE",)),
    Image(
        "runtime",
        "inference/Dockerfile",
        "runtime",
        ("linux/amd64",),
        "KAITO_RUNTIME_IMAGE",
        ("DEBIAN_IMAGE", "SGLANG_IMAGE"),
    ),
    Image(
        "runtime-legacy",
        "inference/Dockerfile",
        "runtime-legacy",
        ("linux/amd64",),
        "KAITO_TRANSFORMERS_RUNTIME_IMAGE",
        ("DEBIAN_IMAGE", "PYTORCH_IMAGE"),
    ),
    Image(
        "tuning", "tuning/Dockerfile", None, ("linux/amd64",), "KAITO_TUNING_IMAGE", ("DEBIAN_IMAGE", "PYTORCH_IMAGE")
    ),
    # sglang-router + our gateway in front of a Workspace's replicas (no CUDA).
    Image("router", "inference/Dockerfile", "router", ("linux/amd64",), "KAITO_ROUTER_IMAGE", ("PYTHON_IMAGE",)),
)


def image_named(name: str) -> Image:
    for image in IMAGES:
        if image.name == name:
            return image
    raise ValueError(f"no image {name!r}; the images are {', '.join(i.name for i in IMAGES)}")


def github_matrix() -> dict[str, list[dict[str, str]]]:
    """The release workflow's build matrix: what it builds comes from IMAGES, never from a copy in YAML."""
    return {
        "include": [
            {
                "image": image.name,
                "context": image.context,
                "dockerfile": image.dockerfile,
                "target": image.target or "",
                "platforms": ",".join(image.platforms),
            }
            for image in IMAGES
        ]
    }


def project_version(pyproject: Path = REPO / "pyproject.toml") -> str:
    version = tomllib.loads(pyproject.read_text())["project"]["version"]
    check_version(version)
    return version


def check_version(version: str) -> str:
    if not VERSION.match(version):
        raise ValueError(
            f"version {version!r} is not a release version like 1.2.3 or 1.2.3rc1 (pyproject.toml [project] version)"
        )
    return version


def check_digest(name: str, digest: str) -> str:
    if not DIGEST.match(digest):
        raise ValueError(f"digest of image {name!r} must look like sha256:<64 hex digits>, not {digest!r}")
    return digest


def check_registry(registry: str) -> str:
    if not REGISTRY.match(registry):
        raise ValueError(f"registry {registry!r} must be host/path in lower case, e.g. {DEFAULT_REGISTRY}")
    return registry


def image_ref(name: str, version: str, registry: str = DEFAULT_REGISTRY, digest: str | None = None) -> str:
    """registry/name:version, and @digest when the release knows it (the tag stays for people; the digest wins)."""
    ref = f"{check_registry(registry)}/{name}:{check_version(version)}"
    return f"{ref}@{check_digest(name, digest)}" if digest else ref


def version_of_tag(tag: str, version: str) -> str:
    """The release for git tag v<version>; refuses a tag that does not name pyproject's version."""
    if tag != f"v{version}":
        raise ValueError(
            f"tag {tag!r} does not match pyproject.toml's version {version!r}: tag v{version}, or change the version"
        )
    return version


if __name__ == "__main__":
    # `python -m release.images` prints the version, for shell commands; `--matrix` prints the release
    # workflow's build matrix as a step output line (matrix=<json>) for $GITHUB_OUTPUT.
    import json
    import sys

    if sys.argv[1:] == ["--matrix"]:
        print("matrix=" + json.dumps(github_matrix(), separators=(",", ":")))
    else:
        print(project_version())
