"""Pure request/response translation for the gateway: model/adapter routing, Kaito /chat <-> OpenAI."""

from __future__ import annotations

from dataclasses import dataclass


class RequestError(ValueError):
    """A client error answered with HTTP 400 and {"detail": message}."""


@dataclass(frozen=True)
class Served:
    preset: str
    adapters: tuple[str, ...] = ()
    # The adapter /chat uses when the request names none (Kaito applies all adapters): the launcher's
    # combined adapter, or the only adapter; None means the first adapter (or the base model).
    chat_default: str | None = None
    # Live adapters (inference.live_adapters): adapter name -> the name the runtime loaded it under.
    upstream_names: tuple[tuple[str, str], ...] = ()

    def upstream_adapter(self, adapter: str) -> str:
        return next((internal for name, internal in self.upstream_names if name == adapter), adapter)

    def client_model_names(self) -> dict[str, str]:
        """Upstream model id -> the id the client asked for, for the renamed (live) adapters."""
        return {
            f"{self.preset}:{internal}": f"{self.preset}:{name}"
            for name, internal in self.upstream_names
            if internal != name
        }


def resolve_model(model, served: Served) -> str:
    """The `model` to send upstream: the preset, or "<preset>:<adapter>" for a known adapter.

    Accepts the bare adapter name too (Kaito's vLLM runtime addresses adapters that way).
    SGLang 0.5.23 refuses an unknown adapter itself, but not an unknown base name: it answers
    `gpt-4` with the base model and `other:fin` with adapter fin. So both parts are checked here.
    """
    if model is None or model == "" or model == served.preset:
        return served.preset
    if not isinstance(model, str):
        raise RequestError("`model` must be a string")
    base, sep, adapter = model.partition(":")
    if sep:
        if base != served.preset:
            raise RequestError(
                f"unknown model {model!r}: this server serves {served.preset!r} "
                f"(adapters as {served.preset!r}:<adapter>)"
            )
        return _adapter_model(adapter, served)
    if model in served.adapters:
        return f"{served.preset}:{served.upstream_adapter(model)}"
    raise RequestError(f"unknown model {model!r}: available: {', '.join(model_ids(served))}")


def _adapter_model(adapter: str, served: Served) -> str:
    if adapter not in served.adapters:
        known = ", ".join(served.adapters) if served.adapters else "none"
        raise RequestError(f"unknown adapter {adapter!r} for model {served.preset!r} (loaded adapters: {known})")
    return f"{served.preset}:{served.upstream_adapter(adapter)}"


def check_lora_path(value, served: Served):
    """SGLang's own `lora_path` field selects an adapter too: hold it to the same rule; returns the
    value to forward (live adapters by the name the runtime knows)."""
    values = value if isinstance(value, list) else [value]
    for v in values:
        if v is not None and v not in served.adapters:
            _adapter_model(str(v), served)
    if not served.upstream_names:
        return value
    mapped = [None if v is None else served.upstream_adapter(v) for v in values]
    return mapped if isinstance(value, list) else mapped[0]


def route_openai(body, served: Served) -> tuple[dict, bool]:
    """Validate an OpenAI request body; return (body to forward, changed?)."""
    if not isinstance(body, dict):
        raise RequestError("request body must be a JSON object")
    model = resolve_model(body.get("model"), served)
    if "messages" in body:
        check_messages(body["messages"])
    lora_path = check_lora_path(body["lora_path"], served) if "lora_path" in body else None
    for name in ("max_tokens", "max_completion_tokens", "min_tokens"):
        if body.get(name) is not None:
            token_count(body[name], name)
    if lora_path is not None and lora_path != body["lora_path"]:
        return {**body, "model": model, "lora_path": lora_path}, True
    if body.get("model") == model:
        return body, False
    return {**body, "model": model}, True


def check_messages(messages) -> None:
    """Chat messages need content; only an assistant message that carries tool_calls may omit it."""
    if not isinstance(messages, list) or not messages:
        raise RequestError("`messages` must be a non-empty list of {role, content} objects")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m:
            raise RequestError(f"`messages[{i}]` must be an object with `role` and `content`")
        if m.get("content") is None and not (m["role"] == "assistant" and m.get("tool_calls")):
            raise RequestError(
                f"`messages[{i}].content` is null or missing: give the message text "
                "(only an assistant message with `tool_calls` may have no content)"
            )


