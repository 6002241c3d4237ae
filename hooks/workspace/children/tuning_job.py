"""The tuning Job: fetch the data, train on the GPU node, push the adapter as an image.

Init containers run in order (input, then the trainer); the pusher is the main container, so it
starts only after training succeeded, and it alone sees the push secret.
"""

from __future__ import annotations

import copy
from typing import Any

from hooks import naming
from hooks.settings import Settings
from hooks.workspace.api import Workspace
from hooks.workspace.children import pod_parts as m
from hooks.workspace.children import weights
from hooks.workspace.planning import TuningPlan
from workload_contract.training_templates import default_training_config

DATA_DIR = "/mnt/data"
RESULTS_DIR = "/mnt/results"
CONFIG_DIR = "/mnt/config"
WEIGHTS_DIR = "/workspace/weights"
DOCKER_CONFIG = "/root/.docker/config.json"


def config_map(ws: Workspace, plan: TuningPlan) -> dict | None:
    """The effective training config, when the user named no ConfigMap of their own."""
    if plan.tuning.config:
        return None
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": naming.tuning_config_map(ws.name),
            "namespace": ws.namespace,
            "labels": m.workspace_labels(ws),
        },
        "data": {"training_config.yaml": default_training_config(plan.tuning.method)},
    }


def _input_containers(plan: TuningPlan, settings: Settings) -> tuple[list[dict], list[dict]]:
    """(init containers, extra volumes) that put the training data into /mnt/data."""
    src = plan.tuning.input
    mount = {"name": "data", "mountPath": DATA_DIR}
    if src.urls:
        return [
            {
                "name": "data-download",
                "image": settings.tuning_image,
                # `$$` keeps the kubelet from expanding `$(VAR)` inside a URL: the downloader gets it verbatim.
                "command": [
                    "python",
                    "-m",
                    "tuning.download",
                    "--dest",
                    DATA_DIR,
                    *(u.replace("$", "$$") for u in src.urls),
                ],
                "volumeMounts": [mount],
            }
        ], []
    if src.image:
        return [
            m.copier_init_container(settings.tuning_image),
            m.copy_from_image("data-input", src.image, "data", DATA_DIR, DATA_DIR),
        ], [m.tools_volume()]
    return [], []


PRIVATE_WEIGHTS_VOLUME = "preset-weights"


def _weights_from_preset_image(image: str, settings: Settings, init: list[dict], volumes: list[dict]) -> dict:
    """A private preset (presetOptions.image) is tuned from the weights in its image, never from HuggingFace:
    mounted at WEIGHTS_DIR as an image volume, or (KAITO_IMAGE_VOLUMES=false) copied there. Returns the
    trainer's mount of them."""
    if settings.image_volumes:
        volume, mount = weights.image_volume(image)
        volumes.append(volume)
        return {**mount, "mountPath": WEIGHTS_DIR}
    if not any(v["name"] == "kaito-tools" for v in volumes):
        volumes.append(m.tools_volume())
    if not any(c["name"] == "install-copier" for c in init):
        init.append(m.copier_init_container(settings.tuning_image))
    volumes.append({"name": PRIVATE_WEIGHTS_VOLUME, "emptyDir": {}})
    init.append(m.copy_from_image("model-weights-copy", image, PRIVATE_WEIGHTS_VOLUME, WEIGHTS_DIR, WEIGHTS_DIR))
    return {"name": PRIVATE_WEIGHTS_VOLUME, "mountPath": WEIGHTS_DIR, "readOnly": True}


def _weights_from_cache(
    plan: TuningPlan, settings: Settings, init: list[dict], volumes: list[dict], token_env: list[dict]
) -> tuple[dict, list[str]]:
    """A HuggingFace preset comes through the node weights cache, as a model pod's does: the `model-weights`
    init container (our code, with the job's token and namespace) downloads and verifies it; the trainer
    mounts only that model's folder, read-only, so a tuning pod cannot change a file, marker or lock that
    another namespace's pods trust. Returns (the trainer's mount, its flags)."""
    volumes.append(weights.cache_volume(plan.sku, settings, os_disk_only=plan.scale_down_mode == "Deallocate"))
    init += weights.cache_owner_container(settings.tuning_image, settings)
    init.append(weights.fetch_container(settings.tuning_image, plan.preset, token_env))
    flags = ["--model-repo", plan.preset.hf_repo, "--weights-cache", weights.CACHE_MOUNT]
    return weights.reader_mount(plan.preset.hf_repo, None), flags


