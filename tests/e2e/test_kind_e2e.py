"""End to end on a kind cluster: install (bring-your-own-nodes overlay), a Workspace, garbage collection.

Needs Docker with a running engine, kind, kubectl and internet access (the kind node image and
Metacontroller's upstream manifests); skips with the reason otherwise, so `make test` never fails on
it. Run it with `make e2e` (KAITO_E2E_KEEP=1 keeps the cluster afterwards).

What it checks, in order:
  1. `kubectl apply -k overlays/byo/` (apply, wait for the CRDs, apply again, as the README says)
     brings up Metacontroller and two hook pods from the image built by hooks/Dockerfile (non-root,
     read-only root filesystem), and no Machine CRD.
  2. The API server enforces the Workspace CRD's CEL rules (inference and tuning together: refused).
  3. The kind node, labelled with quick start 1's selector, is taken as a bring-your-own GPU node.
     Applying examples/inference-phi-3.yaml makes Metacontroller call the hooks through the
     NetworkPolicy: the Deployment and both Services appear, owned by the Workspace, and the status
     says ResourceReady=True (NodesReady, the kind node) and runtime transformers (a V100 SKU).
  4. The kind node has no GPU, so the model pod stays Pending on nvidia.com/gpu: InferenceReady and
     WorkspaceReady are False with reason Unschedulable and the scheduler's message. A served model
     needs a GPU node; this test does not claim one.
  5. Deleting the Workspace garbage-collects the Deployment, its pod and both Services.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from release.images import image_ref, project_version

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
# The tag the install names (pyproject.toml's version), so the loaded image is the one it runs.
HOOK_IMAGE = image_ref("hooks", project_version())
EXAMPLE = REPO / "examples" / "inference-phi-3.yaml"
GROUP, VERSION, PLURAL = "kaito.sh", "v1alpha1", "workspaces"


def missing_prerequisite() -> str | None:
    for tool in ("docker", "kind", "kubectl"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (the kind end-to-end test needs docker, kind and kubectl)"
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=60, check=False)
    except subprocess.TimeoutExpired:
        return "`docker info` timed out: no usable Docker engine"
    if info.returncode != 0:
        last = (info.stderr.strip().splitlines() or ["no output"])[-1]
        return f"Docker's engine is not reachable (`docker info` failed: {last})"
    return None


class Kube:
    """kubectl/kind against one cluster's kubeconfig."""

    def __init__(self, name: str, kubeconfig: Path):
        self.name, self.kubeconfig = name, kubeconfig
        self.env = {**os.environ, "KUBECONFIG": str(kubeconfig), "DOCKER_BUILDKIT": "1"}

    def run(self, *cmd: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        out = subprocess.run(
            list(cmd), cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and out.returncode != 0:
            raise AssertionError(
                f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
            )
        return out


def wait_for(what: str, probe, timeout: float = 300, every: float = 3):
    """Call `probe` until it returns something truthy; its last error or value explains a timeout."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            value = probe()
            if value:
                return value
            last = value
        except Exception as err:  # noqa: BLE001 - not there yet: the API answers 404 until it is
            last = err
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


@pytest.fixture(scope="module")
def kube(tmp_path_factory):
    reason = missing_prerequisite()
    if reason:
        pytest.skip(reason)
    name = f"kaito-e2e-{os.getpid()}"
    k = Kube(name, tmp_path_factory.mktemp("kind") / "kubeconfig")
    k.run("kind", "create", "cluster", "--name", name, "--kubeconfig", str(k.kubeconfig), "--wait", "180s")
    try:
        yield k
    finally:
        if not os.environ.get("KAITO_E2E_KEEP"):
            k.run("kind", "delete", "cluster", "--name", name, check=False, timeout=300)


@pytest.fixture(scope="module")
def installed(kube):
    kube.run("docker", "build", "-f", "hooks/Dockerfile", "-t", HOOK_IMAGE, ".", timeout=900)
    kube.run("kind", "load", "docker-image", HOOK_IMAGE, "--name", kube.name)
    # The README's three steps: the first apply creates the CRDs; kubectl maps the controllers'
    # kinds only once they are established.
    kube.run("kubectl", "apply", "-k", "overlays/byo/", check=False)
    kube.run("kubectl", "wait", "--for=condition=Established", "--timeout=120s", "crd", "--all")
    kube.run("kubectl", "apply", "-k", "overlays/byo/")
    kube.run("kubectl", "-n", "metacontroller", "rollout", "status", "statefulset/metacontroller", "--timeout=300s")
    kube.run("kubectl", "-n", "kaito-system", "rollout", "status", "deployment/kaito-hooks", "--timeout=300s")
    from kubernetes import config

    return config.new_client_from_config(config_file=str(kube.kubeconfig))


def condition(ws: dict, kind: str) -> dict:
    return next((c for c in (ws.get("status") or {}).get("conditions") or [] if c["type"] == kind), {})


def test_install_workspace_and_garbage_collection(installed):
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    core, apps = client.CoreV1Api(installed), client.AppsV1Api(installed)
    custom, ext = client.CustomObjectsApi(installed), client.ApiextensionsV1Api(installed)

    # 1. The install: two hook pods, no Machine kind in bring-your-own-nodes mode.
    hooks = apps.read_namespaced_deployment("kaito-hooks", "kaito-system")
    assert hooks.status.ready_replicas == 2
    with pytest.raises(ApiException) as gone:
        ext.read_custom_resource_definition("machines.kaito.sh")
    assert gone.value.status == 404

    ns = f"e2e-{os.getpid()}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    workspace = yaml.safe_load(EXAMPLE.read_text())
    name = workspace["metadata"]["name"]

    # 2. CEL rules run in the API server.
    tuning = {
        "preset": {"name": "phi-3-mini-4k-instruct"},
        "input": {"urls": ["https://example.com/data.parquet"]},
        "output": {"image": "registry.example.com/adapter:1", "imagePushSecret": "push"},
    }
    both = {**workspace, "metadata": {"name": "both"}, "tuning": tuning}
    with pytest.raises(ApiException) as refused:
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, both)
    assert refused.value.status == 422 and "exactly one of inference or tuning" in str(refused.value.body)

    # 3. The kind node becomes a bring-your-own GPU node for quick start 1.
    node = core.list_node().items[0].metadata.name
    core.patch_node(node, {"metadata": {"labels": workspace["resource"]["labelSelector"]["matchLabels"]}})
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, workspace)

    sts = wait_for("the Deployment", lambda: apps.read_namespaced_deployment(name, ns))
    owner = sts.metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.controller) == ("Workspace", name, True)
    services = {
        s: wait_for(f"Service {s}", lambda s=s: core.read_namespaced_service(s, ns)) for s in (name, f"{name}-headless")
    }
    assert [p.port for p in services[name].spec.ports if p.name == "http"] == [80]
    assert services[f"{name}-headless"].spec.cluster_ip == "None"

    def status_settled():
        ws = custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
        inference = condition(ws, "InferenceReady")
        return (
            ws
            if condition(ws, "ResourceReady").get("status") == "True" and inference.get("reason") == "Unschedulable"
            else None
        )

    ws = wait_for("ResourceReady=True and InferenceReady=False/Unschedulable", status_settled, timeout=400)
    resource = condition(ws, "ResourceReady")
    assert resource["reason"] == "NodesReady" and node in resource["message"]
    assert ws["status"]["workerNodes"] == [node]
    assert ws["status"]["runtime"] == "transformers"

    # 4. No GPU on a kind node: the pod waits for nvidia.com/gpu, and the status says so.
    inference = condition(ws, "InferenceReady")
    assert inference["status"] == "False" and "nvidia.com/gpu" in inference["message"]
    assert condition(ws, "WorkspaceReady")["status"] == "False"
    (pod,) = core.list_namespaced_pod(ns, label_selector=f"kaito.sh/workspace={name}").items
    assert pod.status.phase == "Pending"

    # 5. Deleting the Workspace garbage-collects everything it owned.
    custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)

    def all_gone():
        left = [s.metadata.name for s in apps.list_namespaced_deployment(ns).items]
        left += [s.metadata.name for s in core.list_namespaced_service(ns).items]
        left += [p.metadata.name for p in core.list_namespaced_pod(ns).items]
        left += [
            w["metadata"]["name"] for w in custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]
        ]
        return not left

    wait_for("the Workspace's children to be garbage-collected", all_gone, timeout=300)
    core.delete_namespace(ns)
