"""Live adapters, the hook's side: the desired adapter set as a ConfigMap the pod mounts, and the fetch Jobs
that put each adapter's files on every node that runs (or is about to run) the Workspace; both the Jobs
this hook asks for and what the observed Jobs and their pods say (hooks/workspace/status/adapters.py turns
that into status).

The pod template references only the ConfigMap's name and the node folder, so it never changes when
adapters do: adding, removing, re-weighting or re-imaging an adapter changes the ConfigMap and the set of
fetch Jobs, never the model server's pod (its agent, inference/live_adapters.py, follows the file).

Files: the kubelet pulls each adapter image, as it did for the init containers before, so imagePullSecrets
and the AKS kubelet identity (`az aks update --attach-acr`) both keep working and a FROM-scratch image
needs nothing but /data. Per (node, adapter key) a Job pinned to the node runs:
  1. `adapter-files-owner` (runtime image, root with CHOWN only): the node folder is created root-owned;
  2. `install-copier` (runtime image): our static kaito-copy into an emptyDir;
  3. `copy` (the adapter image, as the images' user): kaito-copy /data -> <folder>/<key>;
  4. `complete` (runtime image, the main container): writes <key>/.kaito-complete, only after 3 succeeded,
     so the agent never loads a half-copied adapter.
An adapter from a volume (source.volumeSource) is copied the same way from that volume, mounted into the Job.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from hooks.workspace.api import Workspace
from hooks.workspace.children import pod_parts as m
from hooks.workspace.planning import KEY_LENGTH, Adapter, PresetServing
from hooks.workspace.validation import max_lora_rank

DESIRED_DIR = "/etc/kaito/adapters"
DESIRED_FILE = "adapters.json"  # inference.live_adapters.DESIRED_FILE
FILES_MOUNT = "/var/lib/kaito/adapters"
FILES_HOST_ROOT = "/var/lib/kaito/adapters"
FILES_COMPLETE = ".kaito-complete"  # inference.live_adapters.FILES_COMPLETE
DESIRED_VOLUME = "adapters-desired"
FILES_VOLUME = "adapter-files"
SOURCE_VOLUME = "adapter-source"
SOURCE_MOUNT = "/mnt/adapter-source"
OWNER_CONTAINER = "adapter-files-owner"
COPY_CONTAINER = "copy"
# Fetch Jobs and their pods carry this label (value: the Workspace), not kaito.sh/workspace: they are not
# replicas of the model server.
FETCH_LABEL = "kaito.sh/adapter-fetch"
KEY_LABEL = "kaito.sh/adapter-key"
NODE_ANNOTATION = "kaito.sh/node"
SOURCE_ANNOTATION = "kaito.sh/adapter-source"
FETCH_BACKOFF_LIMIT = 3
MAX_NAME = 63
PULL_ERRORS = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName")


def config_map_name(workspace: str) -> str:
    return f"{workspace}-adapters"


def desired_set(plan: PresetServing) -> dict[str, Any]:
    """What the pod's agent reads; `revision` identifies the set so that a pod's report can be matched to it."""
    adapters = [{"name": a.name, "key": a.key, "strength": float(a.strength)} for a in plan.adapters]
    revision = hashlib.sha256(json.dumps(adapters, sort_keys=True).encode()).hexdigest()[:KEY_LENGTH]
    return {"adapters": adapters, "revision": revision}


def config_map(ws: Workspace, plan: PresetServing) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": config_map_name(ws.name), "namespace": ws.namespace, "labels": m.workspace_labels(ws)},
        "data": {DESIRED_FILE: json.dumps(desired_set(plan), sort_keys=True, separators=(",", ":"))},
    }


def host_folder(ws: Workspace) -> str:
    return f"{FILES_HOST_ROOT}/{ws.namespace}/{ws.name}"


def files_volume(ws: Workspace) -> dict:
    return {"name": FILES_VOLUME, "hostPath": {"path": host_folder(ws), "type": "DirectoryOrCreate"}}


def files_mount() -> dict:
    return {"name": FILES_VOLUME, "mountPath": FILES_MOUNT}


def owner_container(image: str) -> dict:
    """Hands the node folder to the images' user (the agent deletes removed adapters' files). It runs in the
    fetch Jobs only: the model server's pod writes there only after a fetch Job put files there."""
    return m.chown_container(OWNER_CONTAINER, image, files_mount())


