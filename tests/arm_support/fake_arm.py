"""A local HTTPS server speaking the documented ARM agentPools contract, for tests.

It stands in for Azure's servers, the one boundary that cannot exist on this machine. Behaviour
(learn.microsoft.com "Agent Pools" REST reference and "Track asynchronous Azure operations"):
  PUT    .../agentPools/{name}  201 + Azure-AsyncOperation + Retry-After (create), 200 (update);
                                412 PreconditionFailed with If-None-Match: * when the pool exists;
                                400 {"error": {code, message}} when the test refuses the vmSize.
  GET    .../agentPools/{name}  200 with the pool, 404 {"error": {"code": "NotFound", ...}}.
  GET    .../agentPools         200 {"value": [every pool]} (one page).
  DELETE .../agentPools/{name}  202 + Azure-AsyncOperation + Location (pool goes Deleting), 204 if absent.
  Any call: 401 without the expected bearer token; 429 + Retry-After while throttling is switched on.
Faults a real ARM (or the network in front of it) can show: answer_raw_next() (e.g. a malformed 200),
drip() (the answer trickles out a byte at a time), hang() (a delay before each answer), and 404s for
a missing resource group / cluster (wrong_parent()).
State changes that real ARM makes over minutes (Creating -> Succeeded, Deleting -> gone) are made by
the test calling set_state() / finish_delete().
"""

from __future__ import annotations

import datetime
import json
import re
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tls_support import self_signed

TOKEN = "fake-arm-token"
SUBSCRIPTION = "00000000-0000-0000-0000-000000000001"
RESOURCE_GROUP = "rg-kaito"
CLUSTER = "aks-kaito"
# The identity of the install under test (KAITO_INSTALL_ID): a kube-system namespace UID.
INSTALL_ID = "5f1d6a2e-0000-4000-8000-00000000c1a5"

_POOL_PATH = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.ContainerService"
    r"/managedClusters/(?P<cluster>[^/]+)/agentPools/(?P<name>[^/]+)$",
    re.IGNORECASE,
)
_POOLS_PATH = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.ContainerService"
    r"/managedClusters/(?P<cluster>[^/]+)/agentPools/?$",
    re.IGNORECASE,
)
_OPERATION_PATH = re.compile(r"^/subscriptions/[^/]+/providers/Microsoft\.ContainerService/locations/[^/]+/operations/")
_POOL_NAME = re.compile(r"^[a-z][a-z0-9]{0,11}$")


class StaticTokenCredential:
    """A TokenCredential with a fixed token, defined here so no test reads a real credential."""

    def __init__(self, token: str = TOKEN):
        self.token = token
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **_kwargs: Any):
        from azure.core.credentials import AccessToken

        self.scopes.append(scopes)
        return AccessToken(self.token, int(time.time()) + 3600)


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


@dataclass
class _State:
    pools: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    refused_vm_sizes: dict[str, tuple[int, str, str]] = field(default_factory=dict)
    failures: list[tuple[int, dict[str, str], dict[str, Any]]] = field(default_factory=list)
    hang_seconds: float = 0.0
    drip_seconds_per_byte: float = 0.0
    raw_answers: list[tuple[int, dict[str, str], bytes]] = field(default_factory=list)
    parent_missing: tuple[int, str, str] | None = None
    clock: datetime.datetime = datetime.datetime(2026, 11, 26, 12, 0, 0, tzinfo=datetime.UTC)
    operations: int = 0
    # The VMs of each pool: power state (Running or Deallocated) and what its OS disk holds (scaleDownMode model).
    nodes: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def _make_certificate(directory: Path) -> tuple[Path, Path]:
    cert_pem, key_pem = self_signed("fake-arm.localhost", ip="127.0.0.1")
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert_pem)
    key_path.write_bytes(key_pem)
    return cert_path, key_path


