"""The client port over real HTTP: the gateway runs as its own process (`python -m inference.gateway`)
in front of a stub of SGLang's OpenAI API. The stub replaces the GPU engine, the one boundary that
cannot exist on this machine; everything between the client and the engine is real.

What clients get back is checked against the real servers (tests/real_sglang/test_serving_contract.py);
this module keeps what only a stub shows: the exact body the gateway forwards, that refused requests never
reach the runtime, streaming pace, a runtime that is down, and worker pods."""

import json
import sys
import threading
import time

import pytest
import requests
from inference_support.procs import start_gateway, stop
from inference_support.stub_sglang import StubSGLang
from loopback_support import free_port

pytestmark = pytest.mark.integration  # starts the gateway and a stub SGLang as processes

PRESET = "phi-3-mini-4k-instruct"


@pytest.fixture(scope="module")
def stub():
    s = StubSGLang(PRESET).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def gw(stub):
    proc, port = start_gateway(PRESET, stub.url, "--adapter", "fin", "--adapter", "legal")
    yield f"http://127.0.0.1:{port}"
    stop(proc)


def last(stub):
    return stub.requests[-1]


def test_chat_prompt_maps_to_completions_with_kaito_defaults(gw, stub):
    r = requests.post(f"{gw}/chat", json={"prompt": "Hello", "generate_kwargs": {"max_length": 50, "do_sample": False}})
    assert r.status_code == 200, r.text
    path, body = last(stub)
    assert path == "/v1/completions"
    assert body["prompt"] == "Hello"
    assert body["max_tokens"] == 50
    assert body["temperature"] == 0.0 and "top_k" not in body
    # default adapter on /chat is the Workspace's first adapter; return_full_text defaults to true
    assert body["model"] == f"{PRESET}:fin"
    assert r.json() == {"Result": "Hello[fin] reply to: Hello"}


def test_chat_prompt_without_full_text_and_base_model(gw, stub):
    r = requests.post(
        f"{gw}/chat", json={"prompt": "Hi", "return_full_text": False, "model": PRESET, "temperature": 0.3, "top_k": 5}
    )
    assert r.json() == {"Result": "[base] reply to: Hi"}
    body = last(stub)[1]
    assert body["model"] == PRESET and body["temperature"] == 0.3 and body["top_k"] == 5
    assert body["max_tokens"] == 200  # Kaito's default max_length


def test_chat_messages_maps_to_chat_completions_with_adapter(gw, stub):
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "What is AKS?"}]
    r = requests.post(f"{gw}/chat", json={"messages": msgs, "adapter": "legal", "max_new_tokens": 7})
    assert r.status_code == 200, r.text
    assert r.json() == {"Result": "[legal] reply to: What is AKS?"}
    path, body = last(stub)
    assert path == "/v1/chat/completions" and body["messages"] == msgs and body["max_tokens"] == 7
    assert body["model"] == f"{PRESET}:legal"


def test_chat_requires_prompt_or_messages(gw, stub):
    n = len(stub.requests)
    r = requests.post(f"{gw}/chat", json={"generate_kwargs": {}})
    assert r.status_code == 400
    assert "prompt" in r.json()["detail"] and "messages" in r.json()["detail"]
    r = requests.post(f"{gw}/chat", data=b"{not json")
    assert r.status_code == 400 and "JSON" in r.json()["detail"]
    assert len(stub.requests) == n


def test_openai_chat_routes_adapter_and_passes_fields(gw, stub):
    req = {
        "model": f"{PRESET}:legal",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 9,
        "logprobs": False,
    }
    r = requests.post(f"{gw}/v1/chat/completions", json=req)
    assert r.status_code == 200
    assert r.json()["choices"][0]["message"]["content"] == "[legal] reply to: hi"
    assert last(stub) == ("/v1/chat/completions", req)


def test_openai_bare_adapter_name_is_rewritten(gw, stub):
    r = requests.post(f"{gw}/v1/completions", json={"model": "fin", "prompt": "p"})
    assert r.status_code == 200
    assert r.json()["choices"][0]["text"] == "[fin] reply to: p"
    assert last(stub)[1]["model"] == f"{PRESET}:fin"


