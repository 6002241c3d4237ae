"""Many Workspaces at once on the real control plane and the real Metacontroller v4.17.2.

For each N (default 10, 50, 100) and each mode (bring-your-own nodes; aks against the fake ARM with an
AKS simulator that registers each pool's Node at once), N copies of quick start 1 are applied in one
`kubectl apply`, and the run waits until every one is WorkspaceReady. Each round runs twice on the same
control plane, side by side: Metacontroller with upstream's defaults (client-go 5 queries/s, burst 10,
5 workers) and with the install's flags (metacontroller/kustomization.yaml); the order alternates per
round. Reported per round: time until all are ready, the 50th/99th percentile of the time to ready per
Workspace, CPU seconds of the hook server and of Metacontroller, and the apiserver's request count
(apiserver_request_total), with the ratio upstream/tuned.

What the operator does here is real; the cluster is not a cluster: every component shares this
machine's cores, kwok stands in for kubelets, and there is no network latency.

Run: python benchmarks/bench_cluster_scale.py [--counts 10,50,100] [--modes byo,aks] [--repeat 1]
Needs Go (the control plane is built by tests/cluster/build.sh) and ../shared (Metacontroller's source).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "tests"), str(HERE.parent / "tests" / "cluster")]

from controlplane import ControlPlane, build  # noqa: E402
from operator_stack import (  # noqa: E402
    REPO,
    AksSimulator,
    Install,
    Metacontroller,
    Operator,
    gpu_node,
    install_hook_namespace,
    install_metacontroller,
    session_crds,
)

EXAMPLE = REPO / "examples" / "inference-phi-3.yaml"
TUNED_FLAGS = ("client-go-qps", "client-go-burst", "workers")
TIMEOUT_S = 1800


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process group's members (a gunicorn master and its workers)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pid:  # pgrp (fields after the command: state, ppid, pgrp, ...)
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def apiserver_requests(cluster: ControlPlane) -> int:
    text = cluster.kubectl("get", "--raw", "/metrics").stdout
    return int(
        sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("apiserver_request_total{"))
    )


def workspaces(n: int, namespace: str, label: dict[str, str] | None) -> str:
    import yaml

    base = yaml.safe_load(EXAMPLE.read_text())
    docs = []
    for i in range(n):
        doc = json.loads(json.dumps(base))
        doc["metadata"] = {"name": f"w{i}", "namespace": namespace}
        if label:
            doc["resource"]["labelSelector"] = {"matchLabels": label}
        docs.append(doc)
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": docs})


def ready_times(cluster: ControlPlane, namespace: str, n: int, started: float) -> list[float]:
    seen: dict[str, float] = {}
    deadline = time.monotonic() + TIMEOUT_S
    while len(seen) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(seen)} of {n} Workspaces ready after {TIMEOUT_S} s")
        out = json.loads(cluster.kubectl("get", "workspaces", "-n", namespace, "-o", "json", timeout=120).stdout)
        now = time.monotonic() - started
        for ws in out["items"]:
            conditions = {c["type"]: c["status"] for c in (ws.get("status") or {}).get("conditions") or []}
            if conditions.get("WorkspaceReady") == "True":
                seen.setdefault(ws["metadata"]["name"], now)
        time.sleep(1)
    return sorted(seen.values())


def one_round(cluster, operator, metacontroller, mode: str, n: int, tag: str) -> dict:
    namespace = f"scale-{mode}-{n}-{tag}"
    cluster.kubectl("create", "namespace", namespace)
    label = {"bench": namespace} if mode == "byo" else None
    nodes = []
    if label:
        for i in range(n):
            node = gpu_node(f"{namespace}-{i}", {**label, "node.kubernetes.io/instance-type": "Standard_NC6s_v3"}, 1)
            nodes.append(node["metadata"]["name"])
            cluster.kubectl("apply", "-f", "-", input=json.dumps(node))
    cluster.wait_for(
        f"serviceaccount default in {namespace}",
        lambda: cluster.kubectl("get", "sa", "default", "-n", namespace, check=False).returncode == 0,
    )
    hooks_cpu, mc_cpu = cpu_seconds(operator.hooks.process.proc.pid), cpu_seconds(metacontroller.process.proc.pid)
    requests = apiserver_requests(cluster)
    started = time.monotonic()
    cluster.kubectl("apply", "-f", "-", input=workspaces(n, namespace, label), timeout=300)
    times = ready_times(cluster, namespace, n, started)
    result = {
        "all_ready_s": times[-1],
        "p50_s": statistics.median(times),
        "p99_s": times[min(n - 1, round(0.99 * (n - 1)))],
        "hooks_cpu_s": cpu_seconds(operator.hooks.process.proc.pid) - hooks_cpu,
        "metacontroller_cpu_s": cpu_seconds(metacontroller.process.proc.pid) - mc_cpu,
        "apiserver_requests": apiserver_requests(cluster) - requests,
    }
    cluster.kubectl("delete", "namespace", namespace, "--timeout=600s", timeout=660)
    for node in nodes:
        cluster.kubectl("delete", "node", node, "--wait=false")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="10,50,100")
    parser.add_argument("--modes", default="byo,aks")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    modes = args.modes.split(",")

    from arm_support.fake_arm import FakeArm

    workdir = Path(tempfile.mkdtemp(prefix="kaito-bench-scale-"))
    cluster = ControlPlane(workdir, build())
    with FakeArm() as arm:
        try:
            cluster.start(session_crds(cluster.bin / "kubectl"))
            results = run_rounds(cluster, arm, workdir, counts, modes, args.repeat)
        finally:
            cluster.stop()
    report(results, counts, modes, args.repeat)
    return 0


def run_rounds(cluster, arm, workdir: Path, counts: list[int], modes: list[str], repeats: int):
    results: list[tuple[str, int, str, dict]] = []
    install = Install(cluster.bin / "kubectl", "aks")
    install_metacontroller(cluster, install)
    install_hook_namespace(cluster, workdir / "hooks-tls")
    tuned_args = install.metacontroller_args()
    upstream = tuple(
        f"--{flag}={value}" for flag, value in (("client-go-qps", "5"), ("client-go-burst", "10"), ("workers", "5"))
    )
    assert all(any(a.startswith(f"--{f}=") for a in tuned_args) for f in TUNED_FLAGS), tuned_args
    simulator = AksSimulator(arm, cluster, delay=0)
    operators: dict[str, Operator] = {}
    try:
        for mode in modes:
            for operator in operators.values():
                operator.uninstall()
            operators[mode] = operators.get(mode) or Operator(
                cluster, arm, workdir / "hooks-tls", mode, resync_seconds="30"
            )
            operators[mode].install()
            for n in counts:
                for repeat in range(repeats):
                    order = [("upstream", upstream), ("tuned", ())]
                    if (counts.index(n) + repeat) % 2:
                        order.reverse()
                    for config, extra in order:
                        metacontroller = Metacontroller(
                            cluster, install, extra_args=extra, name=f"metacontroller-{config}-{mode}-{n}-{repeat}"
                        )
                        try:
                            result = one_round(cluster, operators[mode], metacontroller, mode, n, f"{config}-{repeat}")
                        finally:
                            metacontroller.stop()
                        results.append((mode, n, config, result))
                        print(
                            f"{mode:4} N={n:<4} {config:8} "
                            + " ".join(
                                f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()
                            ),
                            flush=True,
                        )
    finally:
        simulator.stop()
        for operator in operators.values():
            operator.stop()
    return results


def report(results, counts: list[int], modes: list[str], repeat: int) -> None:
    print("\nmode  N    metric                upstream      tuned   upstream/tuned")
    for mode in modes:
        for n in counts:
            by_config = {
                c: [r for m, k, c2, r in results if m == mode and k == n and c2 == c] for c in ("upstream", "tuned")
            }
            for metric in (
                "all_ready_s",
                "p50_s",
                "p99_s",
                "hooks_cpu_s",
                "metacontroller_cpu_s",
                "apiserver_requests",
            ):
                values = {c: [r[metric] for r in rs] for c, rs in by_config.items()}
                up, tu = statistics.median(values["upstream"]), statistics.median(values["tuned"])
                spread = (
                    ""
                    if repeat == 1
                    else (
                        f"  (spread {min(values['upstream']):.1f}-{max(values['upstream']):.1f}"
                        f" / {min(values['tuned']):.1f}-{max(values['tuned']):.1f})"
                    )
                )
                print(
                    f"{mode:5} {n:<4} {metric:20} {up:9.1f} {tu:10.1f} {up / tu if tu else float('nan'):10.2f}{spread}"
                )


if __name__ == "__main__":
    sys.exit(main())
