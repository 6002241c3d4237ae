"""Pure request/response translation for the gateway: model/adapter routing, Kaito /chat <-> OpenAI."""

from __future__ import annotations

from dataclasses import dataclass

from inference.hf_protocol import SUFFIX_UNSUPPORTED, StopStringCutter, cut_at_stop


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


def route_openai(body, served: Served, max_model_len: int | None = None) -> tuple[dict, bool]:
    """Validate an OpenAI request body; return (body to forward, changed?). `max_model_len`: the
    runtime's context length once known (it bounds the token budgets)."""
    if not isinstance(body, dict):
        raise RequestError("request body must be a JSON object")
    model = resolve_model(body.get("model"), served)
    if "messages" in body:
        check_messages(body["messages"])
    lora_path = check_lora_path(body["lora_path"], served) if "lora_path" in body else None
    check_limits(body, max_model_len)
    if body.get("suffix") not in (None, ""):
        raise RequestError(SUFFIX_UNSUPPORTED)
    if lora_path is not None and lora_path != body["lora_path"]:
        return {**body, "model": model, "lora_path": lora_path}, True
    if body.get("model") == model:
        return body, False
    return {**body, "model": model}, True


# Bounds on what one request may make the runtime compute: each extra choice is a whole generation, and
# SGLang accepts any number. OpenAI's own limit for top_logprobs is 20.
MAX_CHOICES = 16
MAX_TOP_LOGPROBS = 20


def _bounded_int(value, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RequestError(f"`{name}` must be an integer from {low} to {high}, got {value!r}")
    return value


def check_limits(body: dict, max_model_len: int | None = None) -> None:
    """Caps on `n`/`best_of`, `top_logprobs`/`logprobs` and the token budgets (the context length
    once the runtime has told it), each refused with the field named."""
    for name in ("n", "best_of"):
        if body.get(name) is not None:
            _bounded_int(body[name], name, 1, MAX_CHOICES)
    if body.get("top_logprobs") is not None:
        _bounded_int(body["top_logprobs"], "top_logprobs", 0, MAX_TOP_LOGPROBS)
    logprobs = body.get("logprobs")
    if logprobs is not None and not isinstance(logprobs, bool):  # completions: how many alternatives
        _bounded_int(logprobs, "logprobs", 0, MAX_TOP_LOGPROBS)
    for name in ("max_tokens", "max_completion_tokens", "max_output_tokens", "min_tokens"):
        if body.get(name) is not None:
            token_count(body[name], name, max_model_len)


def sampling_is_random(body: dict) -> bool:
    """Whether the answer depends on the random draw: temperature is not 0 (SGLang's default is 1)."""
    temperature = body.get("temperature", 1.0)
    return not (isinstance(temperature, (int, float)) and not isinstance(temperature, bool) and temperature <= 0)


SEED_IGNORED = (
    "`seed`: this SGLang runtime does not make sampling repeatable (SGLang honours `seed` only when started "
    "with --enable-deterministic-inference, which needs a GPU attention backend and turns off the prefix "
    "cache); remove `seed`, or send temperature 0 for a repeatable answer"
)


def seed_matters(body: dict) -> bool:
    """A `seed` that decides the answer: set, with random sampling."""
    return body.get("seed") is not None and sampling_is_random(body)


def check_seed(body: dict, runtime_honours_seed: bool) -> None:
    """A `seed` the runtime would silently ignore (random sampling on SGLang without deterministic
    inference) is a 400 naming it, never a 200 that differs from call to call."""
    if seed_matters(body) and not runtime_honours_seed:
        raise RequestError(SEED_IGNORED)


def honours_seed(server_info) -> bool:
    """From the runtime's GET /server_info: SGLang lists its server arguments there (the transformers
    runtime has no such endpoint and always honours `seed`)."""
    if not isinstance(server_info, dict) or "enable_deterministic_inference" not in server_info:
        return True
    return server_info.get("enable_deterministic_inference") is True


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


MAX_TOKEN_COUNT = 2**31 - 1  # far above any context length; bigger numbers only break the server


def token_count(value, name: str, context_length: int | None = None) -> int:
    """A token budget: an integer (an integral float or a digit string too) in 0..MAX_TOKEN_COUNT, and
    at most the model's context length when it is known."""
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
    if context_length and number > context_length:
        raise RequestError(
            f"`{name}` must be at most the model's context length ({context_length} tokens), got {value!r}"
        )
    return int(number)


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
        model = _adapter_model(str(body["adapter"]), served) if body["adapter"] else served.preset
    elif "model" in body:
        model = resolve_model(body["model"], served)
    elif served.chat_default:
        model = _adapter_model(served.chat_default, served)
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


def stop_strings_of(body: dict) -> list[str]:
    """The request's `stop` as a list (the runtime has checked its type)."""
    stop = body.get("stop")
    if isinstance(stop, str):
        return [stop] if stop else []
    if isinstance(stop, list):
        return [s for s in stop if isinstance(s, str) and s]
    return []


def _is_string_map(value) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())


