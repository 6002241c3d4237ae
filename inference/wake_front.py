"""The wake-on-demand front: our gateway, plus a held-request queue, in front of a Workspace that scales to zero.

`python -m inference.wake_front` serves the gateway's API (Kaito's /chat, the OpenAI API) and relays to the
Workspace's backend Service. While the backend has no Ready replica, each request that needs the model (a
POST) is held in a bounded queue, and the front asks for one replica by patching the Workspace's `scale`
subresource, the one permission its ServiceAccount has. When the backend answers its health check, the held
requests go on in arrival order (streams included). A full queue, or a request held past its wait limit, gets
503 with Retry-After and a body saying the model is waking; a client that hangs up leaves the queue. After
`--idle-seconds` without a request it patches the scale subresource to 0.

The front asks only when the Workspace is at 0: it reads the scale subresource with an empty patch (the answer
is the current Scale; the front has no `get`) and sets 1 with that resourceVersion as a precondition, so a
Workspace scaled to 3 whose pods are restarting is never cut to 1. GET /queue is the queue as JSON, for
KEDA's metrics-api trigger.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import logging
import os
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import ClientError, ClientSession, ClientTimeout, web

from inference import GATEWAY_PORT
from inference.gateway import app as gateway_app
from inference.gateway import names as gateway_names
from inference.gateway import state as gateway_state
from inference.gateway.translation import Served

log = logging.getLogger("wake_front")

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
RETRY_AFTER_SECONDS = 30
# How often the backend's health is asked, and the scale subresource re-checked while requests wait.
POLL_SECONDS = 1.0
ASK_EVERY_SECONDS = 10.0
# Served by the front itself: they neither wait for the model nor count as activity.
OWN_PATHS = frozenset({"/healthz", "/health", "/queue"})


class QueueFull(Exception):
    pass


class WaitExpired(Exception):
    pass


class HeldRequests:
    """Requests waiting for a Ready replica, in arrival order, at most `size`, each for at most `max_wait` s."""

    def __init__(self, size: int, max_wait: float):
        self.size, self.max_wait = size, max_wait
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()

    def __len__(self) -> int:
        return len(self._waiting)

    async def hold(self) -> None:
        """Returns once released; QueueFull, WaitExpired; a cancelled waiter (client gone) leaves the queue."""
        if len(self._waiting) >= self.size:
            raise QueueFull
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), self.max_wait)
        except TimeoutError:
            raise WaitExpired from None
        finally:
            with contextlib.suppress(ValueError):
                self._waiting.remove(waiter)

    def release_all(self) -> int:
        """Let every held request go, first come first: their handlers resume in this order."""
        released = 0
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                released += 1
        return released


@dataclass(frozen=True)
class ApiServer:
    """Where the Workspace's scale subresource is and how to authenticate (in-cluster by default)."""

    url: str
    token_file: str
    ca_file: str | None
    namespace: str
    workspace: str

    @property
    def scale_url(self) -> str:
        return f"{self.url}/apis/kaito.sh/v1alpha1/namespaces/{self.namespace}/workspaces/{self.workspace}/scale"

    def ssl_context(self) -> ssl.SSLContext | bool:
        """The CA to check the API server against; True (the default check) for plain http."""
        if not self.url.startswith("https://"):
            return True
        return ssl.create_default_context(cafile=self.ca_file)

    def headers(self) -> dict[str, str]:
        # Re-read each time: the projected token is rotated by the kubelet.
        with open(self.token_file) as f:
            token = f.read().strip()
        return {"Authorization": f"Bearer {token}", "Content-Type": "application/merge-patch+json"}


class ScaleError(Exception):
    pass


