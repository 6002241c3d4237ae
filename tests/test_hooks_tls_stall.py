"""Strangers cannot freeze the hook server: TLS handshakes run on the workers' event loops
with a deadline, so connections that send part of a ClientHello and go silent hold no thread; strangers who
finish a handshake and then stall hold only threads that Metacontroller's connections never need.

Everything is real: `python -m hooks certs` and `python -m hooks serve --tls-dir` (gunicorn) on loopback;
the attack is raw sockets, the callers are requests with and without Metacontroller's certificate.
"""

from __future__ import annotations

import socket
import ssl
import time

import pytest
import requests

pytestmark = pytest.mark.integration

pytest.importorskip("gunicorn", reason="gunicorn is not installed")
pytest.importorskip("cryptography", reason="cryptography is not installed")

from hook_server_support import HookServer, hooks_env, make_certs, serve_argv, serve_tls  # noqa: E402
from loopback_support import free_port  # noqa: E402

# The first 11 bytes of a TLS 1.2+ ClientHello record: record header, handshake type and part of its length.
PARTIAL_CLIENT_HELLO = bytes.fromhex("16030102000100 01fc0303".replace(" ", ""))
ANSWER_WITHIN_S = 2.0
CUSTOMIZE = {"controller": {}, "parent": {"metadata": {"name": "wsabcdef0123"}}}


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("hook-tls"))


def serve(certs, workers: int, threads: int) -> HookServer:
    port = free_port()
    return serve_tls(serve_argv(port, workers, threads, tls_dir=certs), port, certs, hooks_env())


def stall_handshakes(server: HookServer, count: int) -> list[socket.socket]:
    port = int(server.url.rsplit(":", 1)[1])
    held = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(PARTIAL_CLIENT_HELLO)
        held.append(s)
    return held


def stall_after_handshake(server: HookServer, certs, count: int) -> list[ssl.SSLSocket]:
    """Anonymous clients that finish the handshake, send half a request and go silent."""
    port = int(server.url.rsplit(":", 1)[1])
    context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    held = []
    for _ in range(count):
        s = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5), server_hostname="127.0.0.1")
        s.sendall(b"POST /sync/workspace HTTP/1.1\r\nHost: hooks\r\nContent-Le")  # half a head
        held.append(s)
    return held


def timed_calls(server: HookServer, rounds: int = 3) -> list[tuple[str, int, float]]:
    """(call, status, seconds) for /healthz without a certificate and a hook call with Metacontroller's."""
    out = []
    for _ in range(rounds):
        started = time.monotonic()
        health = requests.get(server.url + "/healthz", timeout=10, verify=server.verify)
        out.append(("healthz", health.status_code, time.monotonic() - started))
        started = time.monotonic()
        hook = requests.post(server.url + "/customize/machine", json=CUSTOMIZE, timeout=10, verify=server.verify,
                             cert=server.cert)  # fmt: skip
        out.append(("customize/machine", hook.status_code, time.monotonic() - started))
    return out


def assert_answered_in_time(server: HookServer, label: str) -> None:
    """Every probe and Metacontroller call answers 200 within ANSWER_WITHIN_S (timings printed under `label`)."""
    calls = timed_calls(server)
    print(f"{label}:", [(c, s, round(t, 3)) for c, s, t in calls])
    assert all(status == 200 for _, status, _ in calls), calls
    assert max(seconds for _, _, seconds in calls) < ANSWER_WITHIN_S, calls


@pytest.mark.parametrize(("workers", "threads", "stalled"), [(1, 4, 100), (2, 8, 100)])
def test_stalled_handshakes_hold_no_thread(certs, workers, threads, stalled):
    server = serve(certs, workers, threads)
    held = []
    try:
        held = stall_handshakes(server, stalled)
        time.sleep(0.5)
        assert_answered_in_time(server, f"{workers}x{threads}, {stalled} stalled handshakes")
    finally:
        for s in held:
            s.close()
        server.stop()


def test_a_stalled_handshake_is_closed_after_its_deadline(certs):
    from hooks.server.tls_worker import HANDSHAKE_TIMEOUT_S

    server = serve(certs, 1, 4)
    try:
        [stalled] = stall_handshakes(server, 1)
        stalled.settimeout(HANDSHAKE_TIMEOUT_S + 5)
        started = time.monotonic()
        try:
            closed = stalled.recv(1024) == b""
        except ConnectionResetError:
            closed = True
        assert closed and time.monotonic() - started < HANDSHAKE_TIMEOUT_S + 3
    finally:
        server.stop()


def test_strangers_stalling_after_the_handshake_starve_neither_metacontroller_nor_probes(certs):
    server = serve(certs, 1, 4)
    held: list = []
    try:
        held = stall_after_handshake(server, certs, 12) + stall_handshakes(server, 100)
        time.sleep(0.5)
        assert_answered_in_time(server, "1x4, 12 stalled requests and 100 stalled handshakes")
    finally:
        for s in held:
            s.close()
        server.stop()


def test_a_request_is_complete_once_its_head_and_announced_body_are_in():
    from hooks.server.tls_worker import request_is_complete

    assert not request_is_complete(b"GET /healthz HTTP/1.1\r\nHost: h\r\n")
    assert request_is_complete(b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n")
    head = b"POST /sync/workspace HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n"
    assert not request_is_complete(head + b"{}")
    assert request_is_complete(head + b"{}{}{")
    assert request_is_complete(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n")  # gunicorn answers it