class FakeArm:
    """Start with ``with FakeArm() as arm:``; ``arm.base_url`` is the endpoint to hand the SDK."""

    def __init__(self, token: str = TOKEN):
        self.token = token
        self.state = _State()
        self._lock = threading.Lock()
        self._tmp = tempfile.TemporaryDirectory(prefix="fake-arm-")
        cert, key = _make_certificate(Path(self._tmp.name))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.base_url = f"https://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> FakeArm:
        self._thread.start()
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.stop()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._tmp.cleanup()

    # ---- test controls -------------------------------------------------------------------
    def refuse_vm_size(self, vm_size: str, code: str, message: str, status: int = 400) -> None:
        self.state.refused_vm_sizes[vm_size] = (status, code, message)

    def fail_next(self, status: int, code: str, message: str, headers: dict[str, str] | None = None, count: int = 1):
        """Answer the next ``count`` requests (after authentication) with this ARM error."""
        self.state.failures.extend([(status, dict(headers or {}), _err(code, message))] * count)

    def throttle(self, count: int = 1, retry_after: int = 7) -> None:
        self.fail_next(
            429,
            "TooManyRequests",
            "The request is being throttled as the limit has been reached for operation type.",
            {"Retry-After": str(retry_after)},
            count,
        )

    def hang(self, seconds: float) -> None:
        self.state.hang_seconds = seconds

    def drip(self, seconds_per_byte: float) -> None:
        """Send every answer (headers and body) one byte at a time, this far apart."""
        self.state.drip_seconds_per_byte = seconds_per_byte

    def answer_raw_next(self, status: int, body: bytes, headers: dict[str, str] | None = None, count: int = 1) -> None:
        """Answer the next ``count`` authenticated requests with these exact bytes."""
        self.state.raw_answers.extend([(status, dict(headers or {}), body)] * count)

    def wrong_parent(self, code: str = "ResourceGroupNotFound") -> None:
        """Every pool request gets ARM's 404 for a missing resource group (or cluster, or subscription)."""
        messages = {
            "ResourceGroupNotFound": f"Resource group '{RESOURCE_GROUP}' could not be found.",
            "SubscriptionNotFound": f"The subscription '{SUBSCRIPTION}' could not be found.",
            "ResourceNotFound": (
                f"The Resource 'Microsoft.ContainerService/managedClusters/{CLUSTER}' under resource "
                f"group '{RESOURCE_GROUP}' was not found."
            ),
        }
        self.state.parent_missing = (404, code, messages[code])

    def tick(self, minutes: int = 1) -> None:
        self.state.clock += datetime.timedelta(minutes=minutes)

    def set_state(self, name: str, provisioning_state: str, error: tuple[str, str] | None = None) -> None:
        with self._lock:
            pool = self.state.pools[name]
            pool["properties"]["provisioningState"] = provisioning_state
            if error:
                pool["properties"]["status"] = {"provisioningError": {"code": error[0], "message": error[1]}}
            self._touch(pool)

    def add_foreign_pool(self, name: str, vm_size: str = "Standard_D4s_v5") -> None:
        """A pool this operator did not create (e.g. the cluster's own system pool)."""
        with self._lock:
            self.state.pools[name] = self._pool(name, {"vmSize": vm_size, "count": 3, "mode": "System"}, "Succeeded")

    def finish_delete(self, name: str) -> None:
        with self._lock:
            self.state.pools.pop(name, None)
            self.state.nodes.pop(name, None)  # a deleted pool's VMs and their disks go with it

    def pool_nodes(self, name: str) -> list[dict[str, Any]]:
        """The pool's VMs: {name, power: Running|Deallocated, disk: {what the node cached}, starts}."""
        return self.state.nodes.get(name, [])

    def write_disk(self, name: str, key: str) -> None:
        """Every running VM of the pool now holds `key` on its OS disk (an image, a weights cache entry)."""
        with self._lock:
            for node in self.state.nodes.get(name, []):
                if node["power"] == "Running":
                    node["disk"][key] = True

    def calls(self, method: str, name: str | None = None) -> list[Recorded]:
        return [
            r
            for r in self.state.requests
            if r.method == method and (name is None or r.path.rstrip("/").endswith("/agentPools/" + name))
        ]

    # ---- internals -----------------------------------------------------------------------
    def _now(self) -> str:
        return self.state.clock.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"

    def _touch(self, pool: dict[str, Any]) -> None:
        pool["systemData"]["lastModifiedAt"] = self._now()

    def _pool(self, name: str, properties: dict[str, Any], provisioning_state: str) -> dict[str, Any]:
        props = dict(properties)
        props["provisioningState"] = provisioning_state
        props.setdefault("powerState", {"code": "Running"})
        return {
            "id": (
                f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/"
                f"Microsoft.ContainerService/managedClusters/{CLUSTER}/agentPools/{name}"
            ),
            "name": name,
            "type": "Microsoft.ContainerService/managedClusters/agentPools",
            "systemData": {"createdAt": self._now(), "lastModifiedAt": self._now()},
            "properties": props,
        }

    def _scale_nodes(self, name: str, props: dict[str, Any]) -> None:
        """AKS scale-down mode: Delete removes surplus VMs (and any deallocated ones); Deallocate stops them and
        keeps their OS disks. A scale-up starts deallocated VMs first (disk as it was), then creates new ones."""
        nodes = self.state.nodes.setdefault(name, [])
        want = int(props.get("count", 1))
        deallocate = props.get("scaleDownMode", "Delete") == "Deallocate"
        if not deallocate:
            nodes[:] = [n for n in nodes if n["power"] == "Running"]
        running = [n for n in nodes if n["power"] == "Running"]
        for node in running[want:]:
            if deallocate:
                node["power"] = "Deallocated"
            else:
                nodes.remove(node)
        missing = want - min(len(running), want)
        for node in [n for n in nodes if n["power"] == "Deallocated"][:missing]:
            node["power"], node["starts"] = "Running", node["starts"] + 1
            missing -= 1
        for _ in range(missing):
            nodes.append({"name": f"aks-{name}-vmss{len(nodes):06d}", "power": "Running", "disk": {}, "starts": 1})

    def _operation_url(self) -> str:
        self.state.operations += 1
        return (
            f"{self.base_url}/subscriptions/{SUBSCRIPTION}/providers/Microsoft.ContainerService/locations/"
            f"eastus/operations/op{self.state.operations}?api-version=2026-08-01"
        )

    def answer(self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str], body: Any):
        """(status, headers, json body or None) for one request."""
        with self._lock:
            self.state.requests.append(Recorded(method, path, query, headers, body))
            if headers.get("authorization") != f"Bearer {self.token}":
                return 401, {}, _err("AuthenticationFailed", "Authentication failed: missing or wrong bearer token.")
            if not query.get("api-version"):
                return 400, {}, _err("MissingApiVersionParameter", "The api-version query parameter is required.")
            if self.state.raw_answers:
                return self.state.raw_answers.pop(0)
            if self.state.failures:
                return self.state.failures.pop(0)
            if self.state.parent_missing and _POOL_PATH.match(path):
                status, code, message = self.state.parent_missing
                return status, {}, _err(code, message)
            if _OPERATION_PATH.match(path) and method == "GET":
                return 200, {}, {"status": "InProgress"}
            listing = _POOLS_PATH.match(path)
            if (
                listing
                and method == "GET"
                and (listing["sub"], listing["rg"].lower(), listing["cluster"])
                == (
                    SUBSCRIPTION,
                    RESOURCE_GROUP.lower(),
                    CLUSTER,
                )
            ):
                return 200, {}, {"value": [self.state.pools[n] for n in sorted(self.state.pools)]}
            match = _POOL_PATH.match(path)
            if not match or (match["sub"], match["rg"].lower(), match["cluster"]) != (
                SUBSCRIPTION,
                RESOURCE_GROUP.lower(),
                CLUSTER,
            ):
                return 404, {}, _err("ResourceNotFound", f"The resource at {path} was not found.")
            name = match["name"]
            pool = self.state.pools.get(name)
            if method == "GET":
                if pool is None:
                    return 404, {}, _err("NotFound", f"Agent Pool not found: {name}")
                return 200, {}, pool
            if method == "DELETE":
                if pool is None:
                    return 204, {}, None
                pool["properties"]["provisioningState"] = "Deleting"
                self._touch(pool)
                url = self._operation_url()
                return 202, {"Azure-AsyncOperation": url, "Location": url, "Retry-After": "10"}, None
            if method == "PUT":
                if pool is not None and headers.get("if-none-match") == "*":
                    return 412, {}, _err("PreconditionFailed", f"Agent pool {name} exists (If-None-Match: *).")
                return self._put(name, pool, body)
            return 405, {}, _err("MethodNotAllowed", f"{method} is not supported")

    def _put(self, name: str, pool: dict[str, Any] | None, body: Any):
        if not _POOL_NAME.match(name):
            return (
                400,
                {},
                _err(
                    "InvalidParameter",
                    f"Agent pool name {name!r} is invalid: lowercase letters and digits, 1-12 characters.",
                ),
            )
        props = body.get("properties") if isinstance(body, dict) else None
        if not isinstance(props, dict) or not props.get("vmSize"):
            return 400, {}, _err("InvalidParameter", "properties.vmSize is required.")
        refused = self.state.refused_vm_sizes.get(props["vmSize"])
        if refused:
            status, code, message = refused
            return status, {}, _err(code, message)
        if mig := _gpu_instance_profile_refusal(props):
            return 400, {}, mig
        if scale := _scale_down_refusal(props, pool):
            return 400, {}, scale
        if pool is not None:
            self._scale_nodes(name, {**pool["properties"], **props})
            pool["properties"].update(props)
            pool["properties"]["provisioningState"] = "Updating"
            self._touch(pool)
            return 200, {}, pool
        self.state.pools[name] = created = self._pool(name, props, "Creating")
        self.state.nodes[name] = []
        self._scale_nodes(name, props)
        return 201, {"Azure-AsyncOperation": self._operation_url(), "Retry-After": "10"}, created


