"""`make cluster` / `make cluster-down`: the local control plane with the operator, in the background.

    python tests/cluster/up.py start   # build (cached), start, print the export KUBECONFIG=... line
    python tests/cluster/up.py stop    # stop everything it started
    python tests/cluster/up.py run     # the same in the foreground (Ctrl-C stops)
    python tests/cluster/up.py run --example FILE
                                       # `make run`: also apply FILE, show `kubectl get workspace -w` until
                                       # WORKSPACEREADY, print the export KUBECONFIG=... line, run until Ctrl-C
    python tests/cluster/up.py front --workspace NAME [--namespace NS]
                                       # `make cluster-front`: the Workspace's wake front on loopback and a
                                       # model server standing in for its pod; prints the URL; until Ctrl-C

What runs: the control plane of tests/cluster/controlplane.py, the operator as installed by
`kubectl apply -k metacontroller/` (hooks on loopback, Machines against the fake ARM server), and an
AKS simulator: an agent pool the fake ARM accepts becomes, POOL_DELAY_S later, a kwok Node with the
pool's labels, taints and the SKU's nvidia.com/gpu (and disappears when the pool is deleted). State
and logs: $KAITO_CLUSTER_STATE (default ~/.cache/kaito-sglang/cluster-run).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent), str(HERE.parents[1])]  # harness, tests/ helpers, repository root

from controlplane import ClusterError, ControlPlane, build  # noqa: E402

POOL_DELAY_S = 10
STATE = Path(os.environ.get("KAITO_CLUSTER_STATE") or Path.home() / ".cache" / "kaito-sglang" / "cluster-run")
START_TIMEOUT_S = 3600  # a cold build included


def show_example(cluster: ControlPlane, example: Path, stop: threading.Event, timeout: float = 600) -> bool:
    """Apply `example` and stream `kubectl get workspace -w` until its WORKSPACEREADY column is True."""
    import yaml

    doc = yaml.safe_load(example.read_text())
    name, namespace = doc["metadata"]["name"], doc["metadata"].get("namespace", "default")
    print(f"$ kubectl apply -f {example}", flush=True)
    print(cluster.kubectl("apply", "-f", str(example)).stdout, end="", flush=True)
    print(f"$ kubectl get workspace {name} -w", flush=True)
    watch = subprocess.Popen(
        [str(cluster.bin / "kubectl"), "get", "workspace", name, "-n", namespace, "-w"],
        stdout=subprocess.PIPE,
        text=True,
        env=cluster.env(),
    )
    assert watch.stdout is not None
    deadline, header = time.monotonic() + timeout, None
    try:
        for line in watch.stdout:
            print(line, end="", flush=True)
            if header is None:
                header = line.split()
                continue
            row = dict(zip(header, line.split(), strict=False))
            if row.get("WORKSPACEREADY") == "True":
                return True
            if stop.is_set() or time.monotonic() > deadline:
                return False
    finally:
        watch.terminate()
        watch.wait(10)
    return False


def run(state: Path, example: Path | None = None) -> int:
    from arm_support.fake_arm import FakeArm
    from operator_stack import (
        METACONTROLLER_SOURCE,
        AksSimulator,
        Install,
        Metacontroller,
        Operator,
        install_hook_namespace,
        install_metacontroller,
        session_crds,
    )

    started = time.monotonic()
    built = build()
    if not (built / "bin" / "metacontroller").exists():
        raise ClusterError(f"{METACONTROLLER_SOURCE} is absent: Metacontroller is built from its source there")
    for stale in ("etcd", "logs", "pki"):
        shutil.rmtree(state / stale, ignore_errors=True)
    cluster = ControlPlane(state, built)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with FakeArm() as arm:
        simulator = operator = metacontroller = None
        try:
            cluster.start(session_crds(cluster.bin / "kubectl"))
            install = Install(cluster.bin / "kubectl", "aks")
            install_metacontroller(cluster, install)
            install_hook_namespace(cluster, state / "hooks-tls")
            operator = Operator(cluster, arm, state / "hooks-tls", "aks", resync_seconds="5")
            metacontroller = Metacontroller(cluster, install)
            simulator = AksSimulator(arm, cluster, delay=POOL_DELAY_S)
            (state / "ready").write_text(f"{time.monotonic() - started:.1f}\n")
            print(f"ready in {time.monotonic() - started:.1f} s; kubeconfig {cluster.kubeconfig}", flush=True)
            if example is not None:
                if not show_example(cluster, example, stop):
                    print(f"{example} did not become ready; logs: {cluster.logdir}", file=sys.stderr, flush=True)
                print(
                    f"\nThe operator runs on a local control plane (real Metacontroller, fake ARM, kwok GPU nodes)."
                    f" Use it with:\n\nexport KUBECONFIG={cluster.kubeconfig} PATH={cluster.bin}:$PATH\n\n"
                    "Ctrl-C stops everything.",
                    flush=True,
                )
            while not stop.wait(2):
                if reason := cluster.alive():
                    print(reason, file=sys.stderr, flush=True)
                    return 1
            return 0
        finally:
            if simulator:
                simulator.stop()
            if metacontroller:
                metacontroller.stop()
            if operator:
                operator.stop()
            cluster.stop()


def front(state: Path, name: str, namespace: str) -> int:
    """Run the wake front of Workspace namespace/name as its `<name>-front` Deployment would, on loopback.

    kwok runs no process, so two things stand in for pods: the front is the real `python -m
    inference.wake_front` with the Deployment's own arguments and a token of the `<name>-front`
    ServiceAccount (whose Role allows only `patch` on this Workspace's scale subresource), listening on
    127.0.0.1 and relaying to the second, a real model server (the transformers runtime on a tiny random
    model) that serves while the Workspace's Deployment has a Ready replica, as its pod would."""
    import yaml
    from loopback_support import free_port
    from scale_to_zero_support import Replica, stand_in_weights, wake_front_argv

    cluster = ControlPlane(state, build())
    config = yaml.safe_load(cluster.kubeconfig.read_text())["clusters"][0]["cluster"]
    deployment = json.loads(cluster.kubectl("get", "deployment", f"{name}-front", "-n", namespace, "-o", "json").stdout)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    rendered = container["args"]
    served = rendered[rendered.index("--served-model-name") + 1]
    work = state / "fronts" / f"{namespace}-{name}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    token = work / "token"
    token.write_text(cluster.kubectl("create", "token", f"{name}-front", "-n", namespace).stdout.strip() + "\n")
    print(f"stand-in model ({served}, a tiny random model) in {work / 'weights'}...", flush=True)
    replica = Replica(stand_in_weights(work / "weights"), served, work)
    port = free_port()
    # The rendered arguments first; the loopback upstream, address and API server credentials override them.
    argv = wake_front_argv(
        served,
        replica.url,
        port,
        f"{namespace}/{name}",
        config["server"],
        token,
        "--ca-file",
        config["certificate-authority"],
    )
    argv[3:3] = rendered
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with open(work / "front.log", "wb") as log:
        proc = subprocess.Popen(argv, cwd=HERE.parents[1], stdout=log, stderr=subprocess.STDOUT)
        try:
            print(
                f"front of {namespace}/{name}: curl http://127.0.0.1:{port}/v1/chat/completions"
                f" (logs: {work}; Ctrl-C stops the front and the stand-in)",
                flush=True,
            )
            while not stop.wait(2):
                if proc.poll() is not None:
                    print(f"the front exited ({proc.returncode}); see {work / 'front.log'}", file=sys.stderr)
                    return 1
                replica.follow(_ready_replicas(cluster, name, namespace))
            return 0
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
            replica.close()


def _ready_replicas(cluster: ControlPlane, name: str, namespace: str) -> int:
    """Ready pods of the Workspace's Deployment (0 while it is absent or the apiserver does not answer)."""
    out = cluster.kubectl(
        "get", "deployment", name, "-n", namespace, "-o", "jsonpath={.status.readyReplicas}", check=False
    )
    return int(out.stdout.strip() or 0) if out.returncode == 0 else 0


def start(state: Path) -> int:
    if (state / "pid").exists() and _alive(int((state / "pid").read_text())):
        print(f"already running (pid {(state / 'pid').read_text().strip()}); export KUBECONFIG={state / 'kubeconfig'}")
        return 0
    state.mkdir(parents=True, exist_ok=True)
    for stale in ("ready", "kubeconfig", "pid"):
        (state / stale).unlink(missing_ok=True)
    log = open(state / "up.log", "wb")  # noqa: SIM115 - handed to the background process
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "run"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "KAITO_CLUSTER_STATE": str(state)},
    )
    (state / "pid").write_text(str(proc.pid))
    print(
        f"starting the local control plane (log: {state / 'up.log'}; a cold build takes tens of minutes)...", flush=True
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    while not (state / "ready").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            print((state / "up.log").read_text(errors="replace")[-6000:], file=sys.stderr)
            print("the local control plane did not start (see above)", file=sys.stderr)
            stop(state)
            return 1
        time.sleep(1)
    bin_dir = build() / "bin"  # cached by now: kubectl 1.35 (an older one may not talk to this apiserver)
    print(
        f"ready in {(state / 'ready').read_text().strip()} s. Use it with:\n\n"
        f"export KUBECONFIG={state / 'kubeconfig'} PATH={bin_dir}:$PATH\n"
    )
    print("kubectl apply -f examples/inference-phi-3.yaml && kubectl get workspace -w")
    print("`make cluster-down` stops it.")
    return 0


def stop(state: Path) -> int:
    pid_file = state / "pid"
    if not pid_file.exists():
        print("not running")
        return 0
    pid = int(pid_file.read_text())
    if _alive(pid):
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
    for name in ("pid", "ready"):
        (state / name).unlink(missing_ok=True)
    print("stopped")
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (our exited child not yet reaped) counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("start", "stop", "run", "front"))
    parser.add_argument("--example", type=Path, help="with run: a Workspace to apply and watch until ready")
    parser.add_argument("--workspace", help="with front: the Workspace (with kaito.sh/scale-to-zero-after)")
    parser.add_argument("--namespace", default="default", help="with front: its namespace")
    args = parser.parse_args()
    STATE.mkdir(parents=True, exist_ok=True)
    try:
        if args.command == "run":
            return run(STATE, args.example)
        if args.command == "front":
            if not args.workspace:
                parser.error("front needs --workspace NAME")
            return front(STATE, args.workspace, args.namespace)
        return {"start": start, "stop": stop}[args.command](STATE)
    except ClusterError as error:
        print(error, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
