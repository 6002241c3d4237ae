"""Look through every layer of a pushed image for what must not be there (the build's pip secrets).

The layers are read as the registry serves them (`skopeo copy docker://... dir:`), so what is checked is
what a cluster would pull.
"""

from __future__ import annotations

import json
import subprocess
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import IO

# Paths where a build secret is mounted during a step; a file left there would be a leak in itself.
SECRET_PATHS = ("etc/pip.conf", "run/secrets/")
CHUNK = 1 << 20


def _contains(stream: IO[bytes], needles: Mapping[str, bytes]) -> list[str]:
    longest = max((len(n) for n in needles.values()), default=0)
    found: set[str] = set()
    tail = b""
    while True:
        chunk = stream.read(CHUNK)
        if not chunk:
            break
        window = tail + chunk
        found.update(name for name, needle in needles.items() if needle in window)
        tail = window[-longest:] if longest else b""
    return sorted(found)


def scan_layer(layer: IO[bytes], needles: Mapping[str, bytes]) -> list[str]:
    """'path: what' for each file of one layer (a tar, compressed or not) that holds a needle or sits where
    a secret was mounted."""
    findings: list[str] = []
    with tarfile.open(fileobj=layer, mode="r|*") as tar:
        for member in tar:
            path = member.name.lstrip("./")
            if any(path == p or (p.endswith("/") and path.startswith(p) and path != p) for p in SECRET_PATHS):
                findings.append(f"{path}: a file where a build secret was mounted")
            if not member.isfile():
                continue
            content = tar.extractfile(member)
            if content is not None:
                findings += [f"{path}: {name}" for name in _contains(content, needles)]
    return findings


def scan_image_dir(directory: Path, needles: Mapping[str, bytes]) -> list[str]:
    """Scan each layer of an image copied with `skopeo copy ... dir:<directory>`."""
    manifest = json.loads((directory / "manifest.json").read_text())
    findings = []
    for layer in manifest["layers"]:
        blob = directory / layer["digest"].split(":", 1)[1]
        with blob.open("rb") as stream:
            findings += [f"layer {layer['digest'][:19]}: {f}" for f in scan_layer(stream, needles)]
    return findings


def scan_pushed_image(reference: str, needles: Mapping[str, bytes], workdir: Path) -> list[str]:
    """Copy `reference` (host:port/path:tag on a plain-HTTP loopback registry) and scan its layers."""
    target = workdir / "layers"
    subprocess.run(
        ["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{reference}", f"dir:{target}"],
        check=True,
        capture_output=True,
    )
    return scan_image_dir(target, needles)
