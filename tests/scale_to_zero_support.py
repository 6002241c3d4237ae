"""Loopback pieces for the wake-on-demand tests: the API server's scale endpoint of one or more Workspaces, and a
replica that starts and stops with it (the real transformers runtime through `python -m inference.launch`).

The scale endpoint stands in for kube-apiserver's `workspaces/scale` (autoscaling/v1 Scale: merge patches,
resourceVersion preconditions answered 409, a spec.replicas of 0 omitted, 401 without the token); the cluster
test under tests/cluster/ runs the front against the real apiserver.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests
from inference_support.launcher import ONE_NODE, transformers_launch
from inference_support.procs import stop
from loopback_support import free_port, send_json

REPO = Path(__file__).resolve().parents[1]
TOKEN = "front-token"
SCALE_PATH = "/apis/kaito.sh/v1alpha1/namespaces/{ns}/workspaces/{name}/scale"


@dataclass
class ScaledWorkspace:
    namespace: str
    name: str
    replicas: int = 0
    resource_version: int = 1
    patches: list[dict] = field(default_factory=list)
    on_change: Callable[[int], None] | None = None

    def scale(self) -> dict:
        return {
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {"name": self.name, "namespace": self.namespace, "resourceVersion": str(self.resource_version)},
            "spec": {"replicas": self.replicas} if self.replicas else {},
            "status": {"replicas": self.replicas, "selector": f"kaito.sh/workspace={self.name}"},
        }


class ScaleEndpoint:
    """PATCH .../workspaces/{name}/scale for the Workspaces it holds; anything else is 404 or 405."""

    def __init__(self, *workspaces: ScaledWorkspace):
        self.workspaces = {SCALE_PATH.format(ns=w.namespace, name=w.name): w for w in workspaces}
        self.lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _answer(self, status: int, doc: dict) -> None:
                send_json(self, status, doc)

            def do_GET(self):
                self._answer(403, {"kind": "Status", "code": 403, "message": "forbidden: the front may only patch"})

            def do_PATCH(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    return self._answer(401, {"kind": "Status", "code": 401, "message": "Unauthorized"})
                if self.headers.get("Content-Type") != "application/merge-patch+json":
                    return self._answer(415, {"kind": "Status", "code": 415, "message": "unsupported patch type"})
                ws = endpoint.workspaces.get(self.path)
                if ws is None:
                    return self._answer(404, {"kind": "Status", "code": 404, "message": "not found"})
                patch = json.loads(body or b"{}")
                with endpoint.lock:
                    ws.patches.append(patch)
                    wanted = str((patch.get("metadata") or {}).get("resourceVersion") or "")
                    if wanted and wanted != str(ws.resource_version):
                        return self._answer(
                            409,
                            {
                                "kind": "Status",
                                "code": 409,
                                "reason": "Conflict",
                                "message": "the object has been modified",
                            },
                        )
                    replicas = (patch.get("spec") or {}).get("replicas")
                    changed = replicas is not None and replicas != ws.replicas
                    if changed:
                        ws.replicas = replicas
                        ws.resource_version += 1
                    answer = ws.scale()
                if changed and ws.on_change:  # a controller acts after the write, not inside it
                    threading.Thread(target=ws.on_change, args=(answer["status"]["replicas"],), daemon=True).start()
                return self._answer(200, answer)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Replica:
    """The model pod of a Workspace on `port`: the real launcher with the transformers runtime, started when the
    scale goes above 0 (in the background, as a Deployment would) and stopped at 0."""

    def __init__(self, weights: Path, served: str, work: Path):
        self.weights, self.served, self.work = weights, served, work
        self.port, self.runtime_port = free_port(), free_port()
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def follow(self, replicas: int) -> None:
        with self.lock:
            if replicas > 0 and self.proc is None:
                self.starts += 1
                (self.work / "adapters").mkdir(parents=True, exist_ok=True)
                log = open(self.work / f"replica-{self.starts}.log", "wb")  # noqa: SIM115 - the process writes it
                self.proc = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        *transformers_launch(
                            self.served,
                            self.weights,
                            self.work / "adapters",
                            self.port,
                            self.runtime_port,
                            self.work / "run",
                            *ONE_NODE,
                        ),
                    ],
                    cwd=REPO,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            elif replicas == 0 and self.proc is not None:
                self.stop_locked()

    def stop_locked(self) -> None:
        assert self.proc is not None
        stop(self.proc, grace_s=15)
        self.proc = None

    def close(self) -> None:
        with self.lock:
            if self.proc is not None:
                self.stop_locked()


def stand_in_weights(root: Path) -> Path:
    """A random 2-layer model in `root` for the stand-in replica; it never stops at an end-of-sequence token, so
    every answer has `max_tokens` tokens of content."""
    from tuning_support import tiny

    model, _ = tiny.make_model(str(root))
    model.generation_config.eos_token_id = None
    model.generation_config.save_pretrained(str(root))
    return root


def scale_to_zero_workspace(name: str, served: str, replicas: int) -> dict:
    """A one-node Workspace of `served` that scales to zero after 15 idle minutes, at `replicas`."""
    return {
        "apiVersion": "kaito.sh/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": name, "annotations": {"kaito.sh/scale-to-zero-after": "15m"}},
        "spec": {"replicas": replicas},
        "resource": {"instanceType": "Standard_NC24ads_A100_v4", "labelSelector": {"matchLabels": {"apps": name}}},
        "inference": {"preset": {"name": served}},
    }


def wake_front_argv(
    served: str, upstream: str, port: int, workspace: str, apiserver: str, token_file: Path, *flags: str
) -> list[str]:
    """`python -m inference.wake_front` for `served` in front of `upstream` on loopback `port`, scaling
    `workspace` (namespace/name) through `apiserver` with the token in `token_file`, plus any `flags`."""
    return [
        sys.executable,
        "-m",
        "inference.wake_front",
        "--served-model-name",
        served,
        "--upstream",
        upstream,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workspace",
        workspace,
        "--apiserver",
        apiserver,
        "--token-file",
        str(token_file),
        *flags,
    ]


def start_front(
    workspace: ScaledWorkspace,
    apiserver: str,
    upstream: str,
    served: str,
    tmp: Path,
    *,
    idle_seconds: float = 600,
    queue_size: int = 100,
    max_wait: float = 150,
) -> tuple[subprocess.Popen, str]:
    token = tmp / f"token-{workspace.name}"
    token.write_text(TOKEN + "\n")
    port = free_port()
    log = open(tmp / f"front-{workspace.name}.log", "wb")  # noqa: SIM115 - the process writes it until it stops
    limits = ["--idle-seconds", str(idle_seconds), "--queue-size", str(queue_size), "--max-wait-seconds", str(max_wait)]
    proc = subprocess.Popen(
        wake_front_argv(served, upstream, port, f"{workspace.namespace}/{workspace.name}", apiserver, token, *limits),
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except requests.RequestException:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError((tmp / f"front-{workspace.name}.log").read_text()[-3000:])


def queue(front_url: str) -> dict:
    return requests.get(f"{front_url}/queue", timeout=5).json()


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting until {what}")
