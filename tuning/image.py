"""Pure construction of the adapter OCI image: one gzip layer with data/<two files>, config, manifest.

Byte-for-byte deterministic (fixed mtimes, owners and gzip header) so the same adapter always gives the
same layer digest.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
PRESET_ANNOTATION = "sh.kaito.model.name"


@dataclass(frozen=True)
class Blob:
    data: bytes
    media_type: str

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.data).hexdigest()

    def descriptor(self) -> dict:
        return {"mediaType": self.media_type, "digest": self.digest, "size": len(self.data)}


def _tar_info(name: str, size: int, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode = 0o755 if directory else 0o644
    info.size = 0 if directory else size
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def layer_tar(source_dir: str) -> bytes:
    """Uncompressed tar holding data/ and exactly the two adapter files under it."""
    missing = [f for f in ADAPTER_FILES if not os.path.isfile(os.path.join(source_dir, f))]
    if missing:
        raise FileNotFoundError(f"{source_dir} lacks {', '.join(missing)}")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(_tar_info("data", 0, directory=True))
        for name in ADAPTER_FILES:
            path = os.path.join(source_dir, name)
            with open(path, "rb") as f:
                tar.addfile(_tar_info(f"data/{name}", os.path.getsize(path)), f)
    return buf.getvalue()


def gzip_bytes(raw: bytes) -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=6) as gz:
        gz.write(raw)
    return out.getvalue()


def image_config(diff_id: str) -> Blob:
    """A minimal runnable image config: the pod sets the command, so no Entrypoint/Cmd."""
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "kaito-sglang tuning.push: adapter files under /data", "comment": "adapter"}],
    }
    return Blob(json.dumps(config, sort_keys=True, separators=(",", ":")).encode(), CONFIG_MEDIA_TYPE)


def build_adapter_image(source_dir: str, preset: str | None) -> tuple[Blob, Blob, dict]:
    """(layer, config, manifest) for the adapter in `source_dir`; the manifest names the base preset."""
    raw = layer_tar(source_dir)
    layer = Blob(gzip_bytes(raw), LAYER_MEDIA_TYPE)
    config = image_config("sha256:" + hashlib.sha256(raw).hexdigest())
    manifest: dict = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": config.descriptor(),
        "layers": [layer.descriptor()],
    }
    if preset:
        manifest["annotations"] = {PRESET_ANNOTATION: preset}
    return layer, config, manifest