def pod_volumes(ws: Workspace) -> tuple[list[dict], list[dict]]:
    """(volumes, mounts) of the model server's pod: the desired set as a directory (no subPath: the kubelet
    updates a directory-mounted ConfigMap in place) and the node folder the fetch Jobs fill."""
    volumes = [{"name": DESIRED_VOLUME, "configMap": {"name": config_map_name(ws.name)}}, files_volume(ws)]
    mounts = [{"name": DESIRED_VOLUME, "mountPath": DESIRED_DIR, "readOnly": True}, files_mount()]
    return volumes, mounts


def launcher_args(ws: Workspace) -> list[str]:
    """The desired-set file and the files folder; the room for adapter ranks when the Workspace asks for more
    or less than the launcher's default (changing it changes the pod template: a restart)."""
    args = ["--live-adapters", f"{DESIRED_DIR}/{DESIRED_FILE}", "--adapter-files", FILES_MOUNT]
    rank = max_lora_rank(ws)
    if rank is not None:
        args += ["--max-lora-rank", str(rank)]
    return args


def _short(text: str, size: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:size]


def fetch_job_name(workspace: str, key: str, node: str) -> str:
    """<workspace>-fetch-<key>-<node hash>, the workspace part shortened to stay a 63-character label value
    (the Job's name is its pods' job-name label)."""
    suffix = f"-fetch-{key[:10]}-{_short(node, 8)}"
    return f"{workspace[: MAX_NAME - len(suffix)].rstrip('-')}{suffix}"


def _copy_step(adapter: Adapter, key: str, runtime_image: str) -> tuple[dict, list[dict]]:
    """(container, extra volumes) copying the adapter's files into <folder>/<key>, as the images' user."""
    dest = f"{FILES_MOUNT}/{key}"
    user = {"runAsUser": m.IMAGE_UID, "runAsGroup": m.IMAGE_UID, "runAsNonRoot": True}
    if adapter.image:
        container = m.copy_from_image(COPY_CONTAINER, adapter.image, FILES_VOLUME, FILES_MOUNT, dest)
        container["securityContext"] = user
        return container, []
    volume = {"name": SOURCE_VOLUME, **copy.deepcopy(adapter.volume_source or {})}
    container = {
        "name": COPY_CONTAINER,
        "image": runtime_image,
        "command": [m.COPY_PROGRAM, SOURCE_MOUNT, dest],
        "securityContext": user,
        "volumeMounts": [
            {"name": "kaito-tools", "mountPath": m.TOOLS_DIR, "readOnly": True},
            {"name": SOURCE_VOLUME, "mountPath": SOURCE_MOUNT, "readOnly": True},
            files_mount(),
        ],
    }
    return container, [volume]


def _complete_container(key: str, source: str, runtime_image: str) -> dict:
    marker = f"{FILES_MOUNT}/{key}/{FILES_COMPLETE}"
    write = (
        "import json, os, sys; path, source = sys.argv[1], sys.argv[2]; "
        "open(path + '.tmp', 'w').write(json.dumps({'source': source})); os.replace(path + '.tmp', path)"
    )
    return {
        "name": "complete",
        "image": runtime_image,
        "command": ["python", "-c", write, marker, source],
        "volumeMounts": [files_mount()],
    }


def fetch_affinity(ws: Workspace, node: str) -> dict:
    """The model pod's node affinity narrowed to one node by name. The scheduler places the Job, so the node's
    taints (only the GPU taints are tolerated, as by the model pod) and the Workspace's labelSelector apply;
    nodeName would bypass both and run the Job on any node the selector names, a system node included."""
    affinity = m.node_affinity(ws)
    for term in affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]:
        term["matchFields"] = [{"key": "metadata.name", "operator": "In", "values": [node]}]
    return affinity


