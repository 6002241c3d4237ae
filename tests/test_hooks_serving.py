"""Serving the hooks: mutual TLS with Metacontroller, and workers that slow
or idle clients cannot starve.

Everything is real: `python -m hooks certs` makes the CA and certificates, `python -m hooks serve`
(gunicorn) serves them on loopback, and clients connect with and without Metacontroller's certificate.
The Machine routes run against the local fake ARM (tests/arm_support/fake_arm.py), Azure being unreachable here.
"""

import json
import socket
import subprocess
import sys
import time

import pytest
import requests

pytest.importorskip("gunicorn", reason="gunicorn is not installed")
pytest.importorskip("cryptography", reason="cryptography is not installed")

from arm_support.fake_arm import FakeArm
from hook_server_support import REPO, HookServer, hooks_env, make_certs, run_hooks_cli, serve_argv, serve_tls
from loopback_support import free_port
from machine_support import hook_request, make_machine

from hooks.cli.main import gunicorn_argv

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("hook-tls"))


@pytest.fixture(scope="module")
def fake_arm():
    with FakeArm() as server:
        yield server


@pytest.fixture(scope="module")
def tls_hooks(certs):
    """`python -m hooks serve --tls-dir`, exactly as the Deployment runs it."""
    port = free_port()
    server = serve_tls(serve_argv(port, tls_dir=certs), port, certs, hooks_env())
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tls_machine_hooks(certs, fake_arm):
    """The same gunicorn command line, with the Machine hook talking to the fake ARM (tests/arm_support/machine_app.py)."""
    port = free_port()
    argv = gunicorn_argv(f"127.0.0.1:{port}", 1, 4, str(certs))[:-1] + ["arm_support.machine_app:make_app()"]
    env = hooks_env(FAKE_ARM_URL=fake_arm.base_url, KAITO_HOOKS_CLIENT_NAMES="metacontroller")
    server = serve_tls(argv, port, certs, env)
    yield server
    server.stop()


def workspace_request():
    ws = {
        "apiVersion": "kaito.sh/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": "ws", "namespace": "default", "uid": "u1"},
        "resource": {"instanceType": "Standard_NC24ads_A100_v4", "labelSelector": {"matchLabels": {"apps": "x"}}},
        "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}},
    }
    return {"controller": {}, "parent": ws, "children": {}, "related": {}}


def metric(server, route, outcome):
    text = requests.get(server.url + "/metrics", timeout=5, verify=server.verify).text
    for line in text.splitlines():
        if line.startswith(f'kaito_hook_requests_total{{route="{route}",outcome="{outcome}"}}'):
            return int(line.rsplit(" ", 1)[1])
    return 0


# ---- only Metacontroller's certificate may call the hooks ------------------------------------------


def test_metacontrollers_certificate_is_served(tls_hooks):
    answer = tls_hooks.post("/sync/workspace", workspace_request())
    assert answer.status_code == 200, answer.text
    assert answer.json()["children"]


@pytest.mark.parametrize(
    "path", ["/sync/workspace", "/customize/workspace", "/sync/machine", "/finalize/machine", "/customize/machine"]
)
def test_a_caller_without_a_client_certificate_gets_401_and_is_counted(tls_hooks, path):
    before = metric(tls_hooks, path, "401")
    answer = tls_hooks.post(path, workspace_request(), cert=None)
    assert answer.status_code == 401, answer.text
    assert "client certificate" in answer.json()["error"]
    assert metric(tls_hooks, path, "401") == before + 1


def test_probes_and_metrics_need_no_certificate(tls_hooks):
    assert requests.get(tls_hooks.url + "/healthz", timeout=5, verify=tls_hooks.verify).status_code == 200
    assert requests.get(tls_hooks.url + "/metrics", timeout=5, verify=tls_hooks.verify).status_code == 200


def test_plain_http_to_the_tls_port_is_refused(tls_hooks):
    with pytest.raises(requests.RequestException):
        requests.post(tls_hooks.url.replace("https:", "http:") + "/sync/machine", json={}, timeout=5)


def test_a_certificate_from_another_ca_is_refused_at_the_handshake(tls_hooks, tmp_path):
    subprocess.run(
        [sys.executable, "-m", "hooks", "certs", "--out-dir", str(tmp_path)], cwd=REPO, check=True, env=hooks_env()
    )
    with pytest.raises(requests.exceptions.SSLError):
        tls_hooks.post("/sync/machine", {}, cert=(str(tmp_path / "client.crt"), str(tmp_path / "client.key")))


def test_the_servers_certificate_is_not_a_client_certificate(tls_hooks, certs):
    """The hook server's own key (from its Secret) cannot be used to call the hooks."""
    with pytest.raises(requests.exceptions.SSLError):
        tls_hooks.post("/sync/machine", {}, cert=(str(certs / "tls.crt"), str(certs / "tls.key")))


