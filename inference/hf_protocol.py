"""The OpenAI request/response rules of the transformers runtime (inference.hf_server), as pure code.

The runtime either honours a field or answers 400 naming it; it never answers 200 with a silently
different meaning. What it honours: model, messages/prompt (a string, or a list of strings without
streaming), max_tokens/max_completion_tokens, temperature, top_p, top_k, min_tokens,
min_p, repetition_penalty, seed, stop, echo, stream, stream_options.include_usage, n (not streamed).
"""

from __future__ import annotations


class BadRequest(ValueError):
    pass


# Fields with a meaning this runtime does not implement: refused when set to anything but "off".
_UNSUPPORTED = {
    "logprobs": "token log-probabilities",
    "top_logprobs": "token log-probabilities",
    "tools": "tool calling",
    "tool_choice": "tool calling",
    "functions": "function calling",
    "function_call": "function calling",
    "logit_bias": "logit bias",
    "parallel_tool_calls": "tool calling",
    "presence_penalty": "presence penalty (use repetition_penalty)",
    "frequency_penalty": "frequency penalty (use repetition_penalty)",
}
_PENALTIES = ("presence_penalty", "frequency_penalty")
# Neither runtime inserts text before a suffix (SGLang 0.5.23 ignores the field): both answer this.
SUFFIX_UNSUPPORTED = (
    "`suffix`: text after the insertion point (fill-in-the-middle) is not supported by this server; "
    "remove the field and put the text in `prompt`"
)


def _is_off(field: str, value) -> bool:
    if value is None or value is False:
        return True
    if field in _PENALTIES:
        return value == 0
    if field == "logprobs" and value == 0 and not isinstance(value, bool):
        return False  # completions' logprobs=0 still asks for the sampled token's logprob
    if field == "tool_choice" and value == "none":
        return True
    return value in ({}, [])


def check_request(body: dict, chat: bool) -> list[str]:
    """Raise BadRequest naming the first field this runtime cannot honour; return the prompt list
    for completions (one entry for a string prompt) or [] for chat."""
    for field, what in _UNSUPPORTED.items():
        if field in body and not _is_off(field, body[field]):
            raise BadRequest(
                f"`{field}`: {what} is not supported by the transformers runtime; remove the field "
                "(the SGLang runtime supports it)"
            )
    if body.get("suffix") not in (None, ""):
        raise BadRequest(SUFFIX_UNSUPPORTED)
    choices_per_prompt(body)
    best_of = body.get("best_of")
    if best_of not in (None, 1):
        raise BadRequest("`best_of`: not supported by the transformers runtime; send best_of=1 (or omit it)")
    fmt = body.get("response_format")
    if fmt is not None and not (isinstance(fmt, dict) and fmt.get("type") == "text"):
        raise BadRequest(
            "`response_format`: constrained output (json_object, json_schema) is not supported by "
            'the transformers runtime; omit it or use {"type": "text"}'
        )
    if chat:
        if body.get("echo"):
            raise BadRequest("`echo` applies to /v1/completions only")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("`messages` must be a non-empty list")
        return []
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        if body.get("stream") and len(prompt) > 1:
            raise BadRequest(
                "`prompt`: a list of prompts cannot be streamed by the transformers runtime; "
                "send one prompt per streamed request"
            )
        return list(prompt)
    raise BadRequest(
        "`prompt` must be a string or a list of strings (token-id prompts are not supported by the "
        "transformers runtime)"
    )


def choices_per_prompt(body: dict) -> int:
    """`n`: that many answers per prompt (generated one after another); not streamed."""
    n = body.get("n")
    if n is None:
        return 1
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 16:
        raise BadRequest(f"`n` must be an integer from 1 to 16, got {n!r}")
    if n > 1 and body.get("stream"):
        raise BadRequest("`n`: the transformers runtime streams one choice; send n=1 with stream, or do not stream")
    return n


def max_new_tokens(body: dict, default: int | None) -> int | None:
    value = body.get("max_completion_tokens", body.get("max_tokens"))
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadRequest(f"`max_tokens` must be a positive integer, got {value!r}")
    return value


def token_budget(prompt_tokens: int, requested: int | None, default: int, context_len: int | None) -> int:
    """The new-token budget, refused before generating when the prompt (or the prompt and the requested
    budget) does not fit the context, in SGLang's words; an unrequested budget shrinks to fit instead."""
    if context_len:
        if prompt_tokens >= context_len:
            raise BadRequest(
                f"The input ({prompt_tokens} tokens) is longer than the model's context length ({context_len} tokens)."
            )
        if requested is not None and prompt_tokens + requested >= context_len:
            raise BadRequest(
                f"Requested token count exceeds the model's maximum context length of {context_len} tokens. "
                f"You requested a total of {prompt_tokens + requested} tokens: {prompt_tokens} tokens from the "
                f"input messages and {requested} tokens for the completion. Please reduce the number of tokens "
                "in the input messages or the completion to fit within the limit."
            )
    if requested is not None:
        return requested
    if context_len:
        return max(1, min(default, context_len - prompt_tokens - 1))
    return default


def stop_strings(body: dict) -> list[str]:
    stop = body.get("stop")
    if stop is None or stop == []:
        return []
    if isinstance(stop, str):
        return [stop] if stop else []
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return [s for s in stop if s]
    raise BadRequest("`stop` must be a string or a list of strings")


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """OpenAI semantics: the answer ends before whichever stop string comes first in the text (not the
    first in list order), which is not part of it."""
    hits = [text.find(s) for s in stops if s in text]
    if not hits:
        return text, False
    return text[: min(hits)], True


def finish_reason(new_tokens: list[int], eos_ids: set[int], budget: int, stopped_by_string: bool) -> str:
    if stopped_by_string or (new_tokens and new_tokens[-1] in eos_ids):
        return "stop"
    return "length" if len(new_tokens) >= budget else "stop"


class StopStringCutter:
    """Streams text while holding back what could be the start of a stop string, so a streamed answer
    equals the non-streamed one (which ends before the first stop string)."""

    def __init__(self, stops: list[str]):
        self.stops = stops
        self.pending = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""
        self.pending += piece
        text, hit = cut_at_stop(self.pending, self.stops)
        if hit:
            self.stopped, self.pending = True, ""
            return text
        keep = max((k for s in self.stops for k in range(1, len(s)) if self.pending.endswith(s[:k])), default=0)
        out, self.pending = self.pending[: len(self.pending) - keep], self.pending[len(self.pending) - keep :]
        return out

    def finish(self) -> str:
        out, self.pending = ("" if self.stopped else self.pending), ""
        return out


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def include_usage(body: dict) -> bool:
    opts = body.get("stream_options")
    if opts is None:
        return False
    if not isinstance(opts, dict):
        raise BadRequest("`stream_options` must be an object")
    return bool(opts.get("include_usage"))