def pinned_node(pod_spec: dict) -> str | None:
    """The node a fetch Job's pod is narrowed to (fetch_affinity), or None."""
    required = ((pod_spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    for term in required.get("nodeSelectorTerms") or []:
        for field in term.get("matchFields") or []:
            if field.get("key") == "metadata.name" and field.get("values"):
                return str(field["values"][0])
    return None


def fetch_job(ws: Workspace, adapter: Adapter, node: str, runtime_image: str) -> dict:
    key = adapter.key
    copy_container, extra_volumes = _copy_step(adapter, key, runtime_image)
    source = adapter.image or "volumeSource"
    labels = {FETCH_LABEL: ws.name, KEY_LABEL: key}
    pod: dict[str, Any] = {
        "affinity": fetch_affinity(ws, node),
        "tolerations": m.tolerations(),
        "restartPolicy": "Never",
        "initContainers": [owner_container(runtime_image), m.copier_init_container(runtime_image), copy_container],
        "containers": [_complete_container(key, source, runtime_image)],
        "volumes": [m.tools_volume(), files_volume(ws), *extra_volumes],
    }
    if adapter.image and adapter.pull_secrets:
        pod["imagePullSecrets"] = [{"name": s} for s in m.unique(list(adapter.pull_secrets))]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": fetch_job_name(ws.name, key, node),
            "namespace": ws.namespace,
            "labels": labels,
            "annotations": {NODE_ANNOTATION: node, SOURCE_ANNOTATION: source},
        },
        "spec": {
            "backoffLimit": FETCH_BACKOFF_LIMIT,
            "template": {"metadata": {"labels": labels}, "spec": m.harden(pod)},
        },
    }


def fetch_jobs(ws: Workspace, plan: PresetServing, nodes: list[str], runtime_image: str) -> list[dict]:
    """One Job per (node, adapter key), by name; two adapters with the same files share one."""
    if not plan.live_adapters:
        return []
    jobs: dict[str, dict] = {}
    for node in sorted(set(nodes)):
        for adapter in plan.adapters:
            job = fetch_job(ws, adapter, node, runtime_image)
            jobs.setdefault(job["metadata"]["name"], job)
    return [jobs[name] for name in sorted(jobs)]


def fetch_nodes(worker_nodes: list[str], pods: list[dict]) -> list[str]:
    """The nodes the workload runs on or is planned for: a new replica finds its adapters already there."""
    running = [(p.get("spec") or {}).get("nodeName") for p in pods]
    return sorted({*worker_nodes, *(n for n in running if n)})


def children(ws: Workspace, plan: PresetServing, nodes: list[str], runtime_image: str) -> list[dict]:
    """The desired-set ConfigMap (also with no adapters: they can be added later without a restart) and
    the fetch Jobs."""
    if not plan.live_adapters:
        return []
    return [config_map(ws, plan), *fetch_jobs(ws, plan, nodes, runtime_image)]


# The observed side: the fetch Jobs and their pods as Metacontroller reports them.


def is_fetch_pod(pod: dict) -> bool:
    return FETCH_LABEL in ((pod.get("metadata") or {}).get("labels") or {})


def observed_fetch_jobs(observed_jobs: dict[str, dict]) -> list[dict]:
    """The fetch Jobs among a Workspace's observed Jobs."""
    return [j for j in observed_jobs.values() if FETCH_LABEL in ((j.get("metadata") or {}).get("labels") or {})]


def fetch_key_of(obj: dict) -> str | None:
    """The adapter key a fetch Job or its pod carries."""
    return ((obj.get("metadata") or {}).get("labels") or {}).get(KEY_LABEL)


def job_node(job: dict) -> str:
    return ((job.get("metadata") or {}).get("annotations") or {}).get(NODE_ANNOTATION, "?")


def job_failed(job: dict) -> dict | None:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Failed" and cond.get("status") == "True":
            return cond
    return None


def job_complete(job: dict) -> bool:
    status = job.get("status") or {}
    done = any(c.get("type") == "Complete" and c.get("status") == "True" for c in status.get("conditions") or [])
    return done or bool(status.get("succeeded"))


def pull_error(pods: list[dict]) -> str | None:
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        status = pod.get("status") or {}
        for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in PULL_ERRORS:
                node = (pod.get("spec") or {}).get("nodeName", "?")
                return f"node {node}: {waiting['reason']}: {waiting.get('message', '')}".rstrip(": ")
    return None


def copy_failure(pods: list[dict]) -> str | None:
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        status = pod.get("status") or {}
        for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
            term = ((cs.get("state") or {}).get("terminated")) or ((cs.get("lastState") or {}).get("terminated")) or {}
            if term and term.get("exitCode", 0) != 0:
                detail = (term.get("message") or f"exit code {term.get('exitCode')}").strip()
                return f"container {cs.get('name')}: {term.get('reason', 'Error')}: {detail}"
    return None