# ARM's GPUInstanceProfile enum (Microsoft.ContainerService agentPools), and the VM sizes AKS creates MIG
# pools on (the A100 and H100 NC sizes); anything else with a gpuInstanceProfile is a 400.
GPU_INSTANCE_PROFILES = ("MIG1g", "MIG2g", "MIG3g", "MIG4g", "MIG7g")
MIG_VM_SIZES = frozenset(
    s.lower()
    for s in (
        "Standard_NC24ads_A100_v4",
        "Standard_NC48ads_A100_v4",
        "Standard_NC96ads_A100_v4",
        "Standard_NC40ads_H100_v5",
        "Standard_NC80adis_H100_v5",
    )
)


def _gpu_instance_profile_refusal(props: dict[str, Any]) -> dict[str, Any] | None:
    profile = props.get("gpuInstanceProfile")
    if profile is None:
        return None
    if profile not in GPU_INSTANCE_PROFILES:
        return _err(
            "InvalidParameter",
            f"The value {profile!r} of properties.gpuInstanceProfile is invalid; allowed: {', '.join(GPU_INSTANCE_PROFILES)}.",
        )
    if str(props["vmSize"]).lower() not in MIG_VM_SIZES:
        return _err(
            "InvalidParameter",
            f"GPU instance profile {profile} is not supported on VM size {props['vmSize']}; it needs a MIG-capable GPU size.",
        )
    return None


