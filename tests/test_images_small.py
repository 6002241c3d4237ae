"""The small images (hooks, router) built from their Dockerfiles as `make images` and the release build
them, pushed to a loopback registry, their layers searched for the build's pip secrets, and started for
what they are for: the hook server serving the install's mutual TLS as UID 65532 on a read-only root
filesystem, the router pod's sglang-router and gateway relaying to a loopback upstream.

Needs buildah (with podman and runc to run what it built) or a Docker engine; skips otherwise.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
import requests
from images_support import (
    Container,
    ContainerSpec,
    ImageHookServer,
    built,
    container_tool,
    filled_aks_settings,
    run_argv,
    start_hook_server_from_image,
    untag,
)
from inference_support.stub_sglang import StubSGLang
from loopback_support import free_port
from workspace_support import REPO, by_kind, find, node, request, workspace

from release import build_images
from release.images import project_version

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        container_tool() is None,
        reason="no image builder: install buildah, podman and runc (make test-setup does as root) or start Docker",
    ),
]

IMAGE_USER = "65532:65532"


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    from tuning_support.registry import REGISTRY_BIN, SKOPEO_BIN, running_registry

    if not (REGISTRY_BIN and SKOPEO_BIN):
        yield None
        return
    with running_registry(str(tmp_path_factory.mktemp("registry"))) as reg:
        yield reg["host"]


@pytest.fixture(scope="module")
def hooks_image(registry):
    reference = built("hooks", registry)
    yield reference
    if registry:
        untag(reference)  # the loopback registry of this module only; the image stays under its own name


@pytest.fixture(scope="module")
def router_image(registry):
    reference = built("router", registry)
    yield reference
    if registry:
        untag(reference)


def image_config(ref: str) -> dict:
    tool = container_tool()
    out = subprocess.run([tool, "image", "inspect", ref], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)[0]["Config"]


@pytest.mark.parametrize("name", ["hooks", "router"])
def test_pushed_image_is_tagged_with_the_version_and_no_layer_holds_a_pip_secret(name, registry, request, tmp_path):
    if registry is None:
        pytest.skip("docker-registry/skopeo absent (make system-packages)")
    ref = request.getfixturevalue(f"{name}_image")
    assert ref == f"{registry}/kaito-sglang/{name}:{project_version()}"
    settings = build_images.machine_pip_settings()
    needles = build_images.secret_needles(settings)
    findings = build_images.scan_pushed_image(ref, needles, tmp_path)
    assert findings == [], findings
    # The scan does find what it looks for: a layer holding the CA would be reported.
    if settings.cert:
        from release.layer_scan import scan_layer

        layer = tmp_path / "leak.tar"
        import tarfile

        with tarfile.open(layer, "w") as tar:
            tar.add(settings.cert, arcname="usr/local/share/leaked.crt")
        with layer.open("rb") as stream:
            assert any(f.startswith("usr/local/share/leaked.crt: private CA") for f in scan_layer(stream, needles))


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("certs") / "tls"
    subprocess.run(
        [sys.executable, "-m", "hooks", "certs", "--out-dir", str(folder), "--extra-name", "127.0.0.1"],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    return folder


@pytest.fixture(scope="module")
def hook_container(hooks_image, certs):
    # The AKS install's settings (aks.env filled in); a Workspace sync calls no Azure API.
    settings = filled_aks_settings()
    server = start_hook_server_from_image(hooks_image, certs, f"127.0.0.1:{free_port()}", settings)
    yield server
    server.stop()


def test_hooks_image_user_is_numeric_non_root(hooks_image):
    assert image_config(hooks_image)["User"] == IMAGE_USER


def test_hook_server_from_the_image_syncs_a_workspace_over_mutual_tls(hook_container, certs):
    assert requests.get(hook_container.url + "/healthz", timeout=5, verify=str(certs / "ca.crt")).status_code == 200
    ws = workspace()
    body = request(ws, nodes=[node("gpu-1", {"apps": "phi-3"})])
    client = (str(certs / "client.crt"), str(certs / "client.key"))
    answer = requests.post(
        hook_container.url + "/sync/workspace", json=body, cert=client, verify=str(certs / "ca.crt"), timeout=30
    )
    assert answer.status_code == 200, answer.text
    children = answer.json()["children"]
    assert find(children, "Deployment", "ws1")["spec"]["template"]["spec"]["containers"]
    assert {"Machine.kaito.sh/v1alpha1", "Service.v1"} <= set(by_kind(children))
    # Only Metacontroller's client certificate may call the hooks.
    refused = requests.post(hook_container.url + "/sync/workspace", json=body, verify=str(certs / "ca.crt"), timeout=30)
    assert refused.status_code == 401


def test_hook_server_runs_as_65532_on_a_read_only_root_filesystem(hook_container):
    probe = (
        "import os\n"
        "status = dict(l.split(':', 1) for l in open('/proc/1/status'))\n"
        "print(status['Uid'].split()[0], status['Gid'].split()[0])\n"
        "try:\n    open('/opt/hooks/written', 'w')\nexcept OSError as e:\n    print(e.errno)\n"
    )
    out = hook_container.exec("python", "-c", probe)
    assert out.returncode == 0, out.stderr
    uid_gid, errno = out.stdout.split("\n")[:2]
    assert uid_gid == "65532 65532"  # the server (the container's first process), not only the exec
    assert errno == "30"  # EROFS


def router_pod() -> tuple[dict, dict, dict]:
    """The router pod's gateway and sglang-router containers and the adapters ConfigMap, as the hook renders them."""
    from hooks.settings import Settings
    from hooks.workspace.sync import sync

    ws = workspace(
        resource={"instanceType": "Standard_NC24ads_A100_v4", "count": 2, "labelSelector": {"matchLabels": {"a": "b"}}},
    )
    children = sync(request(ws), Settings(), "2026-12-06T00:00:00Z")["children"]
    gateway, router = find(children, "Deployment", "ws1-router")["spec"]["template"]["spec"]["containers"]
    return gateway, router, find(children, "ConfigMap", "ws1-adapters")


