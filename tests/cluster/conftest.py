"""Fixtures of the cluster tests: one real control plane per session (tests/cluster/controlplane.py),
the operator on it (operator_stack.py), one namespace per test, every component's log in the report
of a failed test. Everything here is marked `cluster` (`pytest -m cluster` runs only these).

Skips, with the reason: Go absent (the control plane is built from Go modules); ../shared absent
(Metacontroller's source, manifests and CRDs, needed by the tests that run controllers). A failed build
is an error.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the harness modules (controlplane, operator_stack, observe)

from controlplane import Build, ClusterError, ControlPlane, go_available  # noqa: E402

_background: dict[str, Build] = {}


def pytest_collection_modifyitems(config, items):
    """Mark this folder's tests `cluster` and run them last, while a cold Go build (started now, at low
    priority) overlaps the rest of the session."""
    mine = [item for item in items if HERE in Path(str(item.fspath)).parents]
    for item in mine:
        item.add_marker(pytest.mark.cluster)
    chosen = set(map(id, mine))
    items[:] = [item for item in items if id(item) not in chosen] + mine


def pytest_collection_finish(session):
    selected = any(HERE in Path(str(item.fspath)).parents for item in session.items)
    if selected and go_available() and not session.config.option.collectonly and "build" not in _background:
        _background["build"] = Build()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    cluster = _running.get("cluster")
    if report.failed and cluster is not None and HERE in Path(str(item.fspath)).parents:
        report.sections.append(("control plane and operator logs", cluster.logs()))


_running: dict[str, ControlPlane] = {}
TEST_NAMESPACE_LABEL = "kaito.sh/cluster-test"


@pytest.fixture(scope="session")
def built() -> Path:
    if not go_available():
        pytest.skip("Go is not installed: the cluster tests build etcd, Kubernetes and kwok from Go modules")
    return (_background.get("build") or Build()).result()


@pytest.fixture(scope="session")
def cluster(built):
    from operator_stack import session_crds

    workdir = Path(tempfile.mkdtemp(prefix="kaito-cluster-"))
    plane = ControlPlane(workdir, built)
    crds = session_crds(built / "bin" / "kubectl")
    try:
        plane.start(crds)
    except ClusterError as error:
        logs = plane.logs()
        plane.stop()
        raise ClusterError(f"{error}\n{logs}") from None
    except BaseException:  # e.g. the apiserver refused our CRDs: the message says why
        plane.stop()
        raise
    _running["cluster"] = plane
    try:
        yield plane
    finally:
        _running.pop("cluster", None)
        plane.stop()
        if not os.environ.get("KAITO_CLUSTER_KEEP"):
            shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def cluster_arm():
    from arm_support.fake_arm import FakeArm

    with FakeArm() as server:
        yield server


class Operators:
    """One hook server per mode, started on first use; `use(mode)` installs that mode's controllers."""

    def __init__(self, cluster, arm, tls_dir):
        self.cluster, self.arm, self.tls_dir = cluster, arm, tls_dir
        self.started: dict = {}
        self.current = None

    def use(self, mode: str):
        from operator_stack import Operator

        if mode not in self.started:
            self.started[mode] = Operator(self.cluster, self.arm, self.tls_dir, mode)
        operator = self.started[mode]
        if self.current is not operator:
            if self.current is not None:
                # Let the installed controllers finish with earlier tests' Workspaces (Machines, agent
                # pools) before the other mode's controllers take over what is left.
                self.cluster.kubectl(
                    "wait",
                    "--for=delete",
                    "namespace",
                    "-l",
                    TEST_NAMESPACE_LABEL,
                    "--timeout=120s",
                    check=False,
                    timeout=150,
                )
                self.current.uninstall()
            operator.install()
            self.current = operator
        return operator

    def stop(self):
        for operator in self.started.values():
            operator.stop()


@pytest.fixture(scope="session")
def metacontroller(cluster):
    """The real Metacontroller, running with its installed ServiceAccount's token and ClusterRole."""
    from operator_stack import METACONTROLLER_SOURCE, Install, Metacontroller, install_metacontroller

    if not (cluster.bin / "metacontroller").exists():
        pytest.skip(
            f"{METACONTROLLER_SOURCE} is absent (../shared, the reference folder beside the checkout, is not there): "
            "Metacontroller is built from it"
        )
    install_metacontroller(cluster, Install(cluster.bin / "kubectl", "aks"))
    process = Metacontroller(cluster, Install(cluster.bin / "kubectl", "aks"))
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="session")
def operators(cluster, cluster_arm, metacontroller):
    from operator_stack import install_hook_namespace

    tls_dir = cluster.workdir / "hooks-tls"
    install_hook_namespace(cluster, tls_dir)
    ops = Operators(cluster, cluster_arm, tls_dir)
    try:
        yield ops
    finally:
        ops.stop()


@pytest.fixture
def aks(operators):
    """The operator as `kubectl apply -k metacontroller/` installs it (Machines on the fake ARM)."""
    return operators.use("aks")


@pytest.fixture
def aks_with_keda(operators):
    """The operator as `kubectl apply -k overlays/keda/` installs it: AKS mode, and the InferenceSet
    controller owns ScaledObjects (KEDA's CRDs must be there first: the `keda` fixture)."""
    return operators.use("keda")


@pytest.fixture
def byo(operators):
    """The operator as `kubectl apply -k overlays/byo/` installs it (bring your own nodes)."""
    return operators.use("byo")


@pytest.fixture
def namespace(cluster, request):
    unique = hashlib.sha256(f"{request.node.nodeid}/{os.getpid()}/{time.time()}".encode()).hexdigest()[:6]
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower().removeprefix("test_"))[:48].strip("-") + "-" + unique
    cluster.kubectl("create", "namespace", name)
    cluster.kubectl("label", "namespace", name, f"{TEST_NAMESPACE_LABEL}=yes")
    cluster.wait_for(
        f"serviceaccount default in {name}",
        lambda: cluster.kubectl("get", "sa", "default", "-n", name, check=False).returncode == 0,
    )
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")


@pytest.fixture(scope="session")
def simulator(cluster, cluster_arm):
    """AKS after ARM accepts a pool: `simulator.provision(pool)` registers its Node (kwok)."""
    from operator_stack import AksSimulator

    sim = AksSimulator(cluster_arm, cluster)
    yield sim
    sim.stop()


@pytest.fixture(scope="module")
def keda(cluster, tmp_path_factory):
    """KEDA's operator on loopback (keda_support.py); skipped, naming `make keda`, where it is not built."""
    from keda_support import keda_operator

    with keda_operator(cluster, tmp_path_factory.mktemp("keda")) as running:
        yield running


@pytest.fixture(scope="module")
def keda_metrics_adapter(cluster, keda):
    """KEDA's metrics adapter, registered as external.metrics.k8s.io (for KEDA's HPA above 1 replica)."""
    from keda_support import keda_metrics_adapter as adapter

    with adapter(cluster, keda) as process:
        yield process