SCALE_DOWN_MODES = ("Delete", "Deallocate")
OS_DISK_TYPES = ("Managed", "Ephemeral")


def _scale_down_refusal(props: dict[str, Any], pool: dict[str, Any] | None) -> dict[str, Any] | None:
    """What ARM refuses about count, scaleDownMode and osDiskType (the REST spec's ranges and enums, and AKS's
    documented limits: Deallocate needs Managed OS disks; osDiskType cannot change after creation)."""
    merged = {**((pool or {}).get("properties") or {}), **props}
    count, mode = merged.get("count", 1), merged.get("mode", "User")
    low = 1 if mode == "System" else 0
    if not isinstance(count, int) or not low <= count <= 1000:
        return _err("InvalidParameter", f"properties.count {count!r} must be {low} to 1000 for a {mode} pool.")
    if merged.get("scaleDownMode", "Delete") not in SCALE_DOWN_MODES:
        return _err("InvalidParameter", f"properties.scaleDownMode must be one of {', '.join(SCALE_DOWN_MODES)}.")
    disk = merged.get("osDiskType")
    if disk is not None and disk not in OS_DISK_TYPES:
        return _err("InvalidParameter", f"properties.osDiskType must be one of {', '.join(OS_DISK_TYPES)}.")
    before = ((pool or {}).get("properties") or {}).get("osDiskType")
    if pool is not None and "osDiskType" in props and props["osDiskType"] != before:
        return _err("PropertyChangeNotAllowed", "Changing property 'osDiskType' is not allowed.")
    if merged.get("scaleDownMode") == "Deallocate" and disk != "Managed":
        return _err(
            "InvalidParameter",
            "scaleDownMode Deallocate is not supported with Ephemeral OS disks (the default where the VM size "
            "supports them); set properties.osDiskType to Managed.",
        )
    return None


def _err(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _handler_for(arm: FakeArm):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        _headers_buffer: list[bytes]  # BaseHTTPRequestHandler's pending header lines (send_header appends)

        def log_message(self, *_args: Any) -> None:  # keep pytest output clean
            pass

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode("utf-8", "replace")
            if arm.state.hang_seconds:
                time.sleep(arm.state.hang_seconds)
            url = urlsplit(self.path)
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, extra, payload = arm.answer(self.command, url.path, parse_qs(url.query), headers, body)
            if isinstance(payload, bytes):
                data = payload
            else:
                data = json.dumps(payload).encode() if payload is not None else b""
            self.send_response(status)
            for key, value in extra.items():
                self.send_header(key, value)
            if payload is not None:
                self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("x-ms-request-id", f"req-{len(arm.state.requests)}")
            if arm.state.drip_seconds_per_byte:
                self._drip(data)
                return
            self.end_headers()
            self.wfile.write(data)

        def _drip(self, data: bytes) -> None:
            self._headers_buffer.append(b"\r\n")
            raw = b"".join(self._headers_buffer) + data
            self._headers_buffer = []
            try:
                for i in range(len(raw)):
                    self.wfile.write(raw[i : i + 1])
                    self.wfile.flush()
                    time.sleep(arm.state.drip_seconds_per_byte)
            except OSError:  # the client gave up
                self.close_connection = True

        do_GET = do_PUT = do_DELETE = do_POST = _serve

    return Handler
