"""The gateway stops the model server's work for a client that has gone, and refuses absurd token
budgets with a 400 naming the field (issue 11, item 15).

The gateway runs as its own process (`python -m inference.gateway`, as in the pod) in front of a stub
model server: a plain socket server standing in for SGLang's HTTP front (the GPU engine cannot run
here). The stub never finishes on its own: it holds a non-streamed answer for 60 s, or streams a chunk
every 50 ms for 60 s, and records when the gateway closes the upstream connection. SGLang aborts a
generation when its HTTP client disconnects, so "the upstream connection is closed" is what stops the
engine's work.
"""
from __future__ import annotations

import json
import socket
import threading
import time

import pytest
import requests

pytestmark = pytest.mark.integration

from inference_support.procs import start_module, stop
from loopback_support import free_port

PRESET = "phi-3-mini-4k-instruct"
HOLD_S = 60.0


class HangingUpstream:
    """Accepts requests and never completes them; records each request's path and how it ended."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.started: list[str] = []
        self.disconnected: list[str] = []
        self.completed: list[str] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket):
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                data = conn.recv(65536)
                if not data:
                    return
                head += data
            header, _, body = head.partition(b"\r\n\r\n")
            lines = header.decode().split("\r\n")
            path = lines[0].split()[1]
            length = next((int(h.split(":", 1)[1]) for h in lines[1:] if h.lower().startswith("content-length:")), 0)
            while len(body) < length:
                body += conn.recv(65536)
            if path == "/health" or path == "/v1/models":
                reply = b'{"data": []}' if path == "/v1/models" else b"{}"
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(reply), reply))
                return
            with self.lock:
                self.started.append(path)
            request = json.loads(body or b"{}")
            streamed = request.get("stream") is True
            queued = "QUEUED" in json.dumps(request)  # an engine still queueing: nothing sent yet, not even headers
            ended = self._stream(conn) if streamed and not queued else self._hold(conn)
            with self.lock:
                (self.disconnected if ended == "disconnected" else self.completed).append(path)

    @staticmethod
    def _hold(conn: socket.socket) -> str:
        """Like a generating engine: no answer yet; notice the peer closing (recv returns b"")."""
        conn.settimeout(HOLD_S)
        try:
            return "completed" if conn.recv(1) else "disconnected"
        except TimeoutError:
            return "completed"
        except OSError:
            return "disconnected"

    @staticmethod
    def _stream(conn: socket.socket) -> str:
        try:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            deadline = time.monotonic() + HOLD_S
            while time.monotonic() < deadline:
                event = b'data: {"choices": [{"index": 0, "delta": {"content": "x"}}]}\n\n'
                conn.sendall(b"%x\r\n%s\r\n" % (len(event), event))
                time.sleep(0.05)
            return "completed"
        except OSError:
            return "disconnected"

    def wait_for(self, what: str, count: int, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(getattr(self, what)) >= count:
                    return True
            time.sleep(0.05)
        return False

    def close(self):
        self.sock.close()


@pytest.fixture(scope="module")
def upstream():
    u = HangingUpstream()
    yield u
    u.close()


@pytest.fixture(scope="module")
def gw(upstream):
    port = free_port()
    proc = start_module(["inference.gateway", "--served-model-name", PRESET, "--adapter", "fin",
                         "--upstream", upstream.url, "--host", "127.0.0.1", "--port", str(port)],
                        f"http://127.0.0.1:{port}/healthz")
    yield "127.0.0.1", port
    stop(proc)


def send_and_abandon(gw, path: str, body: dict, read_first: bool = False) -> None:
    """POST with a raw socket, optionally read the first bytes of the answer, then hang up."""
    payload = json.dumps(body).encode()
    with socket.create_connection(gw, timeout=10) as s:
        s.sendall(b"POST %s HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                  % (path.encode(), len(payload), payload))
        if read_first:
            assert s.recv(65536).startswith(b"HTTP/1.1 200")
        else:
            time.sleep(0.3)


MESSAGES = [{"role": "user", "content": "write a long story"}]
CASES = {
    "/chat": ("/chat", {"messages": MESSAGES}),
    "/v1/chat/completions": ("/v1/chat/completions", {"model": PRESET, "messages": MESSAGES}),
    "/v1/completions": ("/v1/completions", {"model": f"{PRESET}:fin", "prompt": "once upon a time"}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_an_abandoned_non_streamed_request_is_cancelled_upstream(gw, upstream, case):
    path, body = CASES[case]
    before_started, before_gone = len(upstream.started), len(upstream.disconnected)
    for _ in range(5):
        send_and_abandon(gw, path, body)
    assert upstream.wait_for("started", before_started + 5), "the requests never reached the upstream"
    assert upstream.wait_for("disconnected", before_gone + 5), (
        f"the model server kept generating for gone clients: {len(upstream.disconnected) - before_gone} of 5 "
        "upstream requests were cancelled")


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_an_abandoned_stream_is_cancelled_upstream(gw, upstream, path):
    body = {**CASES[path][1], "stream": True}
    before_gone = len(upstream.disconnected)
    send_and_abandon(gw, path, body, read_first=True)
    assert upstream.wait_for("disconnected", before_gone + 1), "the stream kept running for a gone client"


def test_an_abandoned_stream_still_queued_upstream_is_cancelled(gw, upstream):
    """The client hangs up before the engine sent anything: no write fails, only the hang-up can tell."""
    body = {"model": PRESET, "messages": [{"role": "user", "content": "QUEUED"}], "stream": True}
    before_gone = len(upstream.disconnected)
    send_and_abandon(gw, "/v1/chat/completions", body)
    assert upstream.wait_for("disconnected", before_gone + 1), "the queued stream kept its upstream request"


def test_the_gateway_still_serves_after_abandoned_requests(gw):
    host, port = gw
    assert requests.get(f"http://{host}:{port}/healthz", timeout=5).status_code == 200


@pytest.mark.parametrize("path, body, field", [
    ("/chat", {"prompt": "hi", "max_tokens": 1e308}, "max_tokens"),
    ("/chat", {"prompt": "hi", "generate_kwargs": {"max_new_tokens": 1e308}}, "max_new_tokens"),
    ("/chat", {"prompt": "hi", "max_length": 2**40}, "max_length"),
    ("/chat", {"prompt": "hi", "max_new_tokens": 12.5}, "max_new_tokens"),
    ("/chat", {"prompt": "hi", "min_new_tokens": -3}, "min_new_tokens"),
    ("/chat", {"prompt": "hi", "max_tokens": True}, "max_tokens"),
    ("/v1/chat/completions", {"model": PRESET, "messages": MESSAGES, "max_tokens": 1e308}, "max_tokens"),
    ("/v1/completions", {"model": PRESET, "prompt": "x", "max_tokens": 1e308}, "max_tokens"),
    ("/v1/chat/completions", {"model": PRESET, "messages": MESSAGES, "max_completion_tokens": 1e308},
     "max_completion_tokens"),
])
def test_an_absurd_token_budget_is_a_400_naming_the_field(gw, upstream, path, body, field):
    host, port = gw
    before = len(upstream.started)
    r = requests.post(f"http://{host}:{port}{path}", data=json.dumps(body), timeout=10,
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 400, (r.status_code, r.text)
    assert f"`{field}`" in r.json()["detail"], r.text
    assert len(upstream.started) == before
