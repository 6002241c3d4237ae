"""The operator on the local control plane: our CRDs and controller configs, the hook server under
gunicorn on loopback, Metacontroller (engineer B's stand-in: the real one is not served by the Go
module proxy), the fake ARM server and an AKS simulator that turns agent pools into kwok Nodes.

Install: the files metacontroller/kustomization.yaml lists, except Metacontroller's upstream
manifests (GitHub is unreachable; its CRDs come from /work/shared) and the hook Deployment (the hook
server runs here as a process). The one change to the shipped controller configs: each hook's
`webhook.service` becomes `webhook.url` on loopback. Bring-your-own-nodes mode applies
overlays/byo/'s patches (no Machine CRD or controller, no machines child, KAITO_NODE_PROVISIONING=byo).

Azure's servers and Azure AD cannot exist here. The hook server runs unchanged (`python -m hooks
serve`, DefaultAzureCredential); ARM_ENDPOINT points at tests/fake_arm.py, REQUESTS_CA_BUNDLE at its
self-signed certificate, and the managed-identity endpoint (IDENTITY_ENDPOINT) at a loopback token
server below that hands out the fake ARM's token.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml
from controlplane import KWOK_NODE_LABEL, ClusterError, ControlPlane, Process, free_port, wait_until

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "metacontroller"
BYO = REPO / "overlays" / "byo"
SHARED = REPO.parent / "shared"
METACONTROLLER_CRDS = SHARED / "reference" / "metacontroller" / "metacontroller-crds-v1.yaml"
STANDIN = REPO / "tests" / "cluster" / "standin_metacontroller"


# ---- manifests ---------------------------------------------------------------------------------
def installed_files() -> list[Path]:
    """The local manifest files metacontroller/kustomization.yaml installs, in its order."""
    kustomization = yaml.safe_load((INSTALL / "kustomization.yaml").read_text())
    files = []
    for resource in kustomization["resources"]:
        if resource.startswith(("https://", "http://")):
            continue  # Metacontroller's upstream manifests: its CRDs are applied from /work/shared
        if resource == "hooks":
            continue  # the hook Deployment: the hook server runs as a local process instead
        files.append(INSTALL / resource)
    return files


def load_all(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def point_hooks_at(controller: dict, hook_url: str) -> dict:
    """The controller config with every hook calling `hook_url` + its path instead of the Service
    (the rest of the webhook, mutual TLS included, stays as shipped)."""
    controller = copy.deepcopy(controller)
    for hook in controller["spec"]["hooks"].values():
        webhook = hook["webhook"]
        if "service" in webhook:
            del webhook["service"]
            webhook["url"] = hook_url.rstrip("/") + webhook.pop("path", "")
    return controller


def install_hook_namespace(cluster: ControlPlane, tls_dir: Path) -> None:
    """The hook server's Namespace and Service, and the install's mutual-TLS step (`python -m hooks certs |
    kubectl apply -f -`) with 127.0.0.1 as an extra server name; the hook server's Secret is also written
    to `tls_dir`, as its pod mounts it."""
    import base64
    import subprocess

    out = subprocess.run([sys.executable, "-m", "hooks", "certs", "--namespace", "kaito-system",
                          "--extra-name", "127.0.0.1"], capture_output=True, text=True, cwd=REPO, check=True)
    # The hook server's Namespace and Service as installed (the pool sweep relates that Service);
    # the Deployment is replaced by the local process.
    cluster.kubectl("apply", "-f", str(INSTALL / "hooks" / "namespace.yaml"), "-f", str(INSTALL / "hooks" / "service.yaml"))
    cluster.kubectl("apply", "-f", "-", input=out.stdout)
    server = next(d for d in yaml.safe_load_all(out.stdout) if d and d["metadata"]["name"] == "kaito-hooks-tls")
    tls_dir.mkdir(parents=True, exist_ok=True)
    for key, value in server["data"].items():
        (tls_dir / key).write_bytes(base64.b64decode(value))
        (tls_dir / key).chmod(0o600)


def byo_patches() -> dict[str, Any]:
    """What overlays/byo/ deletes and the JSON patch it applies to the CompositeController."""
    kustomization = yaml.safe_load((BYO / "kustomization.yaml").read_text())
    deleted, json_patch = set(), []
    for patch in kustomization["patches"]:
        if "path" not in patch:
            continue
        doc = yaml.safe_load((BYO / patch["path"]).read_text())
        if isinstance(doc, dict) and doc.get("$patch") == "delete":
            deleted.add((doc["kind"], doc["metadata"]["name"]))
        elif patch.get("target", {}).get("kind") == "CompositeController":
            json_patch = doc
    return {"deleted": deleted, "composite_json_patch": json_patch}


def apply_json_patch(doc: dict, ops: list[dict]) -> dict:
    """The two operations overlays/byo uses on the CompositeController (test and remove)."""
    doc = copy.deepcopy(doc)
    for op in ops:
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].strip("/").split("/")]
        node = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        key = int(last) if isinstance(node, list) else last
        if op["op"] == "test":
            if node[key] != op["value"]:
                raise ClusterError(f"overlays/byo test op failed at {op['path']}: {node[key]!r} != {op['value']!r}")
        elif op["op"] == "remove":
            del node[key]
        else:
            raise ClusterError(f"unsupported JSON patch op {op['op']} in overlays/byo")
    return doc


def operator_manifests(hook_url: str, mode: str) -> tuple[list[dict], list[dict]]:
    """(CRDs, controller configs) the operator installs in `mode` ('aks' or 'byo')."""
    crds, controllers = [], []
    byo = byo_patches() if mode == "byo" else None
    for path in installed_files():
        for doc in load_all(path):
            if byo and (doc["kind"], doc["metadata"]["name"]) in byo["deleted"]:
                continue
            if doc["kind"] == "CustomResourceDefinition":
                crds.append(doc)
                continue
            controller = doc
            if byo and doc["kind"] == "CompositeController":
                controller = apply_json_patch(doc, byo["composite_json_patch"])
            # Metacontroller's controllers call our hooks; other manifests (the adapter-report admission
            # policy) are installed as shipped.
            has_hooks = "hooks" in (controller.get("spec") or {})
            controllers.append(point_hooks_at(controller, hook_url) if has_hooks else controller)
    return crds, controllers


def images_env() -> dict[str, str]:
    """The KAITO_*_IMAGE settings the install gives the hook server (ConfigMap kaito-hooks-images)."""
    path = INSTALL / "hooks" / "images.env"
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def yaml_stream(docs: list[dict]) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False)


# ---- Azure stand-ins -----------------------------------------------------------------------------
class TokenServer:
    """Azure's managed-identity endpoint (App Service protocol) on loopback, handing out `token`."""

    def __init__(self, token: str):
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args) -> None:
                pass

            def do_GET(self) -> None:
                server.requests.append(self.path)
                body = json.dumps({
                    "access_token": token,
                    "expires_on": str(int(time.time()) + 3600),
                    "resource": "https://management.azure.com",
                    "token_type": "Bearer",
                }).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/msi/token"
        threading.Thread(target=self._server.serve_forever, args=(0.1,), daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def gpu_count(vm_size: str) -> int:
    """GPUs per VM of this size, from the operator's SKU catalog (the data file, wherever hooks/ keeps it)."""
    catalog = next((REPO / "hooks").rglob("skus.yaml"))
    return int(yaml.safe_load(catalog.read_text())["skus"].get(vm_size, {}).get("gpus", 0))


def gpu_node(name: str, labels: dict[str, str], gpus: int, taints: list[dict] | None = None) -> dict:
    """A Node kwok keeps Ready, with `gpus` allocatable nvidia.com/gpu (as the device plugin reports)."""
    resources = {"cpu": "24", "memory": "220Gi", "pods": "110", "ephemeral-storage": "1000Gi"}
    if gpus:
        resources["nvidia.com/gpu"] = str(gpus)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                **labels,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/hostname": name,
                KWOK_NODE_LABEL[0]: KWOK_NODE_LABEL[1],
            },
        },
        "spec": {"taints": taints} if taints else {},
        "status": {"capacity": resources, "allocatable": resources},
    }


