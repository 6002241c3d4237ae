"""Where a serving Workspace becomes its workload: a Deployment (one pod per replica) or, for a preset served
across several nodes, a StatefulSet (one pod per node), running `python -m inference.launch` (the preset's
launcher arguments are built here) or the user's pod template; and which observed object is that workload."""

from __future__ import annotations

import copy
import math

from hooks import metacontroller as mc
from hooks import naming
from hooks.settings import Settings
from hooks.workspace import kaito_annotations
from hooks.workspace.api import Workspace
from hooks.workspace.children import adapter_report, live_adapters, weights
from hooks.workspace.children import pod_parts as m
from hooks.workspace.planning import PresetServing, TemplateServing, TuningPlan, WorkloadPlan

WEIGHTS_DIR = weights.WEIGHTS_DIR
ADAPTERS_DIR = "/mnt/adapter"
CONFIG_DIR = "/mnt/config"
PROBE_PERIOD_SECONDS = 10


def _http_probe(path: str, **extra) -> dict:
    return {"httpGet": {"path": path, "port": m.HTTP_PORT}, "periodSeconds": PROBE_PERIOD_SECONDS, **extra}


def launcher_args(ws: Workspace, plan: PresetServing, settings: Settings) -> list[str]:
    preset = plan.preset
    args = ["--runtime", plan.runtime, "--served-model-name", preset.name]
    if not plan.options.image:
        args += ["--model", preset.hf_repo, "--weights-cache", weights.CACHE_MOUNT]
    args += ["--weights-dir", weights.weights_dir(plan.options.image, settings)]
    if plan.live_adapters:  # the adapters come from the desired set, never from the pod's args
        args += ["--adapters-dir", live_adapters.FILES_MOUNT, *live_adapters.launcher_args(ws)]
    else:
        args += ["--adapters-dir", ADAPTERS_DIR]
    args += [
        "--gpus-per-node",
        str(plan.gpus_per_node),
        "--nnodes",
        str(plan.nodes),
        "--node-rank",
        "$(POD_INDEX)" if plan.nodes > 1 else "0",
    ]
    if plan.nodes > 1:
        args += ["--dist-init-addr", naming.rank0_address(ws.name, ws.namespace, m.DIST_PORT)]
    if plan.config:
        args += ["--config-file", f"{CONFIG_DIR}/inference_config.yaml"]
    args += ["--port", str(m.HTTP_PORT)]
    if plan.runtime == "sglang" and (flags := kaito_annotations.runtime_flags(ws)):
        args += ["--", *flags]  # the launcher passes what follows `--` to SGLang verbatim
    return args


def runtime_image(plan: PresetServing, settings: Settings) -> str:
    return settings.runtime_image if plan.runtime == "sglang" else settings.transformers_runtime_image


def _preset_pod(ws: Workspace, plan: PresetServing, settings: Settings) -> dict:
    opts = plan.options
    image = runtime_image(plan, settings)
    shm, shm_mount = m.shm_volume()
    volumes, mounts = [shm], [shm_mount]
    init: list[dict] = []
    pull_secrets: list[str] = []
    env = _env(plan)
    if opts.image and settings.image_volumes:
        volume, mount = weights.image_volume(opts.image)
        volumes.append(volume)
        mounts.append(mount)
    else:
        volumes.append(weights.cache_volume(plan.sku, settings, os_disk_only=plan.scale_down_mode == "Deallocate"))
        mounts.append(weights.reader_mount(None if opts.image else plan.preset.hf_repo, opts.image))
        init += weights.cache_owner_container(image, settings)
        if opts.image:  # no image volumes: the image's /data streamed from the registry into the node cache
            pull_volumes, container = weights.image_pull_container(image, opts.image, opts.imagePullSecrets or [])
            volumes += pull_volumes
            volumes.append(weights.link_volume())
            mounts.append(weights.link_mount(read_only=True))
            init.append(container)
        else:
            init.append(weights.fetch_container(image, plan.preset, [e for e in env if e["name"] == "HF_TOKEN"]))
    if opts.image:
        pull_secrets += opts.imagePullSecrets or []

    # Adapters are live (children/live_adapters.py): nothing here depends on which adapters are desired.
    if plan.live_adapters:
        adapter_volumes, adapter_mounts = live_adapters.pod_volumes(ws)
        volumes += [*adapter_volumes, adapter_report.token_volume()]
        mounts += [*adapter_mounts, adapter_report.token_mount()]
    if plan.config:
        volumes.append({"name": "config-volume", "configMap": {"name": plan.config}})
        mounts.append({"name": "config-volume", "mountPath": CONFIG_DIR, "readOnly": True})

    startup_failures = math.ceil(weights.startup_budget_seconds(plan.preset) / PROBE_PERIOD_SECONDS)
    container = {
        "name": ws.name,
        "image": image,
        "command": ["python", "-m", "inference.launch"],
        "args": launcher_args(ws, plan, settings),
        "env": env,
        "ports": [
            {"name": "http", "containerPort": m.HTTP_PORT, "protocol": "TCP"},
            {"name": "torch-dist", "containerPort": m.DIST_PORT, "protocol": "TCP"},
        ],
        "resources": m.model_server_resources(plan),
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
    if plan.live_adapters:  # the agent reports adapter states on its own pod
        pod["serviceAccountName"] = adapter_report.name(ws)
    return {
        "metadata": {
            "labels": m.workspace_labels(ws),
            "annotations": {"kubectl.kubernetes.io/default-container": ws.name},
        },
        "spec": m.harden(pod),
    }


def _env(plan: PresetServing) -> list[dict]:
    env: list[dict] = [
        {
            "name": "POD_INDEX",
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}},
        },
        {"name": "PYTORCH_CUDA_ALLOC_CONF", "value": "expandable_segments:True"},
    ]
    if plan.options.modelAccessSecret:
        env.append(
            {
                "name": "HF_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": plan.options.modelAccessSecret, "key": "HF_TOKEN"}},
            }
        )
    return env


