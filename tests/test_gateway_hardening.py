"""The gateway stops the model server's work for a client that has gone, and refuses absurd token
budgets with a 400 naming the field.

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
from inference_support.procs import start_gateway, stop

pytestmark = pytest.mark.integration

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
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                    b"Connection: close\r\n\r\n%s" % (len(reply), reply)
                )
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
    proc, port = start_gateway(PRESET, upstream.url, "--adapter", "fin")
    yield "127.0.0.1", port
    stop(proc)


def send_and_abandon(gw, path: str, body: dict, read_first: bool = False) -> None:
    """POST with a raw socket, optionally read the first bytes of the answer, then hang up."""
    payload = json.dumps(body).encode()
    with socket.create_connection(gw, timeout=10) as s:
        s.sendall(
            b"POST %s HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (path.encode(), len(payload), payload)
        )
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
        "upstream requests were cancelled"
    )


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


@pytest.mark.parametrize(
    "path, body, field",
    [
        ("/chat", {"prompt": "hi", "max_tokens": 1e308}, "max_tokens"),
        ("/chat", {"prompt": "hi", "generate_kwargs": {"max_new_tokens": 1e308}}, "max_new_tokens"),
        ("/chat", {"prompt": "hi", "max_length": 2**40}, "max_length"),
        ("/chat", {"prompt": "hi", "max_new_tokens": 12.5}, "max_new_tokens"),
        ("/chat", {"prompt": "hi", "min_new_tokens": -3}, "min_new_tokens"),
        ("/chat", {"prompt": "hi", "max_tokens": True}, "max_tokens"),
        ("/v1/chat/completions", {"model": PRESET, "messages": MESSAGES, "max_tokens": 1e308}, "max_tokens"),
        ("/v1/completions", {"model": PRESET, "prompt": "x", "max_tokens": 1e308}, "max_tokens"),
        (
            "/v1/chat/completions",
            {"model": PRESET, "messages": MESSAGES, "max_completion_tokens": 1e308},
            "max_completion_tokens",
        ),
    ],
)
def test_an_absurd_token_budget_is_a_400_naming_the_field(gw, upstream, path, body, field):
    host, port = gw
    before = len(upstream.started)
    r = requests.post(
        f"http://{host}:{port}{path}", data=json.dumps(body), timeout=10, headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 400, (r.status_code, r.text)
    assert f"`{field}`" in r.json()["detail"], r.text
    assert len(upstream.started) == before


# --- only the gateway's own routes reach the runtime ------------------------------
# SGLang's admin endpoints (flush_cache, start_profile, get_server_info, ...) listen on the same loopback
# port as its API. The gateway used to forward GET /v1/responses/<id> by the client's decoded path, so
# an id of "..%2F..%2Fflush_cache" became /v1/responses/../../flush_cache upstream, which SGLang's
# router normalises to /flush_cache.

TRAVERSALS = [
    "/v1/responses/..%2F..%2Fflush_cache",
    "/v1/responses/..%2f..%2fstart_profile",
    "/v1/responses/..%2F..%2Fget_server_info",
    "/v1/responses/..%2F..%2Fmetrics",
    "/v1/responses/%2E%2E%2F%2E%2E%2Fflush_cache",
    "/v1/responses/..%5C..%5Cflush_cache",
    "/v1/responses/%252E%252E%252Fflush_cache",
    "/v1/responses/../../flush_cache",
    "/v1/models/../../flush_cache",
    "/metrics/../flush_cache",
    "/v1/responses/./x",
    "/v1/responses/a..b%2Fc",
]


@pytest.fixture
def scripted():
    from inference_support.scripted_upstream import ScriptedUpstream

    u = ScriptedUpstream()
    u.answer("/v1/models", 200, {"object": "list", "data": [{"id": PRESET, "max_model_len": 4096}]})
    u.answer(
        "/v1/chat/completions",
        200,
        {"id": "c", "object": "chat.completion", "created": 1, "model": PRESET, "choices": [], "usage": None},
    )
    u.answer("/v1/responses/resp_123", 200, {"id": "resp_123"})
    yield u
    u.close()


def raw_request(port: int, head: bytes, body_parts=(b"",), pause: float = 0.0) -> bytes:
    """One HTTP/1.1 request exactly as written (no client normalises the path), the answer's bytes."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(head)
        try:
            for part in body_parts:
                s.sendall(part)
                time.sleep(pause)
        except OSError:
            pass  # the gateway may answer and close before the whole body is sent
        out = b""
        while chunk := s.recv(65536):
            out += chunk
            head_end = out.find(b"\r\n\r\n")
            if head_end >= 0:  # the whole answer is in: do not wait for the server to close
                length = next(
                    (
                        int(line.split(b":", 1)[1])
                        for line in out[:head_end].split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    None,
                )
                if length is not None and len(out) >= head_end + 4 + length:
                    break
        return out


@pytest.fixture
def scripted_gw(scripted):
    proc, port = start_gateway(PRESET, scripted.url, "--max-body-mib", "1")
    yield port
    stop(proc)


@pytest.mark.parametrize("path", TRAVERSALS)
def test_paths_that_leave_their_route_never_reach_the_runtime(scripted_gw, scripted, path):
    answer = raw_request(scripted_gw, b"GET %s HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n" % path.encode())
    reached = [p for p in scripted.paths() if p not in ("/v1/models",)]
    assert reached == [], f"the runtime got {reached}"
    status = int(answer.split(b" ", 2)[1])
    assert status in (400, 404), answer[:300]
    assert b'"invalid_request_error"' in answer, answer[:300]


def test_a_stored_response_is_still_fetched_by_its_id(scripted_gw, scripted):
    r = requests.get(f"http://127.0.0.1:{scripted_gw}/v1/responses/resp_123", timeout=10)
    assert r.status_code == 200 and r.json() == {"id": "resp_123"}
    assert scripted.paths()[-1] == "/v1/responses/resp_123"


# --- bodies and the work one request may ask for ---------------------------------


def test_a_body_declared_over_the_limit_is_refused_before_it_is_read(scripted_gw, scripted):
    size = 60 << 20
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n" % size
    )
    started = time.monotonic()
    answer = raw_request(scripted_gw, head, [b"{" + b" " * 1000])  # 1 kB of the 60 MiB declared
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert b"limit of 1048576 bytes" in answer
    assert time.monotonic() - started < 10
    assert "/v1/chat/completions" not in scripted.paths()