def node_name_for_pool(pool_name: str) -> str:
    return f"aks-{pool_name}-00000000-vmss000000"


def node_for_pool(pool_name: str, props: dict) -> dict:
    """The Node AKS registers for a one-node agent pool: the pool's labels and taints, the SKU's GPUs."""
    taints = []
    for taint in props.get("nodeTaints") or []:
        key_value, _, effect = taint.rpartition(":")
        key, _, value = key_value.partition("=")
        taints.append({"key": key, "value": value, "effect": effect} if value else {"key": key, "effect": effect})
    labels = {
        **(props.get("nodeLabels") or {}),
        "agentpool": pool_name,
        "kubernetes.azure.com/agentpool": pool_name,
        "node.kubernetes.io/instance-type": props["vmSize"],
    }
    return gpu_node(node_name_for_pool(pool_name), labels, gpu_count(props["vmSize"]), taints)


class AksSimulator:
    """What AKS does after ARM accepts or deletes an agent pool.

    `provision(pool)`: the pool succeeds and its Node joins; `remove(pool)`: the pool is gone (ARM
    answers 404) and its Node leaves. A background thread does both on its own: with `delay` set, for
    every new pool `delay` seconds after its PUT (make cluster); with `finish_deletes`, for every pool
    ARM is deleting (so the Machines of a finished test go away; a test that checks the finalizer
    turns it off)."""

    def __init__(self, arm, cluster: ControlPlane, delay: float | None = None, finish_deletes: bool = True):
        self.arm, self.cluster, self.delay, self.finish_deletes = arm, cluster, delay, finish_deletes
        self._seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def provision(self, pool_name: str) -> dict:
        pool = self.arm.state.pools[pool_name]
        node = node_for_pool(pool_name, pool["properties"])
        self.cluster.kubectl("apply", "-f", "-", input=json.dumps(node))
        self.arm.set_state(pool_name, "Succeeded")
        return node

    def remove(self, pool_name: str) -> None:
        self.cluster.kubectl("delete", "node", node_name_for_pool(pool_name), "--ignore-not-found",
                             "--wait=false")
        self.arm.finish_delete(pool_name)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(1):
            try:
                for name, pool in list(self.arm.state.pools.items()):
                    state = pool["properties"]["provisioningState"]
                    first_seen = self._seen.setdefault(name, time.monotonic())
                    if state == "Creating" and self.delay is not None and time.monotonic() - first_seen >= self.delay:
                        self.provision(name)
                    elif state == "Deleting" and self.finish_deletes:
                        self.remove(name)
                        self._seen.pop(name, None)
            except Exception as error:  # noqa: BLE001 - keep simulating; the log says what went wrong
                print(f"aks simulator: {error}", file=sys.stderr, flush=True)


