"""presetOptions.image weights without image volumes: streamed from a real registry (the docker-registry
Debian package on loopback, image pushed by skopeo) into the node cache, only /data kept, on disk once."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from tuning_support import registry as reg_support

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (shutil.which("docker-registry") and shutil.which("skopeo")),
                       reason="docker-registry and skopeo are not installed (make system-packages)"),
]  # fmt: skip
REPO = Path(__file__).resolve().parents[1]
RND = random.Random(7)
WEIGHTS = {"config.json": b'{"model_type": "llama"}', "model.safetensors": RND.randbytes(3 << 20)}


# Not test_images_definition's layer(): an OCI layer needs the digest of the uncompressed tar (its diff_id).
def _layer(entries: dict[str, bytes]) -> tuple[bytes, str]:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    plain = raw.getvalue()
    return gzip.compress(plain), "sha256:" + hashlib.sha256(plain).hexdigest()


def oci_layout(directory: Path) -> None:
    """An image whose first layer holds the weights, a tool outside /data and a file the second layer deletes."""
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> dict:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return {"digest": f"sha256:{digest}", "size": len(data)}

    first, first_id = _layer({**{f"data/{k}": v for k, v in WEIGHTS.items()}, "data/old.bin": b"stale",
                              "usr/bin/tool": b"not weights"})  # fmt: skip
    second, second_id = _layer({"data/.wh.old.bin": b""})
    config = put(json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                             "rootfs": {"type": "layers", "diff_ids": [first_id, second_id]}}).encode())  # fmt: skip
    layer_type = "application/vnd.oci.image.layer.v1.tar+gzip"
    manifest = put(json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
        "layers": [{"mediaType": layer_type, **put(first)}, {"mediaType": layer_type, **put(second)}],
    }).encode())  # fmt: skip
    (directory / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", **manifest,
        "annotations": {"org.opencontainers.image.ref.name": "1"}}]}))  # fmt: skip
    (directory / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')


def pull(image: str, cache: Path, link: Path, docker_config: Path | None) -> tuple[int, dict | None, str]:
    args = [sys.executable, "-m", "inference.image_weights", "--image", image, "--cache", str(cache),
            "--link", str(link), "--plain-http", "--termination-log", os.devnull]  # fmt: skip
    if docker_config:
        args += ["--docker-config", str(docker_config)]
    p = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    doc = json.loads(p.stdout.strip().splitlines()[-1]) if p.returncode == 0 else None
    return p.returncode, doc, p.stderr


@pytest.mark.parametrize("auth", [None, "token"])
def test_image_weights_stream_into_the_node_cache_once(tmp_path, auth):
    oci_layout(tmp_path / "oci")
    (tmp_path / "reg").mkdir()
    with reg_support.running_registry(str(tmp_path / "reg"), auth=auth) as reg:
        image = f"{reg['host']}/weights/llama:1"
        creds = ["--dest-creds", f"{reg['user']}:{reg['password']}"] if auth else []
        res = reg_support.skopeo(
            "copy", "--dest-tls-verify=false", *creds, f"oci:{tmp_path / 'oci'}:1", f"docker://{image}"
        )
        assert res.returncode == 0, res.stderr
        config = None
        if auth:
            config = tmp_path / "config.json"
            config.write_text(
                json.dumps({"auths": {reg["host"]: {"username": reg["user"], "password": reg["password"]}}})
            )
            code, _doc, err = pull(image, tmp_path / "nocreds-cache", tmp_path / "w0", None)
            assert code == 1 and "401" in err  # without the pull secret the registry refuses
        cache, link = tmp_path / "node-cache", tmp_path / "weights"
        code, first, err = pull(image, cache, link, config)
        assert code == 0, err
        assert first["cached"] is False and link.is_symlink()
        assert {p.name: p.read_bytes() for p in link.iterdir()} == WEIGHTS  # no tool, no deleted file
        entry_bytes = sum(p.stat().st_size for p in Path(os.path.realpath(link)).rglob("*") if p.is_file())
        assert entry_bytes == sum(map(len, WEIGHTS.values()))  # the weights are on disk once, nothing else

        code, second, err = pull(image, cache, tmp_path / "weights2", config)
        assert code == 0 and second["cached"] is True, err  # a second pod on the node pulls nothing

        (Path(os.path.realpath(link)) / "model.safetensors").write_bytes(b"truncated")
        code, third, err = pull(image, cache, link, config)
        assert code == 0 and third["cached"] is False and "damaged" in err
        assert (link / "model.safetensors").read_bytes() == WEIGHTS["model.safetensors"]


def test_parse_ref():
    from inference.image_weights import parse_ref

    assert parse_ref("myacr.azurecr.io/models/llama:1").registry == "myacr.azurecr.io"
    assert parse_ref("ubuntu").repository == "library/ubuntu" and parse_ref("ubuntu").reference == "latest"
    ref = parse_ref("127.0.0.1:5000/a/b@sha256:abc")
    assert (ref.registry, ref.repository, ref.reference) == ("127.0.0.1:5000", "a/b", "sha256:abc")
