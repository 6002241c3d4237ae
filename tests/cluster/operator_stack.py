"""The operator on the local control plane: the install (`kubectl apply -k metacontroller/`, rendered by
kustomize), the real Metacontroller v4.17.2 with a token of its installed ServiceAccount, the hook server
under gunicorn on loopback, the fake ARM server and an AKS simulator that turns agent pools into kwok Nodes.

The install is rendered as a user's `kubectl apply -k` renders it, with one change: Metacontroller's
upstream manifests come from its source beside the checkout (../shared/third_party/metacontroller-v4.17.2/
manifests/production, the same files the pinned URL serves; GitHub is unreachable here). Applied as
rendered: Metacontroller's namespace, ServiceAccount and the install's least-privilege ClusterRole, our
CRDs, the hook server's namespace, ServiceAccount, Service and ConfigMaps, the admission policy. Not
applied, run as local processes instead: Metacontroller's StatefulSet (the binary runs with its container's
args, listeners on 127.0.0.1) and the hook Deployment. Each controller's `webhook.service` becomes
`webhook.url` on loopback; everything else in them (mutual TLS included) stays as shipped.
Bring-your-own-nodes mode renders overlays/byo/ the same way, and the KEDA mode overlays/keda/ (the AKS
install whose InferenceSet controller also owns ScaledObjects).

Azure's servers and Azure AD cannot exist here. The hook server runs unchanged (`python -m hooks
serve`, DefaultAzureCredential); ARM_ENDPOINT points at tests/arm_support/fake_arm.py, REQUESTS_CA_BUNDLE at its
self-signed certificate, and the managed-identity endpoint (IDENTITY_ENDPOINT) at a loopback token
server below that hands out the fake ARM's token.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml
from controlplane import KWOK_NODE_LABEL, ClusterError, ControlPlane, Process, free_port, wait_until

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "metacontroller"
BYO = REPO / "overlays" / "byo"
KEDA = REPO / "overlays" / "keda"
# The kustomization each mode renders, relative to the copied checkout; 'keda' is AKS mode with KEDA installed.
MODE_TARGETS = {"aks": "metacontroller", "byo": "overlays/byo", "keda": "overlays/keda"}
AKS_MODES = ("aks", "keda")
SHARED = REPO.parent / "shared"
METACONTROLLER_SOURCE = SHARED / "third_party" / "metacontroller-v4.17.2"
METACONTROLLER_MANIFESTS = METACONTROLLER_SOURCE / "manifests" / "production"
METACONTROLLER_CRDS = METACONTROLLER_MANIFESTS / "metacontroller-crds-v1.yaml"
METACONTROLLER_URL = "https://github.com/metacontroller/metacontroller/manifests/production?ref=v4.17.2"
# Kinds that run here as local processes instead of pods.
RUN_LOCALLY = {("StatefulSet", "metacontroller"), ("Deployment", "kaito-hooks")}
CONTROLLER_KINDS = {"CompositeController", "DecoratorController"}


# ---- manifests ---------------------------------------------------------------------------------
def load_all(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def yaml_stream(docs: list[dict]) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False)


@functools.cache
def rendered_install(kubectl: Path, mode: str) -> tuple[dict, ...]:
    """`kubectl kustomize metacontroller/` ('aks'), `overlays/byo/` ('byo') or `overlays/keda/` ('keda'), with
    Metacontroller's upstream manifests read from its source folder instead of the pinned URL."""
    if not METACONTROLLER_MANIFESTS.is_dir():
        raise ClusterError(f"{METACONTROLLER_MANIFESTS} is absent: Metacontroller's manifests come from ../shared")
    with tempfile.TemporaryDirectory(prefix="kaito-install-") as tmp:
        root = Path(tmp)
        shutil.copytree(INSTALL, root / "metacontroller")
        shutil.copytree(BYO, root / "overlays" / "byo")
        shutil.copytree(KEDA, root / "overlays" / "keda")
        shutil.copytree(METACONTROLLER_MANIFESTS, root / "metacontroller-upstream")
        kustomization = root / "metacontroller" / "kustomization.yaml"
        text = kustomization.read_text()
        if METACONTROLLER_URL not in text:
            raise ClusterError(f"metacontroller/kustomization.yaml no longer names {METACONTROLLER_URL}")
        kustomization.write_text(text.replace(METACONTROLLER_URL, "../metacontroller-upstream"))
        target = root / MODE_TARGETS[mode]
        out = subprocess.run([str(kubectl), "kustomize", str(target)], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise ClusterError(f"kubectl kustomize {mode} failed:\n{out.stderr}")
    return tuple(doc for doc in yaml.safe_load_all(out.stdout) if doc)


def session_crds(kubectl: Path) -> str:
    """The CRDs a test control plane starts with (before its garbage collector): the install's, with
    Metacontroller's when its manifests are here; only ours (metacontroller/*crd*.yaml) otherwise."""
    if METACONTROLLER_MANIFESTS.is_dir():
        return yaml_stream(Install(kubectl, "aks").crds)
    return yaml_stream([doc for path in sorted(INSTALL.glob("*crd*.yaml")) for doc in load_all(path)])


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


class Install:
    """The rendered install of one mode, sorted by what the harness does with each object."""

    def __init__(self, kubectl: Path, mode: str):
        docs = rendered_install(kubectl, mode)
        self.mode = mode
        self.crds = [d for d in docs if d["kind"] == "CustomResourceDefinition"]
        self.controllers = [d for d in docs if d["kind"] in CONTROLLER_KINDS]
        self.local = {
            (d["kind"], d["metadata"]["name"]): d for d in docs if (d["kind"], d["metadata"]["name"]) in RUN_LOCALLY
        }
        self.objects = [
            d
            for d in docs
            if d["kind"] not in CONTROLLER_KINDS | {"CustomResourceDefinition"}
            and (d["kind"], d["metadata"]["name"]) not in RUN_LOCALLY
        ]

    def controllers_calling(self, hook_url: str) -> list[dict]:
        return [point_hooks_at(c, hook_url) for c in self.controllers]

    def container(self, kind: str, name: str) -> dict:
        return self.local[(kind, name)]["spec"]["template"]["spec"]["containers"][0]

    def metacontroller_args(self) -> list[str]:
        """The args of the installed Metacontroller container (upstream's, plus the install's patches)."""
        return list(self.container("StatefulSet", "metacontroller").get("args", []))

    def hook_env(self) -> dict[str, str]:
        """The hook container's plain env values and its envFrom ConfigMaps' data, resolved from the
        rendered ConfigMaps (what the pod would see)."""
        configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in self.objects if d["kind"] == "ConfigMap"}
        container = self.container("Deployment", "kaito-hooks")
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            env.update(configmaps[source["configMapRef"]["name"]])
        for item in container.get("env", []):
            if "value" in item:
                env[item["name"]] = item["value"]
            elif (ref := (item.get("valueFrom") or {}).get("configMapKeyRef")) and ref["key"] in configmaps.get(
                ref["name"], {}
            ):
                env[item["name"]] = configmaps[ref["name"]][ref["key"]]
        return env


