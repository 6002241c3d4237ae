"""The wake-on-demand front as a real process on loopback: requests held at 0 replicas, the scale subresource
patched to 1, the held requests answered by a real model server (the transformers runtime through the launcher,
a tiny random Llama) in arrival order, streaming included; back to 0 after the idle period; 503 + Retry-After
over the queue's size or wait limit; a client that hangs up leaves the queue; two Workspaces' queues apart.
The API server's scale endpoint is a loopback stand-in here (tests/scale_to_zero_support.py); the cluster test
runs the front against the real kube-apiserver."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import pytest
import requests
from inference_support.procs import stop
from scale_to_zero_support import (
    Replica,
    ScaledWorkspace,
    ScaleEndpoint,
    queue,
    start_front,
    wait_until,
)

from inference.wake_front import HeldRequests, QueueFull, WaitExpired

pytestmark = [pytest.mark.scale_to_zero, pytest.mark.integration]

SERVED = "tiny-llama"
DEAD_UPSTREAM = "http://127.0.0.1:9"  # nothing listens: a backend Service without endpoints


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tuning_support import tiny

    root = tmp_path_factory.mktemp("weights")
    model, _ = tiny.make_model(str(root))
    model.generation_config.eos_token_id = None  # a fixed number of tokens: streams have several chunks
    model.generation_config.save_pretrained(str(root))
    return root


def chat_body(content: str, stream: bool = False) -> dict:
    return {
        "model": SERVED,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 6,
        "temperature": 0,
        "stream": stream,
    }


def post_in_thread(url: str, path: str, body: dict, results: dict, key: str, stream: bool = False):
    def run():
        started = time.monotonic()
        try:
            r = requests.post(f"{url}{path}", json=body, timeout=300, stream=stream)
            chunks = [c for c in r.iter_lines() if c] if stream else None
            results[key] = (r.status_code, chunks if stream else r.content, time.monotonic() - started, r.headers)
        except requests.RequestException as e:
            results[key] = (None, str(e), time.monotonic() - started, {})

    t = threading.Thread(target=run)
    t.start()
    return t


def test_a_request_at_zero_wakes_the_workspace_is_answered_and_idle_scales_back_to_zero(weights, tmp_path):
    ws = ScaledWorkspace("team", "ws1")
    replica = Replica(weights, SERVED, tmp_path / "work")
    ws.on_change = replica.follow
    api = ScaleEndpoint(ws)
    front, url = start_front(ws, api.url, replica.url, SERVED, tmp_path, idle_seconds=6)
    try:
        assert queue(url)["queued"] == 0 and ws.replicas == 0
        results: dict = {}
        threads = [post_in_thread(url, "/v1/chat/completions", chat_body("hello world"), results, "plain")]
        wait_until(lambda: queue(url)["queued"] == 1, 10, "the first request is held")
        threads.append(
            post_in_thread(
                url, "/v1/chat/completions", chat_body("the quick fox", stream=True), results, "stream", stream=True
            )
        )
        threads.append(post_in_thread(url, "/chat", {"prompt": "say hello"}, results, "kaito"))
        wait_until(lambda: queue(url)["queued"] == 3, 10, "three requests are held")
        state = queue(url)
        assert state["waking"] is True and state["backendReady"] is False
        wait_until(lambda: ws.replicas == 1, 15, "the front asked for one replica")
        # It read the scale first (an empty patch: it has no get) and set 1 only against that resourceVersion.
        assert ws.patches[:2] == [{}, {"metadata": {"resourceVersion": "1"}, "spec": {"replicas": 1}}]
        for t in threads:
            t.join(300)
        assert replica.starts == 1
        status, body, _, _ = results["plain"]
        assert status == 200, body
        assert json.loads(body)["choices"][0]["message"]["content"]
        status, chunks, _, _ = results["stream"]
        assert status == 200 and chunks[-1] == b"data: [DONE]" and len(chunks) >= 3, chunks
        status, body, _, _ = results["kaito"]
        assert status == 200 and "Result" in json.loads(body), body
        assert queue(url)["queued"] == 0 and queue(url)["backendReady"] is True
        # A request while serving goes straight through.
        assert requests.post(f"{url}/v1/chat/completions", json=chat_body("again"), timeout=60).status_code == 200
        # Idle: no request for 6 s, and the front scales the Workspace to 0 (the replica stops).
        wait_until(lambda: ws.replicas == 0, 30, "the idle front scaled to 0")
        assert ws.patches[-1] == {"spec": {"replicas": 0}}
        wait_until(lambda: replica.proc is None, 30, "the replica stopped")
        assert queue(url)["scaledDown"] is True and replica.starts == 1
    finally:
        stop(front)
        replica.close()
        api.close()


def test_a_full_queue_and_the_wait_limit_answer_503_with_retry_after(tmp_path):
    ws = ScaledWorkspace("team", "ws1")  # nothing starts: the model never wakes
    api = ScaleEndpoint(ws)
    front, url = start_front(ws, api.url, DEAD_UPSTREAM, SERVED, tmp_path, queue_size=1, max_wait=3)
    try:
        results: dict = {}
        held = post_in_thread(url, "/v1/chat/completions", chat_body("first"), results, "held")
        wait_until(lambda: queue(url)["queued"] == 1, 10, "one request is held")
        full = requests.post(f"{url}/v1/chat/completions", json=chat_body("second"), timeout=10)
        assert full.status_code == 503 and full.headers["Retry-After"] == "30"
        assert "waking" in full.json()["detail"] and "1 requests are already waiting" in full.json()["detail"]
        held.join(20)
        status, body, waited, headers = results["held"]
        assert status == 503 and headers["Retry-After"] == "30" and 2.5 < waited < 10
        assert "was not ready within 3 s" in json.loads(body)["error"]["message"]
        assert queue(url)["queued"] == 0
        assert ws.replicas == 1  # it did ask
        # GETs are the front's own answers: they neither wait nor wake.
        assert requests.get(f"{url}/v1/models", timeout=10).json()["data"][0]["id"] == SERVED
    finally:
        stop(front)
        api.close()


def test_a_client_that_hangs_up_leaves_the_queue(tmp_path):
    ws = ScaledWorkspace("team", "ws1")
    api = ScaleEndpoint(ws)
    front, url = start_front(ws, api.url, DEAD_UPSTREAM, SERVED, tmp_path, queue_size=2, max_wait=120)
    try:
        port = int(url.rsplit(":", 1)[1])
        body = json.dumps(chat_body("hello")).encode()
        clients = []
        for _ in range(2):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            clients.append(s)
        wait_until(lambda: queue(url)["queued"] == 2, 10, "both requests are held")
        clients[0].close()
        wait_until(lambda: queue(url)["queued"] == 1, 5, "the client that hung up left the queue")
        # Its place is free again: a new request is held, not refused.
        results: dict = {}
        post_in_thread(url, "/v1/chat/completions", chat_body("third"), results, "third")
        wait_until(lambda: queue(url)["queued"] == 2, 10, "the new request is held in the freed place")
        assert "third" not in results
        clients[1].close()
    finally:
        stop(front)
        api.close()


def test_two_workspaces_waking_at_once_keep_their_queues_apart(weights, tmp_path):
    a, b = ScaledWorkspace("team-a", "ws1"), ScaledWorkspace("team-b", "ws1")
    replica_a = Replica(weights, SERVED, tmp_path / "work-a")
    a.on_change = replica_a.follow  # b's model never wakes
    api = ScaleEndpoint(a, b)
    front_a, url_a = start_front(a, api.url, replica_a.url, SERVED, tmp_path / "", max_wait=150)
    (tmp_path / "b").mkdir()
    front_b, url_b = start_front(b, api.url, DEAD_UPSTREAM, SERVED, tmp_path / "b", max_wait=150)
    try:
        results: dict = {}
        ta = [post_in_thread(url_a, "/v1/chat/completions", chat_body(f"a{i}"), results, f"a{i}") for i in range(2)]
        tb = post_in_thread(url_b, "/v1/chat/completions", chat_body("b"), results, "b")
        wait_until(lambda: queue(url_a)["queued"] == 2 and queue(url_b)["queued"] == 1, 10, "both fronts hold")
        wait_until(lambda: a.replicas == 1 and b.replicas == 1, 15, "each front asked for its own Workspace")
        for t in ta:
            t.join(300)
        assert [results[f"a{i}"][0] for i in range(2)] == [200, 200]
        assert queue(url_b)["queued"] == 1 and "b" not in results  # b's request still waits for b's model
        assert all(p in ({}, {"metadata": {"resourceVersion": "1"}, "spec": {"replicas": 1}}) for p in b.patches)
    finally:
        stop(front_a)
        stop(front_b)
        tb.join(15)
        replica_a.close()
        api.close()


# --- the queue itself, in one event loop ------------------------------------------------------------------------


def test_held_requests_resume_in_arrival_order_and_respect_their_limits():
    async def scenario():
        held = HeldRequests(size=3, max_wait=5)
        order: list[int] = []

        async def request(i: int):
            await held.hold()
            order.append(i)

        tasks = []
        for i in range(3):
            tasks.append(asyncio.create_task(request(i)))
            await asyncio.sleep(0)
        await asyncio.sleep(0)
        with pytest.raises(QueueFull):
            await held.hold()
        assert len(held) == 3 and held.release_all() == 3
        await asyncio.gather(*tasks)
        assert order == [0, 1, 2]
        short = HeldRequests(size=1, max_wait=0.05)
        with pytest.raises(WaitExpired):
            await short.hold()
        assert len(short) == 0
        gone = asyncio.create_task(short.hold())
        await asyncio.sleep(0.01)
        assert len(short) == 1
        gone.cancel()  # the client hung up
        with pytest.raises(asyncio.CancelledError):
            await gone
        assert len(short) == 0

    asyncio.run(scenario())


def test_a_request_right_after_the_idle_scale_down_is_held_then_served_by_whatever_replica_answers():
    """After its scale to 0 the front holds new requests while the old replica still answers (it is going);
    once it has asked for a replica again, a backend that answers is used, even one that never went away."""
    from inference.wake_front import Front

    class FakeScaler:  # the scale subresource's answers, in-process
        def __init__(self):
            self.calls = []

        async def ask_for_one(self):
            self.calls.append("ask")
            return "asked"

        async def scale_to_zero(self):
            self.calls.append("zero")

    async def scenario():
        now = [0.0]
        front = Front(HeldRequests(4, 60), idle_seconds=10, clock=lambda: now[0])
        scaler = FakeScaler()

        async def answers():
            return True

        await front.step(answers, scaler)
        assert front.backend_ready and scaler.calls == []
        now[0] = 11
        await front.step(answers, scaler)
        assert scaler.calls == ["zero"] and not front.backend_ready  # draining: the old replica is going
        front.touch()
        held = asyncio.create_task(front.held.hold())
        await asyncio.sleep(0)
        await front.step(answers, scaler)  # asks again; the replica that answers is good to use
        assert scaler.calls == ["zero", "ask"]
        await front.step(answers, scaler)
        await asyncio.wait_for(held, 1)
        assert front.backend_ready and len(front.held) == 0

    asyncio.run(scenario())