def replaced(args: list[str], flag: str, value: str) -> list[str]:
    i = args.index(flag)
    return [*args[: i + 1], value, *args[i + 2 :]]


def without_discovery(args: list[str]) -> list[str]:
    """Kubernetes pod discovery needs an API server; the worker is named with --worker-urls instead."""
    takes_value = {"--service-discovery": 0, "--selector": 1, "--service-discovery-namespace": 1}
    takes_value["--service-discovery-port"] = 1
    out, skip = [], 0
    for a in args:
        if skip:
            skip -= 1
        elif a in takes_value:
            skip = takes_value[a]
        else:
            out.append(a)
    return out


def wait_ok(url: str, container: Container, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if requests.get(url, timeout=2).ok:
                return
        except requests.RequestException:
            pass
        if not container.running() or time.monotonic() > deadline:
            raise AssertionError(f"{url} did not answer:\n{container.logs()[-3000:]}")
        time.sleep(0.3)


def test_router_image_relays_through_sglang_router_to_a_loopback_upstream(router_image, tmp_path):
    gateway, router, adapters = router_pod()
    tool = container_tool()
    assert image_config(router_image)["User"] == IMAGE_USER
    stub = StubSGLang("phi-3-mini-4k-instruct").start()
    desired = tmp_path / "adapters.json"
    desired.write_text(adapters["data"]["adapters.json"])
    desired.chmod(0o644)
    router_port, metrics_port, front_port = free_port(), free_port(), free_port()
    router_args = replaced(without_discovery(router["args"]), "--port", str(router_port))
    router_args = replaced(
        replaced(router_args, "--prometheus-host", "127.0.0.1"), "--prometheus-port", str(metrics_port)
    )
    router_args += ["--worker-urls", stub.url]
    front_args = replaced(
        replaced(gateway["args"], "--port", str(front_port)), "--upstream", f"http://127.0.0.1:{router_port}"
    )
    desired_in_pod = front_args[front_args.index("--adapter-names-from") + 1]
    containers = []
    try:
        name = f"kaito-router-{uuid.uuid4().hex[:8]}"
        spec = ContainerSpec(
            command=[*router["command"], *router_args], env={}, read_only=True, tmpfs=[("/tmp", "64Mi")]
        )
        containers.append(Container(tool, run_argv(tool, router_image, spec, name), name))
        wait_ok(f"http://127.0.0.1:{router_port}/readiness", containers[-1])
        name = f"kaito-gateway-{uuid.uuid4().hex[:8]}"
        spec = ContainerSpec(
            command=[*gateway["command"], *front_args, "--host", "127.0.0.1"],
            env={},
            read_only=True,
            tmpfs=[("/tmp", "64Mi")],
            binds=[(str(desired), desired_in_pod, True)],
        )
        containers.append(Container(tool, run_argv(tool, router_image, spec, name), name))
        wait_ok(f"http://127.0.0.1:{front_port}/healthz", containers[-1])
        answer = requests.post(
            f"http://127.0.0.1:{front_port}/v1/chat/completions",
            json={"model": "phi-3-mini-4k-instruct", "messages": [{"role": "user", "content": "Hello"}]},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        assert "reply to: Hello" in answer.json()["choices"][0]["message"]["content"]
        assert stub.requests and stub.requests[-1][0] == "/v1/chat/completions"
    finally:
        for container in reversed(containers):
            container.stop()
        stub.stop()


def byo_deployment() -> dict:
    """The hook Deployment as overlays/byo renders it (its JSON patch's `replace` ops; the other op removes
    a pod label, which a local container has no use for)."""
    import yaml

    deployment = yaml.safe_load((REPO / "metacontroller" / "hooks" / "deployment.yaml").read_text())
    for op in yaml.safe_load((REPO / "overlays" / "byo" / "hooks-byo.yaml").read_text()):
        if op["op"] != "replace":
            continue
        *parents, last = op["path"].strip("/").split("/")
        node = deployment
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[int(last) if isinstance(node, list) else last] = op["value"]
    return deployment


def test_hook_server_container_in_byo_mode_survives_a_hard_kill_and_starts_again(hooks_image, certs):
    server = ImageHookServer(hooks_image, {}, certs, free_port(), deployment=byo_deployment())
    try:
        body = request(workspace(), nodes=[node("gpu-1", {"apps": "phi-3"})])
        client = (str(certs / "client.crt"), str(certs / "client.key"))
        answer = requests.post(server.url + "/sync/workspace", json=body, cert=client, verify=str(certs / "ca.crt"))
        assert answer.status_code == 200, answer.text
        assert "Machine.kaito.sh/v1alpha1" not in by_kind(answer.json()["children"])  # byo: the labelled node
        # Frozen (SIGSTOP to its process group, as the cluster tests freeze a local server): no answer.
        group = server.process.proc.pid
        os.killpg(group, signal.SIGSTOP)
        try:
            with pytest.raises(requests.Timeout):
                requests.get(server.url + "/healthz", timeout=3, verify=str(certs / "ca.crt"))
        finally:
            os.killpg(group, signal.SIGCONT)
        assert requests.get(server.url + "/healthz", timeout=10, verify=str(certs / "ca.crt")).status_code == 200
        server.kill()
        with pytest.raises(requests.ConnectionError):
            requests.get(server.url + "/healthz", timeout=5, verify=str(certs / "ca.crt"))
        server.start()
        assert requests.get(server.url + "/healthz", timeout=5, verify=str(certs / "ca.crt")).status_code == 200
    finally:
        server.stop()