def test_a_chunked_body_is_cut_off_at_the_limit(scripted_gw, scripted):
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    piece = b" " * (256 << 10)
    parts = [b"%x\r\n%s\r\n" % (len(piece), piece)] * 64  # 16 MiB offered in 256 KiB chunks
    answer = raw_request(scripted_gw, head, parts)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert "/v1/chat/completions" not in scripted.paths()


def test_a_body_under_the_limit_is_served(scripted_gw, scripted):
    body = {"model": PRESET, "messages": [{"role": "user", "content": "x" * (900 << 10)}]}
    r = requests.post(f"http://127.0.0.1:{scripted_gw}/v1/chat/completions", json=body, timeout=30)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    "body, field",
    [
        ({"n": 17}, "n"),
        ({"n": 0}, "n"),
        ({"n": 10**9}, "n"),
        ({"best_of": 100}, "best_of"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"top_logprobs": -1}, "top_logprobs"),
        ({"max_tokens": 4097}, "max_tokens"),
        ({"max_completion_tokens": 10**6}, "max_completion_tokens"),
    ],
)
def test_work_caps_are_a_400_naming_the_field(scripted_gw, scripted, body, field):
    r = requests.post(
        f"http://127.0.0.1:{scripted_gw}/v1/chat/completions",
        json={"model": PRESET, "messages": MESSAGES, **body},
        timeout=10,
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"].startswith(f"`{field}`"), r.text
    assert "/v1/chat/completions" not in scripted.paths()


@pytest.mark.parametrize(
    "path, body, field",
    [
        ("/v1/completions", {"prompt": "x", "logprobs": 21}, "logprobs"),
        ("/v1/completions", {"prompt": "x", "max_tokens": 5000}, "max_tokens"),
        ("/chat", {"prompt": "x", "n": 50}, "n"),
        ("/chat", {"prompt": "x", "max_new_tokens": 5000}, "max_new_tokens"),
    ],
)
def test_work_caps_on_completions_and_kaito_chat(scripted_gw, scripted, path, body, field):
    r = requests.post(f"http://127.0.0.1:{scripted_gw}{path}", json={"model": PRESET, **body}, timeout=10)
    assert r.status_code == 400, r.text
    assert f"`{field}`" in r.text
    assert path not in scripted.paths() and "/v1/completions" not in scripted.paths()


def test_the_context_length_bounds_max_tokens_and_says_so(scripted_gw, scripted):
    r = requests.post(
        f"http://127.0.0.1:{scripted_gw}/v1/chat/completions",
        json={"model": PRESET, "messages": MESSAGES, "max_tokens": 4097},
        timeout=10,
    )
    assert "context length (4096 tokens)" in r.json()["error"]["message"]
    r = requests.post(
        f"http://127.0.0.1:{scripted_gw}/v1/chat/completions",
        json={"model": PRESET, "messages": MESSAGES, "max_tokens": 4096, "n": 16, "logprobs": True, "top_logprobs": 20},
        timeout=10,
    )
    assert r.status_code == 200, r.text