@pytest.mark.parametrize(
    "path,payload",
    [
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]}),
        ("/v1/completions", {"prompt": "x"}),
    ],
)
def test_openai_unknown_adapter_or_model_refused(gw, stub, path, payload):
    n = len(stub.requests)
    r = requests.post(gw + path, json={**payload, "model": f"{PRESET}:ghost"})
    assert r.status_code == 400
    assert "unknown adapter 'ghost'" in r.json()["error"]["message"]
    r = requests.post(gw + path, json={**payload, "model": "llama-2-7b"})
    assert r.status_code == 400 and "unknown model" in r.json()["error"]["message"]
    r = requests.post(gw + path, json={**payload, "model": PRESET, "lora_path": "ghost"})
    assert r.status_code == 400
    assert len(stub.requests) == n


@pytest.mark.parametrize(
    "path,payload,field",
    [
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "one two three"}]}, "delta"),
        ("/v1/completions", {"prompt": "one two three"}, "text"),
    ],
)
def test_streaming_is_relayed_without_buffering(gw, stub, path, payload, field):
    """The stub sends its first SSE chunk, then holds the rest until the client has seen that chunk:
    a buffering gateway would never deliver it and the stub's wait would time out."""
    stub.release = threading.Event()
    try:
        with requests.post(
            gw + path, json={**payload, "model": f"{PRESET}:fin", "stream": True}, stream=True, timeout=30
        ) as r:
            assert r.status_code == 200
            assert r.headers["Content-Type"].startswith("text/event-stream")
            lines = r.iter_lines()
            first = next(line for line in lines if line)
            t_first = time.monotonic()
            stub.release.set()
            rest = [line for line in lines if line]
        assert not stub.release_timed_out
        assert time.monotonic() - t_first < 5
        events = [first] + rest
        assert events[-1] == b"data: [DONE]"
        chunks = [json.loads(e[len(b"data: ") :]) for e in events[:-1]]
        if field == "delta":
            text = "".join(c["choices"][0]["delta"]["content"] for c in chunks)
        else:
            text = "".join(c["choices"][0]["text"] for c in chunks)
        assert text == "[fin] reply to: one two three"
        assert len(chunks) > 3
    finally:
        stub.release = None


def test_health_endpoints_and_metrics(gw, stub):
    assert requests.get(f"{gw}/healthz").status_code == 200
    r = requests.get(f"{gw}/health")
    assert r.status_code == 200 and r.json() == {"status": "Healthy"}
    assert "sglang:num_running_reqs" in requests.get(f"{gw}/metrics").text


def test_health_is_503_while_runtime_is_down_and_healthz_follows_runtime_pid():
    """No upstream listening: /health must not pass; /healthz tracks the runtime process."""
    import subprocess

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    proc, port = start_gateway(
        PRESET,
        f"http://127.0.0.1:{free_port()}",
        "--runtime-pid",
        str(dead.pid),
        health_path="/",
    )
    try:
        assert requests.get(f"http://127.0.0.1:{port}/health").status_code == 503
        assert requests.get(f"http://127.0.0.1:{port}/healthz").status_code == 503
        r = requests.post(f"http://127.0.0.1:{port}/chat", json={"prompt": "x"})
        assert r.status_code == 503 and "unavailable" in r.json()["detail"]
    finally:
        stop(proc)


def test_worker_pod_serves_health_only(stub):
    proc, port = start_gateway(PRESET, stub.url, "--worker")
    try:
        assert requests.get(f"http://127.0.0.1:{port}/health").status_code == 200
        r = requests.post(f"http://127.0.0.1:{port}/chat", json={"prompt": "x"})
        assert r.status_code == 503 and "worker" in r.json()["detail"]
    finally:
        stop(proc)


def test_concurrent_requests_keep_their_adapters(gw, stub):
    from concurrent.futures import ThreadPoolExecutor

    def one(i):
        model = [PRESET, f"{PRESET}:fin", f"{PRESET}:legal"][i % 3]
        r = requests.post(
            f"{gw}/v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": f"q{i}"}]},
            timeout=30,
        )
        return model, r.json()["choices"][0]["message"]["content"]

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(90)))
    for i, (model, text) in enumerate(results):
        tag = model.split(":")[1] if ":" in model else "base"
        assert text == f"[{tag}] reply to: q{i}"
