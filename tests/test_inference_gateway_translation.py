"""The gateway's pure rules: model routing, request limits, Kaito /chat translation, answer shaping."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inference.gateway.kaito_chat import chat_result, generation_params, plan_chat, upstream_error_detail
from inference.gateway.translation import (
    Served,
    max_model_len_of,
    model_entry,
    models_listing,
    resolve_model,
    route_openai,
)
from inference.gateway.validation import RequestError

S = Served("phi-3", ("fin", "legal"))


def test_resolve_model():
    assert resolve_model(None, S) == "phi-3"
    assert resolve_model("phi-3", S) == "phi-3"
    assert resolve_model("phi-3:fin", S) == "phi-3:fin"
    assert resolve_model("legal", S) == "phi-3:legal"
    with pytest.raises(RequestError, match=r"unknown adapter 'x'.*fin, legal"):
        resolve_model("phi-3:x", S)
    with pytest.raises(RequestError, match="unknown model"):
        resolve_model("gpt-4", S)
    with pytest.raises(RequestError, match="unknown model"):
        resolve_model("other:fin", S)
    with pytest.raises(RequestError, match="unknown adapter"):
        resolve_model("phi-3:", S)


@given(st.text(max_size=20))
def test_resolved_model_is_always_served(model):
    try:
        out = resolve_model(model, S)
    except RequestError:
        return
    assert out in ("phi-3", "phi-3:fin", "phi-3:legal")


def test_route_openai_forwards_unchanged_body_as_is():
    hi = [{"role": "user", "content": "hi"}]
    body = {"model": "phi-3:fin", "messages": hi}
    assert route_openai(body, S) == (body, False)
    assert route_openai({"messages": hi}, S) == ({"messages": hi, "model": "phi-3"}, True)
    with pytest.raises(RequestError):
        route_openai({"model": "phi-3", "lora_path": ["fin", "nope"]}, S)
    with pytest.raises(RequestError):
        route_openai([1, 2], S)


def test_generation_params_kaito_defaults_and_overrides():
    assert generation_params({}) == {"temperature": 1.0, "top_p": 1.0, "top_k": 10, "max_tokens": 200}
    p = generation_params(
        {
            "temperature": 0.2,
            "generate_kwargs": {
                "temperature": 0.7,
                "max_new_tokens": 5,
                "max_length": 99,
                "num_beams": 4,
                "typical_p": 0.5,
                "min_length": 2,
                "stop": ["\n"],
            },
        }
    )
    assert p == {"temperature": 0.7, "top_p": 1.0, "top_k": 10, "max_tokens": 5, "min_tokens": 2, "stop": ["\n"]}
    greedy = generation_params({"generate_kwargs": {"do_sample": False}})
    assert greedy["temperature"] == 0.0 and "top_k" not in greedy
    with pytest.raises(RequestError, match="integer"):
        generation_params({"max_new_tokens": "many"})
    with pytest.raises(RequestError, match="generate_kwargs"):
        generation_params({"generate_kwargs": [1]})


def test_plan_chat_modes_and_result():
    plan = plan_chat({"prompt": "Hi", "return_full_text": False}, S)
    assert plan.path == "/v1/completions" and plan.payload["model"] == "phi-3:fin"
    assert chat_result(plan, {"choices": [{"text": " there"}]}) == {"Result": " there"}
    plan = plan_chat({"prompt": "Hi"}, Served("base-only"))
    assert plan.payload["model"] == "base-only"
    assert chat_result(plan, {"choices": [{"text": " there"}]}) == {"Result": "Hi there"}
    plan = plan_chat({"messages": [{"role": "user", "content": "q"}], "adapter": "legal"}, S)
    assert plan.path == "/v1/chat/completions" and plan.payload["model"] == "phi-3:legal"
    assert chat_result(plan, {"choices": [{"message": {"content": "a"}}]}) == {"Result": "a"}
    assert plan_chat({"prompt": "x", "adapter": ""}, S).payload["model"] == "phi-3"
    with pytest.raises(RequestError, match=r"`prompt`.*`messages`"):
        plan_chat({}, S)
    with pytest.raises(RequestError, match="messages"):
        plan_chat({"messages": "hello"}, S)
    with pytest.raises(ValueError, match="unexpected upstream"):
        chat_result(plan, {"choices": []})


def test_upstream_error_detail():
    assert upstream_error_detail(400, b'{"object":"error","message":"too long"}') == "too long"
    assert upstream_error_detail(500, b'{"error":{"message":"boom"}}') == "boom"
    assert "HTTP 502" in upstream_error_detail(502, b"<html>")


def test_message_content_null_is_refused_by_field():
    for body in ({"messages": [{"role": "user", "content": None}]}, {"messages": [{"role": "user"}]}):
        with pytest.raises(RequestError, match=r"`messages\[0\]\.content` is null or missing"):
            route_openai(body, S)
        with pytest.raises(RequestError, match=r"`messages\[0\]\.content`"):
            plan_chat(body, S)
    # an assistant turn that called tools has no content, as OpenAI defines it
    ok = {
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "1", "type": "function"}]},
        ]
    }
    assert route_openai(ok, S)[0]["model"] == "phi-3"


def test_chat_default_is_the_combined_adapter():
    served = Served("phi-3", ("fin", "legal", "combined"), chat_default="combined")
    assert plan_chat({"prompt": "x"}, served).payload["model"] == "phi-3:combined"
    assert plan_chat({"prompt": "x", "model": "phi-3"}, served).payload["model"] == "phi-3"
    assert plan_chat({"prompt": "x", "adapter": "legal"}, served).payload["model"] == "phi-3:legal"


def test_models_listing_and_entry_carry_max_model_len():
    listing = models_listing(S, 7, 4096)
    assert [m["id"] for m in listing["data"]] == ["phi-3", "phi-3:fin", "phi-3:legal"]
    assert all(m["max_model_len"] == 4096 for m in listing["data"])
    assert "max_model_len" not in models_listing(S, 7)["data"][0]  # the runtime has not said yet
    assert model_entry(S, 7, "fin", 4096)["id"] == "phi-3:fin"
    assert model_entry(S, 7, "phi-3", None)["parent"] is None
    assert model_entry(S, 7, "gpt-4", None) is None
    assert model_entry(S, 7, "phi-3:nope", None) is None


def test_max_model_len_from_the_runtime_listing():
    sglang = {"object": "list", "data": [{"id": "phi-3", "max_model_len": 4096}, {"id": "fin", "parent": "phi-3"}]}
    assert max_model_len_of(sglang) == 4096
    assert max_model_len_of({"data": [{"id": "x"}]}) is None
    assert max_model_len_of("garbage") is None


def test_work_caps_name_the_field():
    from inference.gateway.validation import check_limits

    for body, field in [
        ({"n": 17}, "n"),
        ({"n": True}, "n"),
        ({"best_of": 0}, "best_of"),
        ({"top_logprobs": 21}, "top_logprobs"),
        ({"logprobs": 21}, "logprobs"),
        ({"max_tokens": 513}, "max_tokens"),
        ({"min_tokens": 600}, "min_tokens"),
        ({"max_output_tokens": 10**9}, "max_output_tokens"),
    ]:
        with pytest.raises(RequestError, match=f"^`{field}`"):
            check_limits(body, 512)
    check_limits({"n": 16, "best_of": 16, "top_logprobs": 20, "logprobs": True, "max_tokens": 512}, 512)
    check_limits({"max_tokens": 10**6}, None)  # the context length not known yet: only the absolute bound


def test_kaito_chat_budget_is_held_to_the_context_only_when_given():
    plan = plan_chat({"prompt": "x"}, S, max_model_len=128)  # Kaito's default max_length 200 is not a request
    assert plan.payload["max_tokens"] == 200
    with pytest.raises(RequestError, match=r"^`max_new_tokens` must be at most the model's context length"):
        plan_chat({"prompt": "x", "generate_kwargs": {"max_new_tokens": 129}}, S, max_model_len=128)
    with pytest.raises(RequestError, match=r"^`n`"):
        plan_chat({"prompt": "x", "n": 17}, S)


def test_seed_rules():
    from inference.gateway.validation import check_seed, honours_seed

    assert honours_seed({"enable_deterministic_inference": True, "tp_size": 1})
    assert not honours_seed({"enable_deterministic_inference": False})
    assert honours_seed({"detail": "Not Found"})  # not SGLang: the transformers runtime honours it
    with pytest.raises(RequestError, match=r"^`seed`"):
        check_seed({"seed": 1}, runtime_honours_seed=False)  # temperature defaults to 1
    check_seed({"seed": 1, "temperature": 0}, runtime_honours_seed=False)
    check_seed({"seed": 1, "temperature": 0.7}, runtime_honours_seed=True)
    check_seed({"temperature": 0.7}, runtime_honours_seed=False)


def test_answers_are_shaped_to_the_sdk_types():
    from inference.gateway.answers import shape_answer

    answer = {
        "metadata": {"weight_versions": ["default"]},
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "\ufffdroadapte"}, "finish_reason": "length"},
            {"index": 1, "text": "a b c", "finish_reason": "length"},
        ],
    }
    assert shape_answer(answer, ["rs", "ad", "b"])
    assert "metadata" not in answer
    assert answer["choices"][0]["message"]["content"] == "\ufffdro" and answer["choices"][0]["finish_reason"] == "stop"
    assert answer["choices"][1]["text"] == "a " and answer["choices"][1]["finish_reason"] == "stop"
    kept = {"metadata": {"k": "v"}, "choices": [{"index": 0, "text": "abc", "finish_reason": "length"}]}
    assert not shape_answer(kept, ["x"]) and kept["metadata"] == {"k": "v"}


def test_streamed_chunks_end_at_the_earliest_stop_across_chunks():
    from inference.gateway.answers import shape_chunk

    cutters: dict = {}
    pieces = ["he", "llo wo", "rld a", "nd more", ""]
    out = []
    for i, piece in enumerate(pieces):
        chunk = {
            "choices": [
                {"index": 0, "delta": {"content": piece}, "finish_reason": "length" if i == len(pieces) - 1 else None}
            ]
        }
        shape_chunk(chunk, ["more", "ld"], cutters)
        out.append(chunk["choices"][0]["delta"]["content"])
    assert "".join(out) == "hello wor" and chunk["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize(
    "path, plain",
    [
        ("/v1/responses/resp_1", True),
        ("/v1/chat/completions?x=1", True),
        ("/v1/responses/..%2F..%2Fflush_cache", False),
        ("/v1/responses/%2e%2e/x", False),
        ("/v1/responses/..%5Cx", False),
        ("/v1/responses/%252E", False),
        ("/a/../flush_cache", False),
        ("/a/./b", False),
        ("/a\\b", False),
    ],
)
def test_only_plain_paths_pass(path, plain):
    from inference.gateway.validation import path_is_plain, safe_path_segment

    assert path_is_plain(path) is plain
    assert safe_path_segment("resp_0123-abc") and not safe_path_segment("..") and not safe_path_segment("a/b")
