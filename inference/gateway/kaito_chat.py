"""Kaito's POST /chat as one OpenAI call: the generation parameters of Kaito's transformers server
mapped to OpenAI/SGLang sampling fields, the adapter chosen as Kaito applies them, and the answer
turned back into Kaito's {"Result": text}.
"""

from __future__ import annotations

from dataclasses import dataclass

from inference.gateway.translation import Served, adapter_model, resolve_model
from inference.gateway.validation import RequestError, check_limits, check_messages, token_count

# The generate_kwargs defaults of Kaito's transformers server (v0.1-v0.8) for /chat, merged over the model's
# generation_config there.
KAITO_DEFAULTS = {"max_length": 200, "do_sample": True, "temperature": 1.0, "top_k": 10, "top_p": 1.0}
_PASSTHROUGH = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repetition_penalty",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "stop",
    "n",
)


def generation_params(body: dict, context_length: int | None = None) -> dict:
    """OpenAI/SGLang sampling fields from Kaito's generation parameters.

    Parameters may sit at the top level or in `generate_kwargs` (which wins). HF-only knobs
    without an SGLang equivalent (num_beams, typical_p, early_stopping, pad/eos ids) are ignored,
    as Kaito's server ignores unknown keys. max_length counts prompt tokens in HF but is used here as
    the new-token budget (the gateway has no tokenizer); max_new_tokens is exact. A budget the request
    gives is at most `context_length` (Kaito's default max_length is not held to it: the runtime stops
    at its context anyway).
    """
    gk = body.get("generate_kwargs") or {}
    if not isinstance(gk, dict):
        raise RequestError("`generate_kwargs` must be a JSON object")
    p = {
        **KAITO_DEFAULTS,
        **{k: v for k, v in body.items() if k not in ("prompt", "messages", "generate_kwargs")},
        **gk,
    }
    out = {k: p[k] for k in _PASSTHROUGH if p.get(k) is not None}
    budget = next((k for k in ("max_new_tokens", "max_tokens", "max_length") if p.get(k) is not None), None)
    if budget is not None:
        given = budget in body or budget in gk
        out["max_tokens"] = token_count(p[budget], budget, context_length if given else None)
    minimum = next((k for k in ("min_new_tokens", "min_tokens", "min_length") if p.get(k)), None)
    if minimum is not None:
        out["min_tokens"] = token_count(p[minimum], minimum, context_length)
    if p.get("do_sample") is False:
        out["temperature"] = 0.0
        out.pop("top_k", None)
    return out


@dataclass(frozen=True)
class ChatPlan:
    path: str  # upstream path
    payload: dict  # upstream JSON body
    prompt: str | None  # set for prompt mode (text completion)
    return_full_text: bool


def plan_chat(body, served: Served, max_model_len: int | None = None) -> ChatPlan:
    """Kaito POST /chat -> one upstream OpenAI call.

    `prompt` -> /v1/completions (Kaito's text-generation pipeline; return_full_text defaults to
    true there, so the prompt is prefixed to the Result). `messages` -> /v1/chat/completions.
    The adapter: `model` ("<preset>:<adapter>", bare adapter or preset) or `adapter`; by default all
    the Workspace's adapters weighted by their strengths, as Kaito applies them (served.chat_default:
    the launcher's combined adapter), else the base model.
    """
    if not isinstance(body, dict):
        raise RequestError("request body must be a JSON object")
    prompt, messages = body.get("prompt"), body.get("messages")
    if prompt is None and messages is None:
        raise RequestError("either `prompt` (text generation) or `messages` (conversation) is required")
    if "adapter" in body:
        model = adapter_model(str(body["adapter"]), served) if body["adapter"] else served.preset
    elif "model" in body:
        model = resolve_model(body["model"], served)
    elif served.chat_default:
        model = adapter_model(served.chat_default, served)
    else:
        model = f"{served.preset}:{served.upstream_adapter(served.adapters[0])}" if served.adapters else served.preset
    params = generation_params(
        {k: v for k, v in body.items() if k not in ("model", "adapter", "return_full_text", "stream")}, max_model_len
    )
    check_limits({k: v for k, v in params.items() if k not in ("max_tokens", "min_tokens")})
    if messages is not None:
        check_messages(messages)
        return ChatPlan("/v1/chat/completions", {"model": model, "messages": messages, **params}, None, False)
    if not isinstance(prompt, str):
        raise RequestError("`prompt` must be a string")
    full = body.get("return_full_text", True) is not False
    return ChatPlan("/v1/completions", {"model": model, "prompt": prompt, **params}, prompt, full)


def chat_result(plan: ChatPlan, upstream: dict) -> dict:
    try:
        choice = upstream["choices"][0]
        text = choice["message"]["content"] if plan.prompt is None else choice["text"]
    except (KeyError, IndexError, TypeError):
        raise ValueError(f"unexpected upstream answer: {str(upstream)[:200]}") from None
    text = text or ""
    if plan.prompt is not None and plan.return_full_text:
        text = plan.prompt + text
    return {"Result": text}


def upstream_error_detail(status: int, body: bytes) -> str:
    """SGLang answers errors as {"object":"error","message":...}; pass the message on."""
    import json

    try:
        data = json.loads(body)
        if isinstance(data, dict):
            for key in ("message", "detail", "error"):
                v = data.get(key)
                if isinstance(v, str):
                    return v
                if isinstance(v, dict) and isinstance(v.get("message"), str):
                    return v["message"]
    except ValueError:
        pass
    return f"model server answered HTTP {status}: {body[:200].decode('utf-8', 'replace')}"
