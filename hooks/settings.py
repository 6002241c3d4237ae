"""Settings of the hook server, read once from the environment.

Hooks are pure functions of (request, settings); nothing else about the environment reaches them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from hooks.version import VERSION

IMAGE_REGISTRY = "ghcr.io/kaito-sglang"


def release_image(name: str, version: str = VERSION) -> str:
    """The image `name` of this release: the install (metacontroller/hooks/images.env) names the same."""
    return f"{IMAGE_REGISTRY}/{name}:{version}"


DEFAULT_RUNTIME_IMAGE = release_image("runtime")
DEFAULT_TUNING_IMAGE = release_image("tuning")
# The transformers runtime runs where SGLang's CUDA 13 build cannot (V100, T4): a CUDA 12 image.
DEFAULT_TRANSFORMERS_RUNTIME_IMAGE = release_image("runtime-legacy")
# sglang-router + our gateway, in front of a Workspace's replicas (inference/Dockerfile, target router).
DEFAULT_ROUTER_IMAGE = release_image("router")

NodeProvisioning = Literal["aks", "byo"]
WeightsCache = Literal["node", "pod"]


@dataclass(frozen=True)
class Settings:
    runtime_image: str = DEFAULT_RUNTIME_IMAGE
    transformers_runtime_image: str = DEFAULT_TRANSFORMERS_RUNTIME_IMAGE
    tuning_image: str = DEFAULT_TUNING_IMAGE
    router_image: str = DEFAULT_ROUTER_IMAGE
    # "aks": create a Machine (an AKS agent pool) for every missing node.
    # "byo": bring your own nodes; never create Machines, use labelled nodes only.
    node_provisioning: NodeProvisioning = "aks"
    # How soon Metacontroller should call again while something is still converging.
    resync_seconds: float = 30.0
    # How long a Machine freed by a scale-in is kept (and re-used by a scale-out) before it is deleted; the
    # install sets 600 (metacontroller/hooks/deployment.yaml), 0 releases it as soon as its pods are gone.
    scale_in_grace_seconds: float = 0.0
    # "node": model weights in a node-local cache (hostPath) shared by every pod on the node;
    # "pod": an emptyDir per pod (for clusters whose policy forbids hostPath volumes).
    weights_cache: WeightsCache = "node"
    weights_cache_path: str = "/var/lib/kaito/weights"  # on the OS disk
    weights_cache_nvme_path: str = "/mnt/nvme/kaito/weights"  # on SKUs with local NVMe (mounted there by the node)
    # presetOptions.image weights as an image volume (Kubernetes >= 1.35); false: copied (older clusters).
    image_volumes: bool = True

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        mode = env.get("KAITO_NODE_PROVISIONING", "aks").strip().lower()
        if mode not in ("aks", "byo"):
            raise ValueError(f"KAITO_NODE_PROVISIONING must be 'aks' or 'byo', not {mode!r}")
        return cls(
            runtime_image=env.get("KAITO_RUNTIME_IMAGE", DEFAULT_RUNTIME_IMAGE),
            transformers_runtime_image=env.get("KAITO_TRANSFORMERS_RUNTIME_IMAGE", DEFAULT_TRANSFORMERS_RUNTIME_IMAGE),
            tuning_image=env.get("KAITO_TUNING_IMAGE", DEFAULT_TUNING_IMAGE),
            router_image=env.get("KAITO_ROUTER_IMAGE", DEFAULT_ROUTER_IMAGE),
            node_provisioning=mode,  # type: ignore[arg-type]
            resync_seconds=float(env.get("KAITO_RESYNC_SECONDS", "30")),
            scale_in_grace_seconds=_seconds(env, "KAITO_SCALE_IN_GRACE_SECONDS", 0.0),
            weights_cache=_choice(env, "KAITO_WEIGHTS_CACHE", ("node", "pod"), "node"),  # type: ignore[arg-type]
            weights_cache_path=env.get("KAITO_WEIGHTS_CACHE_PATH", "/var/lib/kaito/weights"),
            weights_cache_nvme_path=env.get("KAITO_WEIGHTS_CACHE_NVME_PATH", "/mnt/nvme/kaito/weights"),
            image_volumes=_choice(env, "KAITO_IMAGE_VOLUMES", ("true", "false"), "true") == "true",
        )


def _choice(env: Mapping[str, str], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = env.get(name, default).strip().lower()
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
    return value


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 7 * 24 * 3600:
        raise ValueError(f"{name} must be a number of seconds between 0 and 604800, not {raw!r}")
    return value