def shape_answer(answer, stops: list[str]) -> bool:
    """Make a non-streamed chat/completions answer hold to the OpenAI types, in place; True if changed.

    - `metadata` is a map of strings in the SDK's types; SGLang puts lists there (weight_versions).
    - Each choice's text ends before the earliest stop string in it (OpenAI's rule; SGLang cuts at the
      first one in list order when one token holds several).
    """
    if not isinstance(answer, dict):
        return False
    changed = False
    if "metadata" in answer and answer["metadata"] is not None and not _is_string_map(answer["metadata"]):
        del answer["metadata"]
        changed = True
    if not stops:
        return changed
    for choice in answer.get("choices") or []:
        if not isinstance(choice, dict):
            continue
        holder, key = (choice["message"], "content") if isinstance(choice.get("message"), dict) else (choice, "text")
        text = holder.get(key)
        if isinstance(text, str):
            cut, hit = cut_at_stop(text, stops)
            if hit:
                holder[key] = cut
                choice["finish_reason"] = "stop"
                changed = True
    return changed


def shape_chunk(chunk, stops: list[str], cutters: dict[int, StopStringCutter]) -> bool:
    """A streamed chunk, in place: drop a non-string `metadata`; with stop strings, each choice's text
    goes through its own StopStringCutter (`cutters`, by choice index, kept across the stream), so the
    streamed answer ends where the non-streamed one does. True if changed."""
    if not isinstance(chunk, dict):
        return False
    changed = False
    if "metadata" in chunk and chunk["metadata"] is not None and not _is_string_map(chunk["metadata"]):
        del chunk["metadata"]
        changed = True
    if not stops:
        return changed
    for choice in chunk.get("choices") or []:
        if not isinstance(choice, dict):
            continue
        index = choice.get("index", 0)
        cutter = cutters.setdefault(index if isinstance(index, int) else 0, StopStringCutter(stops))
        holder, key = (choice["delta"], "content") if isinstance(choice.get("delta"), dict) else (choice, "text")
        text = holder.get(key)
        out = cutter.feed(text) if isinstance(text, str) else ""
        if choice.get("finish_reason") is not None:
            out += cutter.finish()
            if cutter.stopped:
                choice["finish_reason"] = "stop"
        if isinstance(text, str) or out:
            holder[key] = out
            changed = True
    return changed


_SEGMENT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


def safe_path_segment(value: str) -> bool:
    """An id that can only ever be one path segment upstream: no '/', '.', '%' or '\\'."""
    return 0 < len(value) <= 256 and all(c in _SEGMENT_CHARS for c in value)


def path_is_plain(raw_path: str) -> bool:
    """The request path as sent, before decoding: no encoded '/', '\\' or '.', no backslash, no '.'
    or '..' segment (each could become a different path in the runtime behind the gateway)."""
    path = raw_path.split("?", 1)[0]
    lowered = path.lower()
    if any(code in lowered for code in ("%2f", "%5c", "%2e", "%25")) or "\\" in path:
        return False
    return not any(part in (".", "..") for part in path.split("/"))


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
