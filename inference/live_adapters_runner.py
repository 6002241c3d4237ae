"""Runs the live-adapter agent (inference.live_adapters) inside the gateway process.

It waits for the model server to be up, then reconciles whenever the desired set file changes, and
every second while something waits (files not yet on the node, a full adapter table). The runtime
is driven over its HTTP API: `POST /load_lora_adapter {lora_name, lora_path}` and
`POST /unload_lora_adapter {lora_name}` (SGLang's; inference.hf_server serves the same two).
Reconciles run in a thread: preparing an adapter copy is CPU work that must not stall the relay.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable

from inference.gateway.translation import Served
from inference.live_adapters import Agent, Capacity, Published, RuntimeRefused

log = logging.getLogger("inference.live_adapters")
POLL_S = 1.0
RUNTIME_TIMEOUT_S = 120.0


class RuntimeAdapters:
    """The model server's adapter API over loopback HTTP."""

    def __init__(self, upstream: str):
        self.upstream = upstream.rstrip("/")

    def _post(self, path: str, body: dict) -> None:
        req = urllib.request.Request(
            self.upstream + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=RUNTIME_TIMEOUT_S) as resp:
                resp.read()
        except urllib.error.HTTPError as e:
            detail = e.read()[:500].decode("utf-8", "replace")
            raise RuntimeRefused(f"{path} answered HTTP {e.code}: {detail}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as e:
            raise RuntimeRefused(f"{path}: model server unreachable: {e}") from None

    def load(self, internal: str, path: str) -> None:
        self._post("/load_lora_adapter", {"lora_name": internal, "lora_path": path})

    def unload(self, internal: str) -> None:
        self._post("/unload_lora_adapter", {"lora_name": internal})


# Where the hook mounts the report identity (hooks/workspace/children/adapter_report.py): a pod-bound token,
# the cluster CA, the pod's name and namespace. Only the model server's container has it.
REPORT_TOKEN_DIR = "/var/run/secrets/kaito/adapter-report"
REPORT_ANNOTATION = "kaito.sh/adapters"


class PodReporter:
    """Writes the agent's report into this pod's `kaito.sh/adapters` annotation, where the Workspace hook
    reads it (the hook never calls pods). Only on change: each write is a pod event and so a hook sync.
    The token is re-read for every write (the kubelet renews it); an admission policy lets it change only
    that annotation of this pod."""

    def __init__(self, token_dir: str = REPORT_TOKEN_DIR, api: str | None = None):
        self.token_dir = token_dir
        self.api = api or _in_cluster_api()
        self._last: str | None = None

    def enabled(self) -> bool:
        return self.api is not None and os.path.exists(os.path.join(self.token_dir, "token"))

    def _read(self, name: str) -> str:
        with open(os.path.join(self.token_dir, name), encoding="utf-8") as f:
            return f.read().strip()

    def report(self, report: dict) -> None:
        text = json.dumps(report, sort_keys=True, separators=(",", ":"))
        if text == self._last or not self.enabled():
            return
        url = f"{self.api}/api/v1/namespaces/{self._read('namespace')}/pods/{self._read('pod-name')}"
        body = json.dumps({"metadata": {"annotations": {REPORT_ANNOTATION: text}}}).encode()
        req = urllib.request.Request(
            url,
            data=body,
            method="PATCH",
            headers={"Content-Type": "application/merge-patch+json", "Authorization": f"Bearer {self._read('token')}"},
        )
        ca = os.path.join(self.token_dir, "ca.crt")
        context = ssl.create_default_context(cafile=ca) if url.startswith("https") and os.path.exists(ca) else None
        try:
            with urllib.request.urlopen(req, timeout=10, context=context) as resp:
                resp.read()
        except (urllib.error.URLError, OSError) as e:
            log.warning("live adapters: cannot write the pod report: %s", e)
            return  # retried on the next step: _last is unchanged
        self._last = text


def _in_cluster_api() -> str | None:
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        return None
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


def served_from(base: Served, published: Published) -> Served:
    """What the gateway serves once the agent has published a mapping."""
    return Served(
        base.preset,
        tuple(published.names),
        published.chat_default,
        tuple((name, internal) for name, internal in published.names.items()),
    )


class LiveAdapters:
    """The agent plus the state the gateway reads (current Served, report, readiness)."""

    def __init__(
        self,
        base: Served,
        upstream: str,
        desired_file: str,
        files_root: str,
        work_dir: str,
        capacity: Capacity,
        on_publish: Callable[[Served], None],
    ):
        runtime = RuntimeAdapters(upstream)
        self.base = base
        self._on_publish = on_publish
        self.agent = Agent(desired_file, files_root, work_dir, capacity, runtime.load, runtime.unload, self._publish)
        self.desired_file = desired_file
        self.started = False  # sticky: the first desired set has been served (or failed): the pod may be Ready
        self.reporter = PodReporter()
        self._seen: str | None = None

    def _publish(self, published: Published) -> None:
        self._on_publish(served_from(self.base, published))

    def _desired_digest(self) -> str:
        try:
            with open(self.desired_file, "rb") as f:
                return hashlib.sha256(f.read()).hexdigest()
        except OSError:
            return ""

    def step(self) -> None:
        """One reconcile if the desired set changed or something still waits."""
        digest = self._desired_digest()
        if digest == self._seen and self.agent.synced:
            self.reporter.report(self.agent.report())  # a write that failed is retried
            return
        self._seen = digest
        self.agent.reconcile()
        if self.agent.synced and not self.started:
            self.started = True
        for state in self.agent.states.values():
            if state.state == "Failed":
                log.warning("adapter %s: %s %s", state.name, state.reason, state.message)
        self.reporter.report(self.agent.report())

    async def run(self, runtime_up: Callable[[], object]) -> None:
        while not await runtime_up():  # type: ignore[misc]
            await asyncio.sleep(POLL_S)
        while True:
            try:
                await asyncio.to_thread(self.step)
            except Exception:
                log.exception("live adapters: reconcile failed")
            await asyncio.sleep(POLL_S)
