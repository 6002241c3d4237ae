"""Answers held to the OpenAI SDK's types and stop strings, streamed or not: `metadata` only as a map
of strings, and each choice's text cut before the earliest stop string in it.
"""

from __future__ import annotations

from inference.hf_protocol import StopStringCutter, cut_at_stop


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


def _typed_metadata_and_choices(answer: dict, stops: list[str]) -> tuple[bool, list[dict]]:
    """Drops a `metadata` that is not a map of strings (the SDK's type; SGLang puts lists there), in place.
    Returns (whether it dropped one, the choices to cut at the stop strings: none without stop strings)."""
    dropped = answer.get("metadata") is not None and not _is_string_map(answer["metadata"])
    if dropped:
        del answer["metadata"]
    choices = [c for c in answer.get("choices") or [] if isinstance(c, dict)] if stops else []
    return dropped, choices


def shape_answer(answer, stops: list[str]) -> bool:
    """Make a non-streamed chat/completions answer hold to the OpenAI types, in place; True if changed.

    - `metadata` is a map of strings in the SDK's types; SGLang puts lists there (weight_versions).
    - Each choice's text ends before the earliest stop string in it (OpenAI's rule; SGLang cuts at the
      first one in list order when one token holds several).
    """
    if not isinstance(answer, dict):
        return False
    changed, choices = _typed_metadata_and_choices(answer, stops)
    for choice in choices:
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
    changed, choices = _typed_metadata_and_choices(chunk, stops)
    for choice in choices:
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
