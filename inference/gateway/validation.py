"""What the gateway accepts in a request before anything reaches the runtime: caps on the work one
request may ask for (choices, logprobs, token budgets), chat messages with content, a `seed` only where
the runtime honours it, and paths that stay one route. Each refusal is a RequestError naming the field.
"""

from __future__ import annotations


class RequestError(ValueError):
    """A client error answered with HTTP 400 and {"detail": message}."""


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
