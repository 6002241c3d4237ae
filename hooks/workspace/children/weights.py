"""Where a pod's model weights come from, and how long its startup probe waits for the model to load.

- HuggingFace presets: the node-local weights cache (a hostPath on the SKU's NVMe where it has one, else
  on the OS disk; inference/weights_cache/cache.py describes it), filled by the `model-weights` init container
  (`python -m inference.weights`), whose termination message reports the cold-start "weights" phase.
  With KAITO_WEIGHTS_CACHE=pod the cache is an emptyDir instead (no hostPath; every pod downloads).
- presetOptions.image: an image volume (Kubernetes >= 1.35, beta, on by default) mounts the image's
  /data read-only: nothing is copied. With KAITO_IMAGE_VOLUMES=false (older clusters) the `model-weights`
  init container streams the image's /data from the registry into the node cache instead
  (inference/image_weights.py), so the weights are on the node once, not as image layers plus a copy.
- Writers and readers: only the `model-weights` init container (our code) mounts the cache read-write. The
  model container (and the tuning Job's trainer) mounts one folder of it read-only, its own model's `models/<org>--<name>` (for an image
  without image volumes, the image's folder), at the same path: it reads the files and holds the entry's
  `use` lock shared, but cannot change a file, marker or lock, and sees no other model on the node.
  The init container names the pod's namespace (downward API), whose Hub access the cache records.
- Startup probe budget: the main container starts after the weights are on the node, so the probe only
  waits for the model server to read them and get ready:
      min(CAP, max(preset readiness_timeout_minutes, BASE + weights / LOAD_BANDWIDTH))
  LOAD_BANDWIDTH = 100 MB/s, below the ~125 MB/s an Azure managed OS disk gives (the slowest disk the
  cache lands on); BASE = 10 min for the runtime's own start (CUDA graphs, kernels); CAP = 2 h.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

from hooks.settings import Settings
from hooks.workspace.catalog import Preset, Sku
from hooks.workspace.children.pod_parts import chown_container

WEIGHTS_DIR = "/workspace/weights"
CACHE_MOUNT = "/mnt/weights-cache"
CACHE_VOLUME = "weights-cache"
WEIGHTS_VOLUME = "model-weights"

GIB = 1 << 30
LOAD_BANDWIDTH_BYTES_PER_S = 100_000_000
STARTUP_BASE_SECONDS = 600
STARTUP_CAP_SECONDS = 2 * 3600


def startup_budget_seconds(preset: Preset) -> int:
    by_size = STARTUP_BASE_SECONDS + preset.weights * GIB / LOAD_BANDWIDTH_BYTES_PER_S
    return int(min(STARTUP_CAP_SECONDS, max(preset.readiness_timeout_minutes * 60, math.ceil(by_size))))


def node_cache_path(sku: Sku, settings: Settings, os_disk_only: bool = False) -> str:
    """`os_disk_only`: the node may be deallocated (scaleDownMode Deallocate), which keeps the OS disk and
    loses local NVMe; the cache is worth keeping only where it survives."""
    return settings.weights_cache_nvme_path if sku.nvme and not os_disk_only else settings.weights_cache_path


def cache_volume(sku: Sku, settings: Settings, os_disk_only: bool = False) -> dict:
    if settings.weights_cache == "pod":
        return {"name": CACHE_VOLUME, "emptyDir": {}}
    return {
        "name": CACHE_VOLUME,
        "hostPath": {"path": node_cache_path(sku, settings, os_disk_only), "type": "DirectoryOrCreate"},
    }


def cache_mount(read_only: bool = False) -> dict:
    mount: dict[str, Any] = {"name": CACHE_VOLUME, "mountPath": CACHE_MOUNT}
    if read_only:
        mount["readOnly"] = True
    return mount


def model_folder(hf_repo: str | None, preset_image: str | None) -> str:
    """The cache folder of one model, relative to the cache root (inference/weights_cache/cache.py's layout;
    for an image, inference.image_weights.cache_repo: a hash of the reference as written)."""
    if hf_repo:
        return "models/" + hf_repo.replace("/", "--")
    return "models/image--" + hashlib.sha256((preset_image or "").encode()).hexdigest()[:32]


def reader_mount(hf_repo: str | None, preset_image: str | None) -> dict:
    """The model container's view of the cache: its own model's folder, read-only, at the same path."""
    folder = model_folder(hf_repo, preset_image)
    return {"name": CACHE_VOLUME, "mountPath": f"{CACHE_MOUNT}/{folder}", "subPath": folder, "readOnly": True}


def cache_owner_container(image: str, settings: Settings) -> list[dict]:
    """The node cache's folder handed to the images' user, once per pod start (none for a pod's own cache)."""
    if settings.weights_cache == "pod":
        return []
    return [chown_container("weights-cache-owner", image, cache_mount())]


def fetch_container(image: str, preset: Preset, env: list[dict]) -> dict:
    """Downloads (or waits for another pod on the node downloading) and verifies the weights. It runs
    before the main container, so no probe can kill a long download, and its start/finish times and
    termination message are the "weights" phase of the Workspace's cold-start status."""
    container = {
        "name": WEIGHTS_VOLUME,
        "image": image,
        "command": ["python", "-m", "inference.weights", "--model", preset.hf_repo, "--cache", CACHE_MOUNT,
                    "--namespace", "$(POD_NAMESPACE)"],
        "terminationMessagePolicy": "File",
        "volumeMounts": [cache_mount()],
        "env": [NAMESPACE_ENV, *env],
    }  # fmt: skip
    return container


# Whose Hub access the cache records and checks (inference/weights_cache/access.py).
NAMESPACE_ENV = {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}


LINK_DIR = "/mnt/weights-link"
LINK_VOLUME = "weights-link"
PULL_SECRETS_DIR = "/mnt/pull-secrets"


def weights_dir(preset_image: str | None, settings: Settings) -> str:
    """The launcher's --weights-dir: the image volume's mount, or the link to the pulled image's cache entry
    (HuggingFace weights: the launcher finds them in the cache; this dir then stays unused)."""
    if preset_image and not settings.image_volumes:
        return f"{LINK_DIR}/weights"
    return WEIGHTS_DIR


def link_volume() -> dict:
    return {"name": LINK_VOLUME, "emptyDir": {}}


def link_mount(read_only: bool = False) -> dict:
    mount: dict[str, Any] = {"name": LINK_VOLUME, "mountPath": LINK_DIR}
    if read_only:
        mount["readOnly"] = True
    return mount


def image_pull_container(image: str, preset_image: str, pull_secrets: list[str]) -> tuple[list[dict], dict]:
    """(secret volumes, init container) streaming presetOptions.image's /data into the node cache
    (inference/image_weights.py): the weights land on the node once, not as image layers plus a copy."""
    volumes, mounts, args = [], [cache_mount(), link_mount()], []
    for i, secret in enumerate(pull_secrets):
        name = f"pull-secret-{i}"
        volumes.append(
            {
                "name": name,
                "secret": {"secretName": secret, "items": [{"key": ".dockerconfigjson", "path": "config.json"}]},
            }
        )
        mounts.append({"name": name, "mountPath": f"{PULL_SECRETS_DIR}/{i}", "readOnly": True})
        args += ["--docker-config", f"{PULL_SECRETS_DIR}/{i}/config.json"]
    container = {
        "name": WEIGHTS_VOLUME,
        "image": image,
        "command": ["python", "-m", "inference.image_weights", "--image", preset_image, "--cache", CACHE_MOUNT,
                    "--link", f"{LINK_DIR}/weights", *args],
        "terminationMessagePolicy": "File",
        "volumeMounts": mounts,
    }  # fmt: skip
    return volumes, container


def image_volume(image: str) -> tuple[dict, dict]:
    """(volume, mount): presetOptions.image's /data at WEIGHTS_DIR, mounted read-only by the kubelet."""
    volume = {"name": WEIGHTS_VOLUME, "image": {"reference": image, "pullPolicy": "IfNotPresent"}}
    mount = {"name": WEIGHTS_VOLUME, "mountPath": WEIGHTS_DIR, "subPath": "data", "readOnly": True}
    return volume, mount