def model_ids(served: Served) -> list[str]:
    return [served.preset] + [f"{served.preset}:{a}" for a in served.adapters]


def models_listing(served: Served, created: int, max_model_len: int | None = None) -> dict:
    """OpenAI's model list; max_model_len (the runtime's context length) as SGLang lists it."""
    extra = {"max_model_len": max_model_len} if max_model_len else {}
    data = [
        {
            "id": served.preset,
            "object": "model",
            "created": created,
            "owned_by": "kaito",
            "root": served.preset,
            "parent": None,
            **extra,
        }
    ]
    data += [
        {
            "id": f"{served.preset}:{a}",
            "object": "model",
            "created": created,
            "owned_by": "kaito",
            "root": a,
            "parent": served.preset,
            **extra,
        }
        for a in served.adapters
    ]
    return {"object": "list", "data": data}


def model_entry(served: Served, created: int, model_id: str, max_model_len: int | None = None) -> dict | None:
    """GET /v1/models/{id}: the listing's entry for the id ("<preset>:<adapter>" or the bare adapter name)."""
    try:
        wanted = resolve_model(model_id, served)
    except RequestError:
        return None
    wanted = served.client_model_names().get(wanted, wanted)  # a live adapter is listed by its own name
    return next(m for m in models_listing(served, created, max_model_len)["data"] if m["id"] == wanted)


def max_model_len_of(listing) -> int | None:
    """The runtime's context length from its own /v1/models answer (SGLang and hf_server list it)."""
    try:
        for m in listing["data"]:
            if isinstance(m.get("max_model_len"), int):
                return m["max_model_len"]
    except (KeyError, TypeError, AttributeError):
        pass
    return None


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


def generation_params(body: dict) -> dict:
    """OpenAI/SGLang sampling fields from Kaito's generation parameters.

    Parameters may sit at the top level or in `generate_kwargs` (which wins). HF-only knobs
    without an SGLang equivalent (num_beams, typical_p, early_stopping, pad/eos ids) are ignored,
    as Kaito's server ignores unknown keys. max_length counts prompt tokens in HF but is used here as
    the new-token budget (the gateway has no tokenizer); max_new_tokens is exact.
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
        out["max_tokens"] = token_count(p[budget], budget)
    minimum = next((k for k in ("min_new_tokens", "min_tokens", "min_length") if p.get(k)), None)
    if minimum is not None:
        out["min_tokens"] = token_count(p[minimum], minimum)
    if p.get("do_sample") is False:
        out["temperature"] = 0.0
        out.pop("top_k", None)
    return out


MAX_TOKEN_COUNT = 2**31 - 1  # far above any context length; bigger numbers only break the server


def token_count(value, name: str) -> int:
    """A token budget: an integer (an integral float or a digit string too) in 0..MAX_TOKEN_COUNT."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise RequestError(f"`{name}` must be an integer, got {value!r}")
    try:
        number = float(value) if isinstance(value, float) else int(value)
    except ValueError:
        raise RequestError(f"`{name}` must be an integer, got {value!r}") from None
    if isinstance(number, float) and not number.is_integer():
        raise RequestError(f"`{name}` must be an integer, got {value!r}")
    if not 0 <= number <= MAX_TOKEN_COUNT:
        raise RequestError(f"`{name}` must be between 0 and {MAX_TOKEN_COUNT}, got {value!r}")
    return int(number)


@dataclass(frozen=True)
class ChatPlan:
    path: str  # upstream path
    payload: dict  # upstream JSON body
    prompt: str | None  # set for prompt mode (text completion)
    return_full_text: bool


def plan_chat(body, served: Served) -> ChatPlan:
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
        model = _adapter_model(str(body["adapter"]), served) if body["adapter"] else served.preset
    elif "model" in body:
        model = resolve_model(body["model"], served)
    elif served.chat_default:
        model = _adapter_model(served.chat_default, served)
    else:
        model = f"{served.preset}:{served.upstream_adapter(served.adapters[0])}" if served.adapters else served.preset
    params = generation_params(
        {k: v for k, v in body.items() if k not in ("model", "adapter", "return_full_text", "stream")}
    )
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