class Scaler:
    """Patches (only patches) the Workspace's scale subresource."""

    def __init__(self, api: ApiServer, session: ClientSession):
        self.api, self.session = api, session
        self.patches: list[dict] = []  # what was sent, for the logs

    async def _patch(self, body: dict) -> tuple[int, dict]:
        self.patches.append(body)
        async with self.session.patch(
            self.api.scale_url,
            data=json.dumps(body),
            headers=self.api.headers(),
            ssl=self.api.ssl_context(),
            timeout=ClientTimeout(total=15),
        ) as resp:
            text = await resp.text()
            try:
                doc = json.loads(text) if text else {}
            except ValueError:
                doc = {"message": text}
            return resp.status, doc

    async def ask_for_one(self) -> str:
        """Sets spec.replicas to 1 if it is 0; returns what happened (`asked`, `already N`, `conflict`)."""
        status, scale = await self._patch({})
        if status != 200:
            raise ScaleError(f"reading the scale subresource: HTTP {status}: {scale.get('message', scale)}")
        current = (scale.get("spec") or {}).get("replicas") or 0  # autoscaling/v1 omits a 0
        if current > 0:
            return f"already {current}"
        rv = (scale.get("metadata") or {}).get("resourceVersion")
        status, answer = await self._patch({"metadata": {"resourceVersion": rv}, "spec": {"replicas": 1}})
        if status == 409:
            return "conflict"
        if status != 200:
            raise ScaleError(f"scaling to 1: HTTP {status}: {answer.get('message', answer)}")
        return "asked"

    async def scale_to_zero(self) -> None:
        status, answer = await self._patch({"spec": {"replicas": 0}})
        if status != 200:
            raise ScaleError(f"scaling to 0: HTTP {status}: {answer.get('message', answer)}")


class Front:
    """The backend's readiness, the held requests, the idle clock, and the loop that acts on them."""

    def __init__(self, held: HeldRequests, idle_seconds: float, clock: Callable[[], float] = time.monotonic):
        self.held = held
        self.idle_seconds = idle_seconds
        self.clock = clock
        self.backend_ready = False
        self.in_flight = 0
        self.last_request = clock()
        self.scaled_down = False
        # After a scale to 0 the old replica answers until it is gone: hold new requests meanwhile (and ask
        # again) instead of sending them to a terminating pod.
        self.draining = False
        self.last_ask = float("-inf")
        self.last_answer = ""
        self.wanted = asyncio.Event()

    def touch(self) -> None:
        self.last_request = self.clock()
        self.scaled_down = False

    def idle(self) -> bool:
        return (
            not self.held
            and self.in_flight == 0
            and not self.scaled_down
            and self.clock() - self.last_request >= self.idle_seconds
        )

    def report(self) -> dict:
        return {
            "queued": len(self.held),
            "inFlight": self.in_flight,
            "demand": len(self.held) + self.in_flight,
            "backendReady": self.backend_ready,
            "waking": bool(self.held) and not self.backend_ready,
            "queueSize": self.held.size,
            "maxWaitSeconds": self.held.max_wait,
            "idleSeconds": round(self.clock() - self.last_request, 1),
            "scaledDown": self.scaled_down,
            "lastAsk": self.last_answer,
        }

    async def step(self, probe: Callable, scaler: Scaler) -> None:
        """One round: ask the backend; release, ask for a replica, or scale to 0 after the idle period."""
        answers = await probe()
        self.draining = self.draining and answers
        self.backend_ready = answers and not self.draining
        if self.backend_ready:
            if self.held.release_all():
                self.last_answer = ""
            elif self.idle():
                await self._scale_down(scaler)
            return
        if self.held and self.clock() - self.last_ask >= ASK_EVERY_SECONDS:
            self.last_ask = self.clock()
            try:
                self.last_answer = await scaler.ask_for_one()
                # Asked again (or someone already had): a backend that answers now is the one to use, even
                # the replica the scale to 0 had not yet removed.
                self.draining = self.last_answer == "conflict" and self.draining
                log.info("held %d request(s); scale subresource: %s", len(self.held), self.last_answer)
            except (ScaleError, ClientError, TimeoutError, OSError) as e:
                self.last_answer = f"error: {e}"
                log.warning("could not ask for a replica: %s", e)
        elif self.idle():
            await self._scale_down(scaler)

    async def _scale_down(self, scaler: Scaler) -> None:
        try:
            await scaler.scale_to_zero()
            self.scaled_down = True
            self.draining, self.backend_ready = self.backend_ready, False
            log.info("no request for %.0f s: scaled to 0", self.idle_seconds)
        except (ScaleError, ClientError, TimeoutError, OSError) as e:
            log.warning("could not scale to 0: %s", e)


FRONT = web.AppKey("front", Front)