def job(ws: Workspace, plan: TuningPlan, settings: Settings) -> dict:
    t = plan.tuning
    shm, shm_mount = m.shm_volume()
    data_volume = (
        {"name": "data", **copy.deepcopy(t.input.volumeSource)}
        if t.input.volumeSource
        else {"name": "data", "emptyDir": {}}
    )
    results_volume = (
        {"name": "results", **copy.deepcopy(t.output.volumeSource)}
        if t.output.volumeSource
        else {"name": "results", "emptyDir": {}}
    )
    config_name = t.config or naming.tuning_config_map(ws.name)
    volumes = [
        shm,
        data_volume,
        results_volume,
        {"name": "config", "configMap": {"name": config_name}},
    ]
    init, extra_volumes = _input_containers(plan, settings)
    volumes += extra_volumes

    token_env: list[dict[str, Any]] = []
    if plan.options.modelAccessSecret:
        token_env.append(
            {
                "name": "HF_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": plan.options.modelAccessSecret, "key": "HF_TOKEN"}},
            }
        )
    weights_flags: list[str] = []
    if plan.options.image:
        weights_mount = _weights_from_preset_image(plan.options.image, settings, init, volumes)
    else:
        weights_mount, weights_flags = _weights_from_cache(plan, settings, init, volumes, token_env)
    trainer: dict[str, Any] = {
        "name": "trainer",
        "image": settings.tuning_image,
        "command": [
            "python",
            "-m",
            "tuning.train",
            "--config",
            f"{CONFIG_DIR}/training_config.yaml",
            "--model",
            WEIGHTS_DIR,
            *weights_flags,
            "--data",
            DATA_DIR,
            "--output",
            RESULTS_DIR,
        ],
        "env": [{"name": "PYTORCH_CUDA_ALLOC_CONF", "value": "expandable_segments:True"}],
        "resources": m.gpu_resources(plan),
        "volumeMounts": [
            shm_mount,
            {"name": "data", "mountPath": DATA_DIR, "readOnly": True},
            {"name": "results", "mountPath": RESULTS_DIR},
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            weights_mount,
        ],
    }
    if t.output.image:
        volumes.append(
            {
                "name": "docker-config",
                "secret": {
                    "secretName": t.output.imagePushSecret,
                    "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
                },
            }
        )
        pusher = {
            "name": "pusher",
            "image": settings.tuning_image,
            "command": [
                "python",
                "-m",
                "tuning.push",
                "--source",
                RESULTS_DIR,
                "--image",
                t.output.image,
                "--docker-config",
                DOCKER_CONFIG,
                "--preset",
                plan.preset.name,
            ],
            "volumeMounts": [
                {"name": "results", "mountPath": RESULTS_DIR, "readOnly": True},
                {"name": "docker-config", "mountPath": "/root/.docker", "readOnly": True},
            ],
        }
        init.append(trainer)
        containers = [pusher]
    else:
        containers = [trainer]

    pod = {
        "restartPolicy": "Never",
        "affinity": m.node_affinity(ws),
        "tolerations": m.tolerations(),
        "initContainers": init,
        "containers": containers,
        "volumes": volumes,
    }
    if not init:
        del pod["initContainers"]
    pull_secrets = [*(t.input.imagePullSecrets or [])]
    if plan.options.image:
        pull_secrets += plan.options.imagePullSecrets or []
    if pull_secrets:
        pod["imagePullSecrets"] = [{"name": s} for s in m.unique(pull_secrets)]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": ws.name, "namespace": ws.namespace, "labels": m.workspace_labels(ws)},
        "spec": {
            "backoffLimit": 0,
            "template": {"metadata": {"labels": m.workspace_labels(ws)}, "spec": m.harden(pod)},
        },
    }
