"""Pure translation rules of the gateway (inference/gateway_translation.py)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inference.gateway_translation import (
    RequestError,
    Served,
    chat_result,
    generation_params,
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
    body = {"model": "phi-3:fin", "messages": []}
    assert route_openai(body, S) == (body, False)
    assert route_openai({"messages": []}, S) == ({"messages": [], "model": "phi-3"}, True)
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
