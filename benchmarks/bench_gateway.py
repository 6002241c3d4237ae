"""What the gateway adds per request: the same requests sent directly to a stub of SGLang's OpenAI API
and through `python -m inference.gateway`, interleaved in one run, over keep-alive connections.

    .venv/bin/python benchmarks/bench_gateway.py [--requests 2000]

Prints median / p99 latency for each path and the ratio gateway/direct (and the added microseconds).
The stub answers instantly, so the ratio is an upper bound of the gateway's share of a real request
(a real generation takes milliseconds to seconds).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PRESET = "bench-model"

CHAT = {
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok " * 20}, "finish_reason": "stop"}],
    "object": "chat.completion",
    "id": "x",
    "created": 1,
    "model": PRESET,
    "usage": {"prompt_tokens": 5, "completion_tokens": 20, "total_tokens": 25},
}
COMPLETION = {
    "choices": [{"index": 0, "text": "ok " * 20, "finish_reason": "stop"}],
    "object": "text_completion",
    "id": "y",
    "created": 1,
    "model": PRESET,
}


def serve_stub(port: int) -> None:
    from aiohttp import web

    chat_body, completion_body = json.dumps(CHAT).encode(), json.dumps(COMPLETION).encode()

    async def chat(request):
        await request.read()
        return web.Response(body=chat_body, content_type="application/json")

    async def completion(request):
        await request.read()
        return web.Response(body=completion_body, content_type="application/json")

    async def health(request):
        return web.Response(text="")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/completions", completion)
    app.router.add_get("/health", health)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(port: int, path: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", path)
            if c.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} did not come up")


def timed_post(conn: http.client.HTTPConnection, path: str, body: bytes) -> float:
    t = time.perf_counter()
    conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    r.read()
    if r.status != 200:
        raise RuntimeError(f"{path}: HTTP {r.status}")
    return time.perf_counter() - t


def summary(xs: list[float]) -> tuple[float, float]:
    xs = sorted(xs)
    return statistics.median(xs), xs[int(len(xs) * 0.99) - 1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--serve-stub", type=int, help=argparse.SUPPRESS)
    ns = ap.parse_args()
    if ns.serve_stub:
        serve_stub(ns.serve_stub)
        return
    sport, gport = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen([sys.executable, __file__, "--serve-stub", str(sport)], env=env),
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "inference.gateway",
                "--served-model-name",
                PRESET,
                "--adapter",
                "a1",
                "--upstream",
                f"http://127.0.0.1:{sport}",
                "--host",
                "127.0.0.1",
                "--port",
                str(gport),
            ],
            cwd=REPO,
            env=env,
        ),
    ]
    try:
        wait(sport, "/health")
        wait(gport, "/health")
        direct = http.client.HTTPConnection("127.0.0.1", sport)
        gateway = http.client.HTTPConnection("127.0.0.1", gport)
        chat = json.dumps(
            {"model": f"{PRESET}:a1", "messages": [{"role": "user", "content": "hello " * 50}], "max_tokens": 20}
        ).encode()
        kaito = json.dumps({"prompt": "hello " * 50, "generate_kwargs": {"max_length": 20}}).encode()
        cases = [
            ("/v1/chat/completions", direct, "/v1/chat/completions", chat, gateway, "/v1/chat/completions", chat),
            (
                "/chat (Kaito) vs direct /v1/completions",
                direct,
                "/v1/completions",
                kaito.replace(b'"generate_kwargs": {"max_length": 20}', b'"max_tokens": 20'),
                gateway,
                "/chat",
                kaito,
            ),
        ]
        print(f"{ns.requests} requests per path, interleaved, keep-alive, stub upstream on loopback")
        for name, dconn, dpath, dbody, gconn, gpath, gbody in cases:
            for _ in range(200):  # warm-up
                timed_post(dconn, dpath, dbody)
                timed_post(gconn, gpath, gbody)
            d, g = [], []
            for _ in range(ns.requests):
                d.append(timed_post(dconn, dpath, dbody))
                g.append(timed_post(gconn, gpath, gbody))
            (dm, dp), (gm, gp) = summary(d), summary(g)
            print(f"{name}:")
            print(f"  direct   median {dm * 1e6:8.1f} us   p99 {dp * 1e6:8.1f} us")
            print(f"  gateway  median {gm * 1e6:8.1f} us   p99 {gp * 1e6:8.1f} us")
            print(f"  ratio gateway/direct (median) {gm / dm:.2f}x, added {(gm - dm) * 1e6:.0f} us per request")
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)


if __name__ == "__main__":
    main()