def _waking(message: str) -> web.Response:
    body = {
        "detail": message,
        "error": {"message": message, "type": "model_waking", "code": 503},
        "message": message,
    }
    return web.json_response(body, status=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


@web.middleware
async def hold_until_ready(request: web.Request, handler):
    front = request.app[FRONT]
    if request.path in OWN_PATHS or request.method != "POST":
        return await handler(request)
    front.touch()
    if not front.backend_ready or front.held:
        front.wanted.set()
        try:
            await front.held.hold()
        except QueueFull:
            return _waking(
                f"the model is waking up (scaled to zero); {front.held.size} requests are already waiting, "
                f"retry in {RETRY_AFTER_SECONDS} s"
            )
        except WaitExpired:
            return _waking(
                f"the model is waking up (scaled to zero) and was not ready within {front.held.max_wait:g} s; "
                f"retry in {RETRY_AFTER_SECONDS} s"
            )
    front.in_flight += 1
    try:
        return await handler(request)
    finally:
        front.in_flight -= 1
        front.touch()


async def queue_report(request: web.Request) -> web.Response:
    return web.json_response(request.app[FRONT].report())


def _probe(app: web.Application) -> Callable:
    async def probe() -> bool:
        try:
            async with app[gateway_state.SESSION].get(
                app[gateway_state.UPSTREAM] + "/health", timeout=ClientTimeout(total=5)
            ) as up:
                await up.read()
                return up.status == 200
        except (ClientError, TimeoutError, OSError):
            return False

    return probe


def _loop_ctx(api: ApiServer):
    async def ctx(app: web.Application):
        front = app[FRONT]
        scaler = Scaler(api, app[gateway_state.SESSION])
        probe = _probe(app)

        async def run() -> None:
            while True:
                await front.step(probe, scaler)
                front.wanted.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(front.wanted.wait(), POLL_SECONDS)

        task = asyncio.get_running_loop().create_task(run())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return ctx


def make_app(served: Served, upstream: str, front: Front, api: ApiServer) -> web.Application:
    app = gateway_app.make_app(served, upstream)
    app[FRONT] = front
    app.middlewares.append(hold_until_ready)
    app.router.add_get("/queue", queue_report)
    app.cleanup_ctx.append(_loop_ctx(api))  # after the gateway's session context: it uses the session
    return app


def _in_cluster_url() -> str:
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if not host:
        return ""
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m inference.wake_front")
    p.add_argument("--served-model-name", required=True)
    p.add_argument("--adapter", action="append", default=[])
    p.add_argument("--chat-default-adapter", default=None)
    p.add_argument("--adapter-names-from", default=None, metavar="FILE")
    p.add_argument("--upstream", required=True, help="the Workspace's backend Service")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=GATEWAY_PORT)
    p.add_argument("--workspace", required=True, metavar="NAMESPACE/NAME")
    p.add_argument("--idle-seconds", type=float, required=True, help="scale to 0 after this long without a request")
    p.add_argument("--queue-size", type=int, default=100, help="requests held at most while the model wakes")
    p.add_argument("--max-wait-seconds", type=float, default=1200, help="how long one request is held at most")
    p.add_argument("--apiserver", default=None, help="default: the in-cluster API server")
    p.add_argument("--token-file", default=f"{SA_DIR}/token")
    p.add_argument("--ca-file", default=f"{SA_DIR}/ca.crt")
    ns = p.parse_args(argv)
    namespace, slash, name = ns.workspace.partition("/")
    if not slash or not namespace or not name:
        p.error(f"--workspace {ns.workspace!r}: use NAMESPACE/NAME")
    if ns.queue_size < 1 or ns.max_wait_seconds <= 0 or ns.idle_seconds <= 0:
        p.error("--queue-size, --max-wait-seconds and --idle-seconds must be positive")
    url = ns.apiserver or _in_cluster_url()
    if not url:
        p.error("--apiserver is needed outside a cluster (KUBERNETES_SERVICE_HOST is not set)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    api = ApiServer(url.rstrip("/"), ns.token_file, ns.ca_file if url.startswith("https://") else None, namespace, name)
    served = Served(ns.served_model_name, tuple(ns.adapter), ns.chat_default_adapter)
    app = make_app(served, ns.upstream, Front(HeldRequests(ns.queue_size, ns.max_wait_seconds), ns.idle_seconds), api)
    if ns.adapter_names_from:
        box = app[gateway_state.SERVED]

        def publish(new: Served) -> None:
            box.current = new

        app.cleanup_ctx.append(gateway_names.NamesFollower(served, ns.adapter_names_from, publish).ctx)
    # handler_cancellation: a client that hangs up cancels its handler, so a held request leaves the queue.
    web.run_app(app, host=ns.host, port=ns.port, access_log=None, print=None, handler_cancellation=True)


if __name__ == "__main__":
    main()
