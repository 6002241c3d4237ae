"""The inference StatefulSet: one pod per node, running `python -m inference.launch` (or the user's template)."""

from __future__ import annotations

import copy
import math

from hooks import manifests as m
from hooks import naming
from hooks.api import Workspace
from hooks.planning import WorkloadPlan
from hooks.settings import Settings

WEIGHTS_DIR = "/workspace/weights"
ADAPTERS_DIR = "/mnt/adapter"
CONFIG_DIR = "/mnt/config"
PROBE_PERIOD_SECONDS = 10


def _http_probe(path: str, **extra) -> dict:
    return {"httpGet": {"path": path, "port": m.HTTP_PORT}, "periodSeconds": PROBE_PERIOD_SECONDS, **extra}


def launcher_args(ws: Workspace, plan: WorkloadPlan) -> list[str]:
    preset = plan.preset
    opts = ws.inference.preset.presetOptions
    args = ["--runtime", plan.runtime, "--served-model-name", preset.name]
    if not (opts and opts.image):
        args += ["--model", preset.hf_repo]
    args += ["--weights-dir", WEIGHTS_DIR, "--adapters-dir", ADAPTERS_DIR]
    for adapter in ws.adapters:
        args += ["--adapter", f"{adapter.source.name}={adapter.strength or '1.0'}"]
    args += ["--gpus-per-node", str(plan.gpus_per_node), "--nnodes", str(plan.nodes), "--node-rank", "$(POD_INDEX)"]
    if plan.nodes > 1:
        args += ["--dist-init-addr", naming.rank0_address(ws.name, ws.namespace, m.DIST_PORT)]
    if ws.inference.config:
        args += ["--config-file", f"{CONFIG_DIR}/inference_config.yaml"]
    args += ["--port", str(m.HTTP_PORT)]
    return args


def runtime_image(plan: WorkloadPlan, settings: Settings) -> str:
    return settings.runtime_image if plan.runtime == "sglang" else settings.transformers_runtime_image


def _preset_pod(ws: Workspace, plan: WorkloadPlan, settings: Settings) -> dict:
    opts = ws.inference.preset.presetOptions
    image = runtime_image(plan, settings)
    shm, shm_mount = m.shm_volume()
    volumes = [shm, {"name": "model-weights", "emptyDir": {}}]
    mounts = [shm_mount, {"name": "model-weights", "mountPath": WEIGHTS_DIR}]
    init: list[dict] = []
    pull_secrets: list[str] = []

    needs_copier = bool(opts and opts.image) or any(a.source.image for a in ws.adapters)
    if needs_copier:
        volumes.append(m.tools_volume())
        init.append(m.copier_init_container(image))
    if opts and opts.image:
        init.append(m.copy_from_image("model-weights", opts.image, "model-weights", WEIGHTS_DIR, WEIGHTS_DIR))
        pull_secrets += opts.imagePullSecrets or []
    if ws.adapters:
        volumes.append({"name": "adapter-volume", "emptyDir": {}})
        mounts.append({"name": "adapter-volume", "mountPath": ADAPTERS_DIR})
    for adapter in ws.adapters:
        src = adapter.source
        if src.image:
            init.append(
                m.copy_from_image(
                    f"adapter-{src.name}", src.image, "adapter-volume", ADAPTERS_DIR, f"{ADAPTERS_DIR}/{src.name}"
                )
            )
            pull_secrets += src.imagePullSecrets or []
        else:
            volumes.append({"name": f"adapter-{src.name}", **copy.deepcopy(src.volumeSource)})
            mounts.append({"name": f"adapter-{src.name}", "mountPath": f"{ADAPTERS_DIR}/{src.name}", "readOnly": True})
    if ws.inference.config:
        volumes.append({"name": "config-volume", "configMap": {"name": ws.inference.config}})
        mounts.append({"name": "config-volume", "mountPath": CONFIG_DIR, "readOnly": True})

    env = [
        {"name": "POD_INDEX", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}}},
        {"name": "PYTORCH_CUDA_ALLOC_CONF", "value": "expandable_segments:True"},
    ]
    if opts and opts.modelAccessSecret:
        env.append(
            {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": opts.modelAccessSecret, "key": "HF_TOKEN"}}}
        )
    startup_failures = math.ceil(plan.preset.readiness_timeout_minutes * 60 / PROBE_PERIOD_SECONDS)
    container = {
        "name": ws.name,
        "image": image,
        "command": ["python", "-m", "inference.launch"],
        "args": launcher_args(ws, plan),
        "env": env,
        "ports": [
            {"name": "http", "containerPort": m.HTTP_PORT, "protocol": "TCP"},
            {"name": "torch-dist", "containerPort": m.DIST_PORT, "protocol": "TCP"},
        ],
        "resources": m.gpu_resources(plan),
        "volumeMounts": mounts,
        "startupProbe": _http_probe("/health", failureThreshold=startup_failures),
        "readinessProbe": _http_probe("/health", failureThreshold=3),
        "livenessProbe": _http_probe("/healthz", failureThreshold=3),
    }
    pod = {
        "affinity": m.node_affinity(ws),
        "tolerations": m.tolerations(),
        "initContainers": init,
        "containers": [container],
        "volumes": volumes,
    }
    if not init:
        del pod["initContainers"]
    if pull_secrets:
        pod["imagePullSecrets"] = [{"name": s} for s in m.unique(pull_secrets)]
    return {
        "metadata": {
            "labels": m.workspace_labels(ws),
            "annotations": {"kubectl.kubernetes.io/default-container": ws.name},
        },
        "spec": pod,
    }


def _template_pod(ws: Workspace) -> dict:
    """The user's pod template, scheduled onto the workspace's GPU nodes (affinity replaced, tolerations added)."""
    template = copy.deepcopy(ws.inference.template)
    meta = template.setdefault("metadata", {})
    meta["labels"] = {**(meta.get("labels") or {}), **m.workspace_labels(ws)}
    spec = template.setdefault("spec", {})
    spec["affinity"] = m.node_affinity(ws)
    theirs = spec.get("tolerations") or []
    spec["tolerations"] = theirs + [t for t in m.tolerations() if t not in theirs]
    return template


def statefulset(ws: Workspace, plan: WorkloadPlan, settings: Settings) -> dict:
    template = _template_pod(ws) if plan.kind == "template" else _preset_pod(ws, plan, settings)
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": ws.name, "namespace": ws.namespace, "labels": m.workspace_labels(ws)},
        "spec": {
            "replicas": plan.nodes,
            "serviceName": naming.headless_service(ws.name),
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": m.workspace_labels(ws)},
            "template": template,
        },
    }
