"""A real Kubernetes control plane on loopback for the cluster tests and `make cluster`.

etcd, kube-apiserver, kube-controller-manager (only the controllers the operator relies on),
kube-scheduler and kwok (fake Nodes and Pods: there is no kubelet and no container runtime here),
built from their Go modules by tests/cluster/build.sh. Every component listens on 127.0.0.1 on a
free port and logs to its own file under the work folder; `ControlPlane.logs()` returns them for a
failure report. Waits are bounded; `stop()` ends every process it started.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
BUILD_SCRIPT = HERE / "build.sh"
TOKEN = "kaito-cluster-test-token"
# Each component authenticates as itself (static tokens), and RBAC decides what it may do: the
# controller-manager and the scheduler as the users the apiserver's bootstrap roles are bound to, kwok
# (the kubelets' stand-in) as its own user bound to cluster-admin below. The admin user is the person
# at the keyboard (kubectl in tests).
IDENTITIES = {
    "admin": (TOKEN, "admin", "system:masters"),
    "kube-controller-manager": ("kaito-cluster-test-kcm", "system:kube-controller-manager", ""),
    "kube-scheduler": ("kaito-cluster-test-scheduler", "system:kube-scheduler", ""),
    "kwok": ("kaito-cluster-test-kwok", "kaito:kwok", ""),
}
# Nodes kwok manages (it leaves every other Node alone); tests and the AKS simulator set this label.
KWOK_NODE_LABEL = ("kwok.x-k8s.io/node", "fake")
# deployment+replicaset: a single-node preset is served by a Deployment (N replicas), multi-node by a StatefulSet.
# resourcequota: the README's count/machines.kaito.sh quota is only enforced once its usage is computed.
# horizontalpodautoscaling: KEDA scales a Workspace above 1 through an HPA on its scale subresource.
CONTROLLERS = (
    "namespace,serviceaccount,garbagecollector,statefulset,deployment,replicaset,job,resourcequota,"
    "horizontalpodautoscaling"
)
# How often the HPA controller reconciles (upstream: 15 s), so that scaling tests wait seconds, not minutes.
HPA_SYNC_PERIOD = "5s"
# The identity the apiserver's aggregation layer presents to extension apiservers (KEDA's metrics adapter),
# which trust it through the requestheader CA the apiserver publishes in kube-system/extension-apiserver-authentication.
FRONT_PROXY_CLIENT = "front-proxy-client"


class ClusterError(RuntimeError):
    """The control plane could not be built or started; the message names the component."""


def go_available() -> bool:
    return shutil.which("go") is not None or bool(os.environ.get("KAITO_CLUSTER_CACHE"))


class Build:
    """tests/cluster/build.sh in the background at low priority, so a cold build (tens of minutes)
    overlaps other work; `result()` waits for it. A warm run is instant."""

    def __init__(self):
        if not go_available():
            raise ClusterError("Go is not installed: the control plane is built from Go modules (see README)")
        self.log = Path(tempfile.mkstemp(prefix="kaito-cluster-build-", suffix=".log")[1])
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                dying_with_parent(["nice", "-n", "10", "bash", str(BUILD_SCRIPT)]),
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )

    def result(self, timeout: float = 3600) -> Path:
        """The folder holding bin/ and stages/."""
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise ClusterError(f"tests/cluster/build.sh took over {timeout:.0f}s; log {self.log}") from None
        if self.proc.returncode != 0:
            tail = self.log.read_text(errors="replace")[-6000:]
            raise ClusterError(f"tests/cluster/build.sh failed ({self.proc.returncode}):\n{tail}")
        return Path(out.strip().splitlines()[-1])


def build(timeout: float = 3600) -> Path:
    """Run build.sh (instant when cached) and return the folder holding bin/ and stages/."""
    return Build().result(timeout)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(
    what: str,
    probe: Callable[[], object],
    timeout: float,
    every: float = 0.2,
    alive: Callable[[], str | None] | None = None,
):
    """Call `probe` until it returns something truthy; raise with its last answer after `timeout`.

    `alive` returns a reason when waiting has become pointless (a process exited)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = probe()
            if value:
                return value
            last = value
        except Exception as error:  # noqa: BLE001 - not there yet; the last error explains a timeout
            last = error
        if alive is not None and (reason := alive()):
            raise ClusterError(f"{what}: {reason}")
        if time.monotonic() > deadline:
            raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")
        time.sleep(every)