def _template_pod(ws: Workspace, plan: TemplateServing) -> dict:
    """The user's pod template, scheduled onto the workspace's GPU nodes (affinity replaced, tolerations added)."""
    template = copy.deepcopy(plan.template)
    meta = template.setdefault("metadata", {})
    meta["labels"] = {**(meta.get("labels") or {}), **m.workspace_labels(ws)}
    spec = template.setdefault("spec", {})
    spec["affinity"] = m.node_affinity(ws)
    theirs = spec.get("tolerations") or []
    spec["tolerations"] = theirs + [t for t in m.tolerations() if t not in theirs]
    return template


def pod_template(ws: Workspace, plan: PresetServing | TemplateServing, settings: Settings) -> dict:
    """The pod of one replica (of one node of it, for a preset served across several nodes)."""
    if isinstance(plan, TemplateServing):
        return _template_pod(ws, plan)
    return _preset_pod(ws, plan, settings)


def workload(ws: Workspace, plan: PresetServing | TemplateServing, settings: Settings) -> dict:
    """A Deployment of single-node replicas, or the StatefulSet of one instance served across several nodes."""
    return statefulset(ws, plan, settings) if plan.nodes > 1 else deployment(ws, plan, settings)


def statefulset(ws: Workspace, plan: PresetServing | TemplateServing, settings: Settings) -> dict:
    """One pod per node; the ordinal is the node rank, and rank 0 serves the API."""
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": ws.name, "namespace": ws.namespace, "labels": m.workspace_labels(ws)},
        "spec": {
            "replicas": plan.nodes * plan.replicas,  # 0 when scaled to zero
            "serviceName": naming.headless_service(ws.name),
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": m.workspace_labels(ws)},
            "template": pod_template(ws, plan, settings),
        },
    }


def deployment(ws: Workspace, plan: PresetServing | TemplateServing, settings: Settings) -> dict:
    """Replicas of a single-node model server, as Kaito ran them before v0.8. On a scale-in its ReplicaSet
    removes pods that are not Ready first (a StatefulSet always removes the highest ordinal), and it replaces
    a pod on a lost node without waiting for that node. No surge: a new pod needs a GPU node of its own."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": ws.name, "namespace": ws.namespace, "labels": m.workspace_labels(ws)},
        "spec": {
            "replicas": plan.replicas,
            "selector": {"matchLabels": m.workspace_labels(ws)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
            "template": pod_template(ws, plan, settings),
        },
    }


def observed(request: dict, ws: Workspace, plan: WorkloadPlan) -> dict | None:
    """The workload Metacontroller reports for this plan: the tuning Job, the StatefulSet or the Deployment."""
    if isinstance(plan, TuningPlan):
        kind = mc.JOBS
    else:
        kind = mc.STATEFULSETS if plan.nodes > 1 else mc.DEPLOYMENTS
    return mc.by_name(mc.observed(request, kind)).get(ws.name)
