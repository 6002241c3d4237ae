"""Pure translation rules of the gateway (inference/gateway_translation.py)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inference.gateway_translation import (
    RequestError,
    Served,
    chat_result,
    generation_params,
    max_model_len_of,
    model_entry,
    models_listing,
    plan_chat,
    resolve_model,
    route_openai,
    upstream_error_detail,
)

S = Served("phi-3", ("fin", "legal"))


def test_resolve_model():
    assert resolve_model(None, S) == "phi-3"
    assert resolve_model("phi-3", S) == "phi-3"
    assert resolve_model("phi-3:fin", S) == "phi-3:fin"
    assert resolve_model("legal", S) == "phi-3:legal"
    with pytest.raises(RequestError, match="unknown adapter 'x'.*fin, legal"):
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
    p = generation_params({"temperature": 0.2, "generate_kwargs": {"temperature": 0.7, "max_new_tokens": 5,
                                                                   "max_length": 99, "num_beams": 4, "typical_p": 0.5,
                                                                   "min_length": 2, "stop": ["\n"]}})
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
    with pytest.raises(RequestError, match="`prompt`.*`messages`"):
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
    ok = {"messages": [{"role": "user", "content": "hi"},
                       {"role": "assistant", "content": None, "tool_calls": [{"id": "1", "type": "function"}]}]}
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