def dying_with_parent(argv: list[str]) -> list[str]:
    """argv run so that it gets SIGTERM when the process that started it dies, even by SIGKILL (a killed
    pytest must not leave an apiserver behind): util-linux's setpriv --pdeathsig where it exists."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--", *argv] if setpriv else argv


class Process:
    """One component: a subprocess with its output in `log`."""

    def __init__(
        self, name: str, argv: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None
    ):
        self.name, self.argv, self.log = name, argv, log
        self._out = open(log, "ab")  # noqa: SIM115 - open for the process's lifetime, closed by stop()
        self.proc = subprocess.Popen(
            dying_with_parent(argv),
            stdout=self._out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )

    def exited(self) -> str | None:
        code = self.proc.poll()
        return None if code is None else f"{self.name} exited with {code}; log {self.log}:\n{self.tail()}"

    def tail(self, chars: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, grace: float = 10) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._out.close()


def write_service_account_key(path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


def write_front_proxy_pki(pki: Path) -> None:
    """front-proxy-ca.crt and front-proxy-client.crt/.key: the CA extension apiservers trust for the
    aggregator's requests, and the client certificate the aggregator presents (CN FRONT_PROXY_CLIENT)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def certificate(subject: str, key, issuer: str, signer, ca: bool) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, client_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = certificate("front-proxy-ca", ca_key, "front-proxy-ca", ca_key, ca=True)
    client = certificate(FRONT_PROXY_CLIENT, client_key, "front-proxy-ca", ca_key, ca=False)
    (pki / "front-proxy-ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (pki / "front-proxy-client.crt").write_bytes(client.public_bytes(serialization.Encoding.PEM))
    (pki / "front-proxy-client.key").write_bytes(
        client_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


def aggregation_flags(pki: Path) -> list[str]:
    """kube-apiserver's aggregation layer, for an APIService served by a process on loopback (KEDA's metrics
    adapter as v1beta1.external.metrics.k8s.io). The aggregator dials the APIService's Service by its cluster
    address (no --enable-aggregator-routing: that resolves only Services with endpoints, never ExternalName),
    so such a Service is an ExternalName `localhost`."""
    write_front_proxy_pki(pki)
    return [
        f"--requestheader-client-ca-file={pki / 'front-proxy-ca.crt'}",
        f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
        f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
    ]


def kubeconfig(server: str, ca_file: Path, token: str, user: str = "admin") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kaito-local", "cluster": {"server": server, "certificate-authority": str(ca_file)}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "kaito-local", "context": {"cluster": "kaito-local", "user": user}}],
        "current-context": "kaito-local",
    }


class ControlPlane:
    """Start with `start()` (or as a context manager); `kubeconfig` is the file clients use."""

    def __init__(self, workdir: Path, built: Path):
        self.workdir, self.bin, self.stages = workdir, built / "bin", built / "stages"
        self.logdir = workdir / "logs"
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.kubeconfig = workdir / "kubeconfig"
        self.processes: dict[str, Process] = {}
        self.server = ""

    def __enter__(self) -> ControlPlane:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_exc) -> None:
        self.stop()

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self, crds: str = "") -> None:
        """Start everything; `crds` (a YAML stream) is applied before the controller-manager starts,
        so that its garbage collector knows those kinds from the start (it rediscovers every 30 s)."""
        self._start_etcd()
        self._start_apiserver()
        if crds:
            self.kubectl("apply", "--server-side", "-f", "-", input=crds)
            self.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
        self.kubectl(
            "create",
            "clusterrolebinding",
            "kaito-kwok",
            "--clusterrole=cluster-admin",
            f"--user={IDENTITIES['kwok'][1]}",
        )
        self.spawn(
            "kube-controller-manager",
            [
                str(self.bin / "kube-controller-manager"),
                f"--kubeconfig={self.component_kubeconfig('kube-controller-manager')}",
                # Each controller acts as its own ServiceAccount (kube-system/<controller>), as in a cluster.
                "--use-service-account-credentials",
                f"--root-ca-file={self.workdir / 'pki' / 'apiserver.crt'}",
                f"--controllers={CONTROLLERS}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                f"--service-account-private-key-file={self.workdir / 'sa.key'}",
                "--concurrent-gc-syncs=5",
                f"--horizontal-pod-autoscaler-sync-period={HPA_SYNC_PERIOD}",
            ],
        )
        self.spawn(
            "kube-scheduler",
            [
                str(self.bin / "kube-scheduler"),
                f"--kubeconfig={self.component_kubeconfig('kube-scheduler')}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
            ],
        )
        stage_files = sorted(p for p in self.stages.glob("*.yaml"))
        self.spawn(
            "kwok",
            [
                str(self.bin / "kwok"),
                f"--kubeconfig={self.component_kubeconfig('kwok')}",
                f"--manage-nodes-with-label-selector={KWOK_NODE_LABEL[0]}={KWOK_NODE_LABEL[1]}",
                "--node-ip=127.0.0.1",
                "--cidr=10.244.0.1/16",
                f"--server-address=127.0.0.1:{free_port()}",
                *(f"--config={p}" for p in stage_files),
            ],
        )
        # The serviceaccount controller makes `default` in each namespace: pods need it to be admitted.
        self.wait_for(
            "the controller-manager to create serviceaccount default/default",
            lambda: self.kubectl("get", "serviceaccount", "default", "-n", "default", check=False).returncode == 0,
            timeout=60,
        )

    def stop(self) -> None:
        for process in reversed(list(self.processes.values())):
            process.stop()
        self.processes.clear()

    def spawn(self, name: str, argv: list[str], **kwargs) -> Process:
        process = Process(name, argv, self.logdir / f"{name}.log", **kwargs)
        self.processes[name] = process
        return process

    def alive(self) -> str | None:
        """Why the control plane is broken (a component exited), or None."""
        for process in self.processes.values():
            if reason := process.exited():
                return reason
        return None

    def wait_for(self, what: str, probe: Callable[[], object], timeout: float = 60, every: float = 0.3):
        return wait_until(what, probe, timeout, every, alive=self.alive)

    def logs(self, chars: int = 6000) -> str:
        """The end of every component's log, for a failure report."""
        parts = []
        for log in sorted(self.logdir.glob("*.log")):
            text = log.read_text(errors="replace")
            parts.append(f"===== {log.name} (last {min(chars, len(text))} of {len(text)} chars) =====\n{text[-chars:]}")
        return "\n".join(parts)

    # ---- components --------------------------------------------------------------------------
    def _start_etcd(self) -> None:
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        self.spawn(
            "etcd",
            [
                str(self.bin / "etcd"),
                "--name=kaito-test",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=kaito-test=http://127.0.0.1:{peer}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )

        def healthy() -> bool:
            import requests

            return requests.get(self.etcd_url + "/health", timeout=2).json().get("health") == "true"

        self.wait_for("etcd /health", healthy, timeout=30)

    def _start_apiserver(self) -> None:
        port = free_port()
        pki = self.workdir / "pki"
        pki.mkdir(exist_ok=True)
        write_service_account_key(self.workdir / "sa.key")
        (self.workdir / "tokens.csv").write_text(
            "".join(
                f"{token},{user},{user}" + (f',"{group}"' if group else "") + "\n"
                for token, user, group in IDENTITIES.values()
            )
        )
        self.server = f"https://127.0.0.1:{port}"
        self.spawn(
            "kube-apiserver",
            [
                str(self.bin / "kube-apiserver"),
                f"--etcd-servers={self.etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={pki}",
                f"--token-auth-file={self.workdir / 'tokens.csv'}",
                "--authorization-mode=Node,RBAC",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={self.workdir / 'sa.key'}",
                f"--service-account-signing-key-file={self.workdir / 'sa.key'}",
                "--service-cluster-ip-range=10.96.0.0/16",
                # Without the node-lifecycle controller, new Nodes would keep a not-ready taint.
                "--disable-admission-plugins=TaintNodesByCondition",
                "--endpoint-reconciler-type=none",
                *aggregation_flags(pki),
            ],
        )
        ca = pki / "apiserver.crt"
        self.wait_for("kube-apiserver's self-signed certificate", ca.exists, timeout=60)
        self.ca = ca
        self.kubeconfig.write_text(yaml.safe_dump(kubeconfig(self.server, ca, TOKEN)))

        def ready() -> bool:
            import requests

            answer = requests.get(
                self.server + "/readyz", headers={"Authorization": f"Bearer {TOKEN}"}, verify=str(ca), timeout=5
            )
            return answer.status_code == 200

        self.wait_for("kube-apiserver /readyz", ready, timeout=120, every=0.5)

    # ---- clients -----------------------------------------------------------------------------
    def component_kubeconfig(self, component: str) -> Path:
        """A kubeconfig for one of IDENTITIES."""
        token, user, _group = IDENTITIES[component]
        path = self.workdir / f"{component}.kubeconfig"
        path.write_text(yaml.safe_dump(kubeconfig(self.server, self.ca, token, user)))
        return path

    def token_kubeconfig(self, name: str, token: str) -> Path:
        """A kubeconfig that authenticates with `token` (a ServiceAccount token from `kubectl create token`)."""
        path = self.workdir / f"{name}.kubeconfig"
        path.write_text(yaml.safe_dump(kubeconfig(self.server, self.ca, token, name)))
        return path

    def service_account_kubeconfig(self, namespace: str, account: str, *bound_to: str, duration: str = "24h") -> Path:
        """A kubeconfig with a token of ServiceAccount namespace/account (`bound_to`: kubectl create token's
        --bound-object-kind and --bound-object-name, for a pod-bound token)."""
        bound = ["--bound-object-kind", bound_to[0], "--bound-object-name", bound_to[1]] if bound_to else []
        token = self.kubectl("create", "token", account, "-n", namespace, "--duration", duration, *bound).stdout.strip()
        return self.token_kubeconfig(f"sa-{namespace}-{account}", token)

    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig), "PATH": f"{self.bin}:{os.environ.get('PATH', '')}"}

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess:
        """The kubectl built with the control plane (the machine's may be too old)."""
        out = subprocess.run(
            [str(self.bin / "kubectl"), *args],
            input=input,
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=timeout,
            check=False,
        )
        if check and out.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
        return out

    def api_client(self):
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))