@pytest.mark.parametrize("path", ["/sync/machine", "/finalize/machine"])
def test_unauthenticated_machine_calls_reach_no_arm_call(tls_machine_hooks, fake_arm, path):
    machine = make_machine(name="attacker1")
    fake_arm.state.requests.clear()
    answer = tls_machine_hooks.post(path, hook_request(machine, finalizing=path.startswith("/finalize")), cert=None)
    assert answer.status_code == 401
    assert fake_arm.state.requests == []
    # the same call with Metacontroller's certificate does reach ARM
    answer = tls_machine_hooks.post(path, hook_request(machine, finalizing=path.startswith("/finalize")))
    assert answer.status_code == 200, answer.text
    assert fake_arm.state.requests


def test_serve_refuses_a_non_loopback_bind_without_tls():
    p = run_hooks_cli("serve", "--bind", "0.0.0.0:1")
    assert p.returncode == 2 and "--tls-dir" in p.stderr


def test_certs_prints_the_two_secrets_the_install_names():
    import yaml

    p = run_hooks_cli("certs", "--namespace", "kaito-system", check=True)
    secrets = {d["metadata"]["name"]: d for d in yaml.safe_load_all(p.stdout)}
    assert set(secrets) == {"kaito-hooks-tls", "kaito-hooks-client"}
    for secret in secrets.values():
        assert secret["metadata"]["namespace"] == "kaito-system" and secret["type"] == "kubernetes.io/tls"
        assert set(secret["data"]) == {"tls.crt", "tls.key", "ca.crt"}
    assert "PRIVATE KEY" not in p.stdout  # keys are base64 in data, and the CA's key is never written


# ---- slow and idle clients do not starve /healthz --------------------------------------------------


@pytest.fixture
def plain_hooks():
    """The serve command on loopback without TLS (`make run`), two workers as the Deployment has."""
    port = free_port()
    server = HookServer(serve_argv(port, workers=2), f"http://127.0.0.1:{port}", hooks_env())
    yield server
    server.stop()


def test_healthz_answers_while_slow_and_idle_clients_hold_connections(plain_hooks):
    port = int(plain_hooks.url.rsplit(":", 1)[1])
    held = []
    try:
        for _ in range(2):  # idle: connected, nothing sent
            held.append(socket.create_connection(("127.0.0.1", port)))
        for _ in range(2):  # slow: half a request, then silence
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"POST /sync/workspace HTTP/1.1\r\nHost: hooks\r\nContent-Length: 100\r\n\r\n{")
            held.append(s)
        time.sleep(0.5)
        for _ in range(3):
            answer = requests.get(plain_hooks.url + "/healthz", timeout=3)
            assert answer.status_code == 200
            body = json.dumps(workspace_request())
            answer = requests.post(
                plain_hooks.url + "/sync/workspace", data=body, timeout=5, headers={"Content-Type": "application/json"}
            )
            assert answer.status_code == 200
            time.sleep(1)
    finally:
        for s in held:
            s.close()


def test_the_deployment_serves_with_tls_and_gthread_workers_and_probes_https():
    import yaml

    deployment = yaml.safe_load((REPO / "metacontroller" / "hooks" / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    command = container["command"]
    assert command[:4] == ["python", "-m", "hooks", "serve"]
    assert (
        command[command.index("--tls-dir") + 1]
        == container["volumeMounts"][[m["name"] for m in container["volumeMounts"]].index("tls")]["mountPath"]
    )
    assert int(command[command.index("--threads") + 1]) >= 4
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["scheme"] == "HTTPS"
        assert container[probe]["timeoutSeconds"] < container[probe]["periodSeconds"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "kaito-hooks-tls"
    assert "KAITO_HOOKS_CLIENT_NAMES" not in json.dumps(container.get("env", []))  # serve sets it from --tls-dir


def test_healthz_keeps_answering_under_concurrent_hook_load(plain_hooks):
    """32 sync calls at once (Metacontroller resyncing many Workspaces) while the kubelet probes /healthz."""
    from concurrent.futures import ThreadPoolExecutor

    body = json.dumps(workspace_request())

    def sync_call(_):
        return requests.post(
            plain_hooks.url + "/sync/workspace", data=body, timeout=30, headers={"Content-Type": "application/json"}
        ).status_code

    with ThreadPoolExecutor(max_workers=32) as pool:
        calls = [pool.submit(sync_call, i) for i in range(64)]
        probes = []
        while not all(c.done() for c in calls):
            probes.append(requests.get(plain_hooks.url + "/healthz", timeout=5).status_code)
            time.sleep(0.05)
        assert [c.result() for c in calls] == [200] * 64
    assert probes and set(probes) == {200}
