"""What the gateway makes of the runtime's answers and of fields the runtime would get wrong: the
gateway runs as its own process (`python -m inference.gateway`) in front of a scripted stand-in that
answers with SGLang 0.5.23's exact shapes (the GPU engine cannot run here). The same cases run against
the real runtimes in tests/real_sglang/test_serving_contract.py."""

import json

import pytest
import requests
from inference_support.procs import start_gateway, stop
from inference_support.scripted_upstream import ScriptedUpstream

from inference.hf_protocol import SUFFIX_UNSUPPORTED

pytestmark = pytest.mark.integration  # starts the gateway as a process

openai_types = pytest.importorskip("openai.types")
PRESET = "tiny"
MESSAGES = [{"role": "user", "content": "hi"}]


def chat_answer(text: str, **extra) -> dict:
    return {
        "id": "c1",
        "object": "chat.completion",
        "created": 1,
        "model": PRESET,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": "stop",
                "matched_stop": "rs",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
        **extra,
    }


def completion_answer(text: str) -> dict:
    return {
        "id": "c2",
        "object": "text_completion",
        "created": 1,
        "model": PRESET,
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
    }


@pytest.fixture
def upstream():
    u = ScriptedUpstream()
    u.answer("/v1/models", 200, {"object": "list", "data": [{"id": PRESET, "max_model_len": 512}]})
    yield u
    u.close()


@pytest.fixture
def gw(upstream):
    proc, port = start_gateway(PRESET, upstream.url)
    yield f"http://127.0.0.1:{port}"
    stop(proc)


def post(gw, path, body):
    return requests.post(f"{gw}{path}", data=json.dumps(body), headers={"Content-Type": "application/json"}, timeout=30)


def test_sglang_metadata_is_dropped_so_the_sdk_types_validate(gw, upstream):
    """SGLang adds "metadata": {"weight_versions": [...]}; the SDK's ChatCompletion.metadata is a map of
    strings, so strict validation failed on every chat answer."""
    upstream.answer("/v1/chat/completions", 200, chat_answer("hello", metadata={"weight_versions": ["default"]}))
    with pytest.raises(Exception, match="metadata"):
        openai_types.chat.ChatCompletion.model_validate(chat_answer("x", metadata={"weight_versions": ["default"]}))
    r = post(gw, "/v1/chat/completions", {"model": PRESET, "messages": MESSAGES})
    assert r.status_code == 200, r.text
    answer = openai_types.chat.ChatCompletion.model_validate(r.json())
    assert answer.choices[0].message.content == "hello" and "metadata" not in r.json()


def test_a_string_metadata_map_is_kept(gw, upstream):
    upstream.answer("/v1/chat/completions", 200, chat_answer("hello", metadata={"k": "v"}))
    assert post(gw, "/v1/chat/completions", {"model": PRESET, "messages": MESSAGES}).json()["metadata"] == {"k": "v"}


@pytest.mark.parametrize("stop", [["rs", "ad"], ["ad", "rs"]])
def test_the_answer_ends_at_the_earliest_stop_string_in_the_text(gw, upstream, stop):
    """SGLang's answer for stop ["rs", "ad"] when one token held both: cut at "rs" (first in the list)."""
    upstream.answer("/v1/chat/completions", 200, chat_answer("\ufffdroadapte"))
    upstream.answer("/v1/completions", 200, completion_answer("\ufffdroadapte"))
    r = post(gw, "/v1/chat/completions", {"model": PRESET, "messages": MESSAGES, "stop": stop})
    assert r.json()["choices"][0]["message"]["content"] == "\ufffdro"
    assert r.json()["choices"][0]["finish_reason"] == "stop"
    r = post(gw, "/v1/completions", {"model": PRESET, "prompt": "x", "stop": stop})
    assert r.json()["choices"][0]["text"] == "\ufffdro"
    r = post(gw, "/chat", {"prompt": "x", "stop": stop, "return_full_text": False})
    assert r.json() == {"Result": "\ufffdro"}


def test_a_streamed_answer_ends_at_the_earliest_stop_string_across_chunks(gw, upstream):
    def chunk(text, finish=None):
        return {
            "id": "s",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": PRESET,
            "choices": [{"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": finish}],
        }

    events = [chunk("he"), chunk("llo wo"), chunk("rld a"), chunk("nd more"), chunk("", "stop")]
    upstream.stream("/v1/chat/completions", events, split_at=7)  # events split mid-JSON
    r = requests.post(
        f"{gw}/v1/chat/completions",
        json={"model": PRESET, "messages": MESSAGES, "stream": True, "stop": ["more", "ld"]},
        stream=True,
        timeout=30,
    )
    chunks = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith(b"data: {")]
    for c in chunks:
        openai_types.chat.ChatCompletionChunk.model_validate(c)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "hello wor"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_suffix_is_refused_naming_it_with_the_transformers_runtimes_words(gw, upstream):
    r = post(gw, "/v1/completions", {"model": PRESET, "prompt": "def f(", "suffix": "return x"})
    assert r.status_code == 400
    assert r.json()["error"]["message"] == SUFFIX_UNSUPPORTED
    assert "/v1/completions" not in upstream.paths()
    upstream.answer("/v1/completions", 200, completion_answer("ok"))
    assert post(gw, "/v1/completions", {"model": PRESET, "prompt": "x", "suffix": ""}).status_code == 200


def test_seed_is_refused_where_sglang_would_ignore_it(gw, upstream):
    upstream.answer("/server_info", 200, {"enable_deterministic_inference": False, "tp_size": 1})
    upstream.answer("/v1/chat/completions", 200, chat_answer("ok"))
    for path, body in (
        ("/v1/chat/completions", {"model": PRESET, "messages": MESSAGES, "seed": 7}),
        ("/chat", {"prompt": "x", "seed": 7}),
    ):
        r = post(gw, path, body)
        assert r.status_code == 400 and "`seed`" in r.text and "enable-deterministic-inference" in r.text, r.text
    assert "/v1/chat/completions" not in upstream.paths()
    # With temperature 0 the seed decides nothing: forwarded.
    r = post(gw, "/v1/chat/completions", {"model": PRESET, "messages": MESSAGES, "seed": 7, "temperature": 0})
    assert r.status_code == 200


@pytest.mark.parametrize(
    "server_info",
    [(200, {"enable_deterministic_inference": True}), (404, {"detail": "x"})],
    ids=["deterministic-sglang", "transformers-runtime"],
)
def test_seed_is_forwarded_where_the_runtime_honours_it(gw, upstream, server_info):
    upstream.answer("/server_info", *server_info)
    upstream.answer("/v1/chat/completions", 200, chat_answer("ok"))
    r = post(gw, "/v1/chat/completions", {"model": PRESET, "messages": MESSAGES, "seed": 7, "temperature": 1})
    assert r.status_code == 200, r.text
    assert json.loads(upstream.requests[-1][2])["seed"] == 7


@pytest.mark.parametrize(
    "method, path, status",
    [
        ("POST", "/v1/embeddings", 404),
        ("GET", "/v1/audio/speech", 404),
        ("GET", "/v1/chat/completions", 405),
        ("POST", "/v1/models", 405),
        ("GET", "/flush_cache", 404),
    ],
)
def test_unknown_routes_get_openai_shaped_json_errors(gw, upstream, method, path, status):
    r = requests.request(method, f"{gw}{path}", json={"model": PRESET, "input": "hi"}, timeout=10)
    assert r.status_code == status
    assert r.headers["Content-Type"].startswith("application/json")
    error = r.json()["error"]
    assert path in error["message"] and error["type"] == "invalid_request_error"
    assert path not in upstream.paths()