# ---- processes -----------------------------------------------------------------------------------
class HookServer:
    """`python -m hooks serve --tls-dir` on a loopback port; `kill()` kills it hard, `start()` again."""

    def __init__(self, cluster: ControlPlane, env: dict[str, str], tls_dir: Path, name: str = "hooks"):
        self.cluster, self.name, self.port, self.tls_dir = cluster, name, free_port(), tls_dir
        self.url = f"https://127.0.0.1:{self.port}"
        drop = ("AZURE_", "ARM_", "IDENTITY_", "MSI_", "KAITO_", "REQUESTS_CA_BUNDLE")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
        self.env.update(env, PYTHONPATH=str(REPO))
        self.process: Process | None = None
        self.start()

    def start(self) -> None:
        self.process = self.cluster.spawn(self.name, [
            sys.executable, "-m", "hooks", "serve", "--bind", f"127.0.0.1:{self.port}", "--workers", "2",
            "--tls-dir", str(self.tls_dir),
        ], env=self.env, cwd=REPO)

        def healthy() -> bool:
            import requests

            return requests.get(self.url + "/healthz", timeout=2, verify=str(self.tls_dir / "ca.crt")).ok

        wait_until(f"{self.name} /healthz", healthy, timeout=60, alive=self.process.exited)

    def kill(self) -> None:
        assert self.process is not None
        os.killpg(self.process.proc.pid, 9)
        self.process.proc.wait(10)
        self.process.stop()


def standin_metacontroller(cluster: ControlPlane) -> Process:
    """Engineer B's stand-in for Metacontroller v4.17.2 (see tests/cluster/standin_metacontroller/)."""
    if not (STANDIN / "__main__.py").exists():
        raise ClusterError(f"{STANDIN} has no __main__.py: the Metacontroller stand-in is not there yet")
    process = cluster.spawn("metacontroller", [
        sys.executable, "-m", "tests.cluster.standin_metacontroller",
        "--kubeconfig", str(cluster.kubeconfig),
        "--discovery-interval", "2s",
        # B's own tests run a second stand-in for the controllers they label standin-test.
        "--target-label-selector", "!standin-test",
    ], env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO)
    time.sleep(1)
    if reason := process.exited():
        raise ClusterError(reason)
    return process


class Operator:
    """CRDs, controller configs, hook server and Metacontroller on `cluster`, in mode 'aks' or 'byo'."""

    def __init__(self, cluster: ControlPlane, arm, tls_dir: Path, mode: str = "aks", resync_seconds: str = "2"):
        self.cluster, self.arm, self.mode = cluster, arm, mode
        env = {**images_env(), "KAITO_NODE_PROVISIONING": mode, "KAITO_RESYNC_SECONDS": resync_seconds}
        self.token_server = None
        if mode == "aks":
            from fake_arm import CLUSTER, RESOURCE_GROUP, SUBSCRIPTION

            self.token_server = TokenServer(arm.token)
            env.update(
                AZURE_SUBSCRIPTION_ID=SUBSCRIPTION,
                AZURE_RESOURCE_GROUP=RESOURCE_GROUP,
                AZURE_CLUSTER_NAME=CLUSTER,
                ARM_ENDPOINT=arm.base_url,
                REQUESTS_CA_BUNDLE=str(Path(arm._tmp.name) / "cert.pem"),
                AZURE_TOKEN_CREDENTIALS="ManagedIdentityCredential",
                IDENTITY_ENDPOINT=self.token_server.url,
                IDENTITY_HEADER="kaito-cluster-test",
            )
        self.hooks = HookServer(cluster, env, tls_dir, name=f"hooks-{mode}")
        self.crds, self.controllers = operator_manifests(self.hooks.url, mode)
        self.install()

    def install(self) -> None:
        self.cluster.kubectl("apply", "--server-side", "-f", "-", input=yaml_stream(self.crds))
        names = [f"crd/{c['metadata']['name']}" for c in self.crds]
        self.cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", *names)
        self.cluster.kubectl("apply", "-f", "-", input=yaml_stream(self.controllers))

    def uninstall(self) -> None:
        """Remove the controller configs (not the CRDs: objects of other modes may still exist)."""
        self.cluster.kubectl("delete", "-f", "-", "--ignore-not-found", "--wait=false",
                             input=yaml_stream(self.controllers))

    def stop(self) -> None:
        if self.hooks.process:
            self.hooks.process.stop()
        if self.token_server:
            self.token_server.stop()
