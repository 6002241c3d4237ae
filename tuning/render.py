"""Render examples with the tokenizer's chat template and build masked training features."""

from __future__ import annotations

from typing import Any

from tuning.dataset import Example

IGNORE = -100


def render(example: Example, tokenizer: Any) -> tuple[str, str]:
    """(prompt text, completion text): the loss is taken on the completion only.

    Conversational examples use the chat template; the prompt is the conversation up to the generation
    prompt, the completion is what the full rendering adds after it.
    """
    if not example.conversational:
        return "", str(example.completion)
    assert isinstance(example.prompt, list) and isinstance(example.completion, list)  # conversational
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        prompt = "".join(f"{m['role']}: {m['content']}\n" for m in example.prompt)
        completion = "".join(f"{m['role']}: {m['content']}\n" for m in example.completion)
        return prompt, completion
    from jinja2.exceptions import TemplateError  # what transformers' chat templates raise

    messages = example.prompt + example.completion
    try:
        full = tokenizer.apply_chat_template(messages, tokenize=False)
    except TemplateError:
        # Some templates (e.g. Gemma's) raise on a system turn: fold it into the first user turn.
        if not any(m["role"] == "system" for m in messages):
            raise
        messages = fold_system(messages)
        full = tokenizer.apply_chat_template(messages, tokenize=False)
    prompt_messages = messages[: len(messages) - len(example.completion)]
    if not prompt_messages:
        return "", full
    prompt = tokenizer.apply_chat_template(prompt_messages, tokenize=False, add_generation_prompt=True)
    if full.startswith(prompt):
        return prompt, full[len(prompt) :]
    return "", full  # a template that rewrites earlier turns: train on the whole conversation


def fold_system(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """Merge system turns into the following user turn (for templates without a system role)."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    rest = [dict(m) for m in messages if m["role"] != "system"]
    for m in rest:
        if m["role"] == "user":
            m["content"] = f"{system}\n\n{m['content']}" if system else m["content"]
            break
    else:
        rest.insert(0, {"role": "user", "content": system})
    return rest


def features(example: Example, tokenizer: Any, max_length: int) -> dict[str, list[int]] | None:
    """input_ids / labels / attention_mask, or None when nothing trainable survives truncation."""
    prompt, completion = render(example, tokenizer)
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"] if prompt else []
    c_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    if not example.conversational and tokenizer.eos_token_id is not None:
        if tokenizer.bos_token_id is not None and (not c_ids or c_ids[0] != tokenizer.bos_token_id):
            c_ids = [tokenizer.bos_token_id] + c_ids
        c_ids = c_ids + [tokenizer.eos_token_id]
    ids = (p_ids + c_ids)[:max_length]
    labels = ([IGNORE] * len(p_ids) + c_ids)[:max_length]
    if all(x == IGNORE for x in labels) or len(ids) < 2:
        return None
    return {"input_ids": ids, "labels": labels, "attention_mask": [1] * len(ids)}


def pad_batch(
    batch: list[dict[str, list[int]]], pad_id: int, multiple_of: int | None = None
) -> dict[str, list[list[int]]]:
    """Right-pad a batch (labels with -100, mask with 0); returns nested lists for the caller to tensorise."""
    longest = max(len(f["input_ids"]) for f in batch)
    if multiple_of:
        longest = -(-longest // multiple_of) * multiple_of
    out: dict[str, list[list[int]]] = {"input_ids": [], "labels": [], "attention_mask": []}
    for f in batch:
        gap = longest - len(f["input_ids"])
        out["input_ids"].append(f["input_ids"] + [pad_id] * gap)
        out["labels"].append(f["labels"] + [IGNORE] * gap)
        out["attention_mask"].append(f["attention_mask"] + [0] * gap)
    return out
