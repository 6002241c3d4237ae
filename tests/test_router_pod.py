"""The router pod the hook renders, run for real on loopback: our gateway (its args from the hook) in front of
the real sglang-router (its args from the hook, with --worker-urls in place of Kubernetes pod discovery, the
one part that needs an API server), in front of a replica's gateway and a stub of SGLang (the GPU engine).

    client -> gateway (router pod) -> sglang-router -> gateway (replica) -> stub SGLang
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import torch
from inference_support.aiohttp_thread import BackgroundApp
from inference_support.launcher import dry_run_gateway, make_adapter
from inference_support.procs import start_gateway, start_module, stop
from inference_support.stub_sglang import StubSGLang, free_port
from workspace_support import find, request, workspace

from hooks.settings import Settings
from hooks.workspace.sync import sync

pytestmark = pytest.mark.integration  # starts gateways, sglang-router and stub servers as processes
launch_router = pytest.importorskip("sglang_router.launch_router", reason="sglang-router (test extra) is not installed")

PRESET = "phi-3-mini-4k-instruct"
DISCOVERY_FLAGS = {
    "--service-discovery": 0,
    "--selector": 1,
    "--service-discovery-namespace": 1,
    "--service-discovery-port": 1,
}


ADAPTERS = ("fin", "legal")


def rendered() -> list[dict]:
    ws = workspace(
        resource={"instanceType": "Standard_NC24ads_A100_v4", "count": 2, "labelSelector": {"matchLabels": {"a": "b"}}},
        inference={
            "preset": {"name": PRESET},
            "adapters": [{"source": {"name": n, "image": f"r.io/{n}:1"}} for n in ADAPTERS],
        },
    )
    return sync(request(ws), Settings(), "2026-11-26T12:00:00Z")["children"]


def router_pod_containers(children: list[dict]) -> tuple[dict, dict]:
    gateway, router = find(children, "Deployment", "ws1-router")["spec"]["template"]["spec"]["containers"]
    return gateway, router


def write_desired_set(children: list[dict], tmp: Path) -> Path:
    """The published desired set (the ConfigMap the pods mount) and each adapter's files where the node's fetch
    pod puts them (the kubelet pulling adapter images is the part that cannot run here)."""
    from safetensors.torch import save_file

    desired = json.loads(find(children, "ConfigMap", "ws1-adapters")["data"]["adapters.json"])
    for item in desired["adapters"]:
        folder = tmp / "files" / item["key"]
        folder.mkdir(parents=True)
        prefix = "base_model.model.model.layers.0.self_attn.qkv_proj"
        save_file(
            {f"{prefix}.lora_A.weight": torch.ones(8, 16), f"{prefix}.lora_B.weight": torch.ones(48, 8)},
            str(folder / "adapter_model.safetensors"),
        )
        (folder / "adapter_config.json").write_text(
            json.dumps({"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["qkv_proj"]})
        )
        (folder / ".kaito-complete").write_text("")
    path = tmp / "desired" / "adapters.json"
    path.parent.mkdir()
    path.write_text(json.dumps(desired))
    return path


def replica_gateway_args(children: list[dict], tmp: Path) -> list[str]:
    """The gateway a replica's launcher starts (its dry run, on the replica's rendered args)."""
    main = find(children, "Deployment", "ws1")["spec"]["template"]["spec"]["containers"][0]
    desired = write_desired_set(children, tmp)
    local = {
        "--weights-dir": tmp / "weights-dir",
        "--adapters-dir": tmp / "adapters-dir",
        "--live-adapters": desired,
        "--adapter-files": tmp / "files",
    }
    args, it = [], iter(main["args"])
    for a in it:
        if a in local:
            args += [a, str(local[a])]
            next(it)
        else:
            args.append(a)
    (tmp / "weights-dir").mkdir()
    for name in ADAPTERS:
        make_adapter(tmp / "adapters-dir", name, 8, ["qkv_proj", "o_proj"])
    argv = dry_run_gateway([*args, "--work-dir", str(tmp / "work")])
    assert argv[1:3] == ["-m", "inference.gateway"], argv
    out, it = [], iter(argv[3:])
    for a in it:
        if a in ("--runtime-pid", "--upstream", "--port"):  # the dry run's pid and the pod's ports
            next(it)
        else:
            out.append(a)
    return out


def flag_values(args: list[str], flag: str) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args) if a == flag]


def with_value(args: list[str], flag: str, value: str) -> list[str]:
    i = args.index(flag)
    return [*args[: i + 1], value, *args[i + 2 :]]


def without_discovery(args: list[str]) -> list[str]:
    out, skip = [], 0
    for a in args:
        if skip:
            skip -= 1
            continue
        if a in DISCOVERY_FLAGS:
            skip = DISCOVERY_FLAGS[a]
            continue
        out.append(a)
    return out


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    stub = StubSGLang(PRESET).start()
    procs = []
    children = rendered()
    try:
        replica_port = free_port()
        replica = replica_gateway_args(children, tmp_path_factory.mktemp("replica"))
        procs.append(
            start_module(
                [
                    "inference.gateway",
                    *replica,
                    "--upstream",
                    stub.url,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(replica_port),
                ],
                f"http://127.0.0.1:{replica_port}/healthz",
            )
        )
        gateway, router = router_pod_containers(children)
        # The router pod's gateway follows the same desired set (names only) as each replica's.
        main = find(children, "Deployment", "ws1")["spec"]["template"]["spec"]["containers"][0]
        assert flag_values(gateway["args"], "--adapter-names-from") == flag_values(main["args"], "--live-adapters")
        assert flag_values(gateway["args"], "--served-model-name") == flag_values(replica, "--served-model-name")
        router_port, front_port = free_port(), free_port()
        router_args = without_discovery(router["args"])
        router_args = with_value(router_args, "--port", str(router_port))
        router_args = with_value(
            with_value(router_args, "--prometheus-host", "127.0.0.1"), "--prometheus-port", str(free_port())
        )
        router_args += ["--worker-urls", f"http://127.0.0.1:{replica_port}"]
        assert router["command"][:3] == ["python", "-m", "sglang_router.launch_router"]
        procs.append(
            start_module(
                ["sglang_router.launch_router", *router_args], f"http://127.0.0.1:{router_port}/readiness", timeout=60
            )
        )
        front_args = with_value(gateway["args"], "--port", str(front_port))
        front_args = with_value(front_args, "--upstream", f"http://127.0.0.1:{router_port}")
        front_args = with_value(front_args, "--adapter-names-from", flag_values(replica, "--live-adapters")[0])
        assert gateway["command"] == ["python", "-m", "inference.gateway"]
        procs.append(
            start_module(
                ["inference.gateway", *front_args, "--host", "127.0.0.1"], f"http://127.0.0.1:{front_port}/healthz"
            )
        )
        yield f"http://127.0.0.1:{front_port}", stub
    finally:
        for p in reversed(procs):
            stop(p)
        stub.stop()


def test_kaito_chat_reaches_a_replica_through_the_router(chain):
    front, stub = chain
    r = requests.post(f"{front}/chat", json={"prompt": "Hello", "model": f"{PRESET}:fin"}, timeout=30)
    assert r.status_code == 200, r.text
    assert "reply to: Hello" in r.json()["Result"]
    path, body = stub.requests[-1]
    assert path == "/v1/completions" and body["model"].startswith(f"{PRESET}:fin."), body  # as the replica loaded it
    # Naming no adapter, /chat uses all of them at their strengths, as a replica's own gateway would.
    assert requests.post(f"{front}/chat", json={"prompt": "Hi"}, timeout=30).status_code == 200
    assert stub.requests[-1][1]["model"].startswith(f"{PRESET}:combined.")


def test_openai_requests_keep_their_adapter_and_unknown_ones_are_refused_in_front(chain):
    front, stub = chain
    ok = requests.post(
        f"{front}/v1/chat/completions",
        json={"model": f"{PRESET}:fin", "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    )
    assert ok.status_code == 200, ok.text
    assert stub.requests[-1][1]["model"].startswith(f"{PRESET}:fin.")
    before = len(stub.requests)
    bad = requests.post(
        f"{front}/v1/chat/completions",
        json={"model": f"{PRESET}:nope", "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    )
    assert bad.status_code == 400 and "nope" in bad.json()["error"]["message"]
    assert len(stub.requests) == before


def test_models_list_the_adapters_and_the_router_pod_is_healthy(chain):
    front, _ = chain
    ids = [m["id"] for m in requests.get(f"{front}/v1/models", timeout=30).json()["data"]]
    assert PRESET in ids and f"{PRESET}:fin" in ids
    assert requests.get(f"{front}/health", timeout=30).status_code == 200


class Upstream:
    """sglang-router's /readiness (503 until a replica is healthy) and SGLang's info endpoints."""

    def __init__(self):
        self.ready = False
        self.port = free_port()

    def start(self) -> Upstream:
        from aiohttp import web

        async def readiness(request):
            return web.json_response(
                {"status": "ready" if self.ready else "not ready"}, status=200 if self.ready else 503
            )

        async def info(request):
            return web.json_response({"path": request.path, "model_path": "/workspace/weights"})

        app = web.Application()
        app.router.add_get("/readiness", readiness)
        app.router.add_get("/server_info", info)
        app.router.add_get("/model_info", info)
        self.server = BackgroundApp(app, self.port).start()
        return self

    def stop(self) -> None:
        self.server.stop()


def test_gateway_health_follows_the_upstream_health_path_and_passes_info_through():
    up = Upstream().start()
    proc, port = start_gateway(PRESET, f"http://127.0.0.1:{up.port}", "--upstream-health-path", "/readiness")
    try:
        base = f"http://127.0.0.1:{port}"
        assert requests.get(f"{base}/health", timeout=30).status_code == 503
        up.ready = True
        assert requests.get(f"{base}/health", timeout=30).status_code == 200
        for path in ("/server_info", "/model_info"):
            r = requests.get(base + path, timeout=30)
            assert r.status_code == 200 and r.json()["path"] == path
    finally:
        stop(proc)
        up.stop()


def _gateway_children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if ppid == pid and b"inference.gateway" in (entry / "cmdline").read_bytes():
                    out.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                pass
    return out


def test_gateway_workers_share_the_port_and_exit_with_the_first():
    stub = StubSGLang(PRESET).start()
    proc, port = start_gateway(PRESET, stub.url, "--workers", "3")
    try:
        children = _gateway_children(proc.pid)
        assert len(children) == 2, children
        with ThreadPoolExecutor(8) as pool:
            codes = list(
                pool.map(
                    lambda i: (
                        requests.post(
                            f"http://127.0.0.1:{port}/v1/completions",
                            json={"model": PRESET, "prompt": f"p{i}"},
                            timeout=30,
                        ).status_code
                    ),
                    range(40),
                )
            )
        assert codes == [200] * 40
    finally:
        stop(proc)
        stub.stop()
    deadline = time.monotonic() + 10
    while any(_alive(c) for c in children):
        assert time.monotonic() < deadline, "the extra gateway workers outlived the first"
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