def install_hook_namespace(cluster: ControlPlane, tls_dir: Path) -> None:
    """The README's first steps (`kubectl create namespace kaito-system`, then `python -m hooks certs |
    kubectl apply -f -`) with 127.0.0.1 as an extra server name; the hook server's Secret is also written
    to `tls_dir`, as its pod mounts it."""
    import base64

    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kaito-system"}}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(namespace))
    out = subprocess.run(
        [sys.executable, "-m", "hooks", "certs", "--namespace", "kaito-system", "--extra-name", "127.0.0.1"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    )
    cluster.kubectl("apply", "-f", "-", input=out.stdout)
    server = next(d for d in yaml.safe_load_all(out.stdout) if d and d["metadata"]["name"] == "kaito-hooks-tls")
    tls_dir.mkdir(parents=True, exist_ok=True)
    for key, value in server["data"].items():
        (tls_dir / key).write_bytes(base64.b64decode(value))
        (tls_dir / key).chmod(0o600)


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
                body = json.dumps(
                    {
                        "access_token": token,
                        "expires_on": str(int(time.time()) + 3600),
                        "resource": "https://management.azure.com",
                        "token_type": "Bearer",
                    }
                ).encode()
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

    `provision(pool)`: the pool succeeds and its Node joins; `scale(pool)`: a count change (0: the Node stays,
    NotReady; 1: Ready again) and the pool succeeds, done by the thread for every Updating pool; `remove(pool)`:
    the pool is gone (ARM answers 404) and its Node leaves. A background thread does both on its own: with `delay` set, for
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

    def scale(self, pool_name: str) -> None:
        """A count-change PUT took effect: at count 0 (scaleDownMode Deallocate) the VM is deallocated and its Node
        stays registered, NotReady (kwok stops managing it); at count 1 the VM runs again and kwok marks the same
        Node Ready. Then the pool is Succeeded."""
        node = node_name_for_pool(pool_name)
        label = f"{KWOK_NODE_LABEL[0]}={KWOK_NODE_LABEL[1]}"
        if self.arm.state.pools[pool_name]["properties"].get("count", 1) == 0:
            self.cluster.kubectl("label", "node", node, f"{KWOK_NODE_LABEL[0]}-")
            not_ready = {"type": "Ready", "status": "False", "reason": "NodeDeallocated", "message": "VM deallocated"}
            patch = {"status": {"conditions": [not_ready]}}
            self.cluster.kubectl("patch", "node", node, "--subresource=status", "-p", json.dumps(patch))
        else:
            self.cluster.kubectl("label", "node", node, label, "--overwrite")
        self.arm.set_state(pool_name, "Succeeded")

    def remove(self, pool_name: str) -> None:
        self.cluster.kubectl("delete", "node", node_name_for_pool(pool_name), "--ignore-not-found", "--wait=false")
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
                    elif state == "Updating":
                        self.scale(name)
                    elif state == "Deleting" and self.finish_deletes:
                        self.remove(name)
                        self._seen.pop(name, None)
            except Exception as error:  # noqa: BLE001 - keep simulating; the log says what went wrong
                print(f"aks simulator: {error}", file=sys.stderr, flush=True)


# ---- processes -----------------------------------------------------------------------------------
class HookServer:
    """`python -m hooks serve --tls-dir` on a loopback port; `kill()` kills it hard, `start()` again.

    It gets no Kubernetes credentials at all (no KUBECONFIG, an empty HOME, no ServiceAccount token): the
    hooks compute from Metacontroller's requests alone, and would fail here if they called the API."""

    def __init__(self, cluster: ControlPlane, env: dict[str, str], tls_dir: Path, name: str = "hooks"):
        self.cluster, self.name, self.port, self.tls_dir = cluster, name, free_port(), tls_dir
        self.url = f"https://127.0.0.1:{self.port}"
        drop = ("AZURE_", "ARM_", "IDENTITY_", "MSI_", "KAITO_", "REQUESTS_CA_BUNDLE", "KUBECONFIG", "KUBERNETES_")
        home = cluster.workdir / f"{name}-home"
        home.mkdir(exist_ok=True)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
        self.env.update(env, PYTHONPATH=str(REPO), HOME=str(home))
        self.process: Process | None = None
        self.start()

    def start(self) -> None:
        self.process = self.cluster.spawn(
            self.name,
            [
                sys.executable,
                "-m",
                "hooks",
                "serve",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                "2",
                "--tls-dir",
                str(self.tls_dir),
            ],
            env=self.env,
            cwd=REPO,
        )

        def healthy() -> bool:
            import requests

            return requests.get(self.url + "/healthz", timeout=2, verify=str(self.tls_dir / "ca.crt")).ok

        wait_until(f"{self.name} /healthz", healthy, timeout=60, alive=self.process.exited)

    def kill(self) -> None:
        assert self.process is not None
        os.killpg(self.process.proc.pid, 9)
        self.process.proc.wait(10)
        self.process.stop()


@functools.cache
def hooks_image() -> str:
    """The hooks image as `make images` builds it (cached layers: quick once built)."""
    from images_support import built

    return built("hooks")


def hook_server(cluster: ControlPlane, env: dict[str, str], tls_dir: Path, name: str, deployment: dict):
    """The hook server as a container of the built hooks image, run with the install Deployment's command,
    env, securityContext and mounts (`deployment`: as rendered for the mode) and with the images `make
    images` pushed in its KAITO_*_IMAGE settings when the loopback registry serves them (else the install's
    names); from the source tree (HookServer) where no image can be
    built and run here (no buildah/podman/runc and no Docker engine) or with KAITO_CLUSTER_HOOKS=source."""
    from images_support import ImageHookServer, container_tool, in_registry, pushed_images_env

    if os.environ.get("KAITO_CLUSTER_HOOKS") == "source" or container_tool() is None:
        why = "KAITO_CLUSTER_HOOKS=source" if container_tool() else "no buildah/podman/runc or Docker engine"
        print(f"{name}: the hook server runs from the source tree ({why})", file=sys.stderr, flush=True)
        return HookServer(cluster, env, tls_dir, name=name)
    pushed = pushed_images_env()
    if all(in_registry(reference) for reference in pushed.values()):
        env = {**env, **pushed}
    return ImageHookServer(hooks_image(), env, tls_dir, free_port(), deployment=deployment)


def with_flag(args: list[str], flag: str, value: str) -> list[str]:
    """`args` with `--flag=value` in place of any earlier `--flag=...` (appended when absent)."""
    kept = [a for a in args if not a.startswith(f"--{flag}=")]
    return [*kept, f"--{flag}={value}"]


class Metacontroller:
    """The real Metacontroller v4.17.2 (built by build.sh from ../shared/third_party) with the args of the
    installed StatefulSet, authenticated by a token of its installed ServiceAccount, so RBAC holds it to
    the install's ClusterRole. Listeners on 127.0.0.1; a shorter discovery interval, so that controllers
    over newly created CRDs start within seconds."""

    NAMESPACE, ACCOUNT = "metacontroller", "metacontroller"

    def __init__(
        self,
        cluster: ControlPlane,
        install: Install,
        discovery_interval: str = "2s",
        extra_args: tuple[str, ...] = (),
        name: str = "metacontroller",
    ):
        binary = cluster.bin / "metacontroller"
        if not binary.exists():
            raise ClusterError(f"{binary} is absent: build.sh builds it from {METACONTROLLER_SOURCE}")
        self.cluster, self.name = cluster, name
        self.kubeconfig = cluster.service_account_kubeconfig(self.NAMESPACE, self.ACCOUNT)
        self.health_port, self.metrics_port = free_port(), free_port()
        args = install.metacontroller_args()
        for flag, value in (
            ("discovery-interval", discovery_interval),
            ("metrics-address", f"127.0.0.1:{self.metrics_port}"),
            ("health-probe-bind-address", f"127.0.0.1:{self.health_port}"),
            ("kubeconfig", str(self.kubeconfig)),
        ):
            args = with_flag(args, flag, value)
        for extra in extra_args:
            args = with_flag(args, extra.split("=", 1)[0].removeprefix("--"), extra.split("=", 1)[1])
        self.argv = [str(binary), *args]
        self.process = self.start()

    def start(self) -> Process:
        process = self.cluster.spawn(self.name, self.argv)

        def ready() -> bool:
            import requests

            return requests.get(f"http://127.0.0.1:{self.health_port}/readyz", timeout=2).ok

        wait_until(f"{self.name} /readyz", ready, timeout=60, alive=process.exited)
        self.process = process
        return process

    def stop(self) -> None:
        self.process.stop()

    def metrics(self) -> str:
        import requests

        return requests.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text


def install_metacontroller(cluster: ControlPlane, install: Install) -> None:
    """Metacontroller's Namespace, ServiceAccount, ClusterRoles and binding as the install renders them."""
    wanted = [
        d
        for d in install.objects
        if d["metadata"].get("namespace") == Metacontroller.NAMESPACE
        or (d["kind"] == "Namespace" and d["metadata"]["name"] == Metacontroller.NAMESPACE)
        or d["kind"] in ("ClusterRole", "ClusterRoleBinding")
    ]
    cluster.kubectl("apply", "-f", "-", input=yaml_stream(wanted))


class Operator:
    """The install's objects, controller configs and a hook server on `cluster`, in mode 'aks', 'byo' or 'keda'
    (Metacontroller itself runs once per session: `Metacontroller`)."""

    def __init__(self, cluster: ControlPlane, arm, tls_dir: Path, mode: str = "aks", resync_seconds: str = "2"):
        self.cluster, self.arm, self.mode = cluster, arm, mode
        self.setup = Install(cluster.bin / "kubectl", mode)
        # Shorter than the install's periods, so that tests do not wait minutes: resyncs, and how long a
        # Machine freed by a scale-in is kept for a scale-out that may follow.
        env = {**self.setup.hook_env(), "KAITO_RESYNC_SECONDS": resync_seconds, "KAITO_SCALE_IN_GRACE_SECONDS": "5"}
        self.token_server = None
        if mode in AKS_MODES:
            from arm_support.fake_arm import CLUSTER, RESOURCE_GROUP, SUBSCRIPTION

            self.token_server = TokenServer(arm.token)
            env.update(
                AZURE_SUBSCRIPTION_ID=SUBSCRIPTION,
                AZURE_RESOURCE_GROUP=RESOURCE_GROUP,
                AZURE_CLUSTER_NAME=CLUSTER,
                # The install's identity, as the README has the user set it: kube-system's UID.
                KAITO_INSTALL_ID=cluster.kubectl(
                    "get", "namespace", "kube-system", "-o", "jsonpath={.metadata.uid}"
                ).stdout.strip(),
                ARM_ENDPOINT=arm.base_url,
                REQUESTS_CA_BUNDLE=str(Path(arm._tmp.name) / "cert.pem"),
                AZURE_TOKEN_CREDENTIALS="ManagedIdentityCredential",
                IDENTITY_ENDPOINT=self.token_server.url,
                IDENTITY_HEADER="kaito-cluster-test",
            )
        self.hooks = hook_server(
            cluster, env, tls_dir, f"hooks-{mode}", self.setup.local[("Deployment", "kaito-hooks")]
        )
        self.crds = self.setup.crds
        self.controllers = self.setup.controllers_calling(self.hooks.url)
        self.install()

    def install(self) -> None:
        self.cluster.kubectl("apply", "--server-side", "-f", "-", input=yaml_stream(self.crds))
        names = [f"crd/{c['metadata']['name']}" for c in self.crds]
        self.cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", *names)
        self.cluster.kubectl("apply", "-f", "-", input=yaml_stream(self.setup.objects))
        self.cluster.kubectl("apply", "-f", "-", input=yaml_stream(self.controllers))

    def uninstall(self) -> None:
        """Remove the controller configs (not the CRDs: objects of other modes may still exist)."""
        self.cluster.kubectl(
            "delete", "-f", "-", "--ignore-not-found", "--wait=false", input=yaml_stream(self.controllers)
        )

    def stop(self) -> None:
        if self.hooks.process:
            self.hooks.process.stop()
        if self.token_server:
            self.token_server.stop()
