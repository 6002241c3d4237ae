"""Packing: several short training examples in one row of up to max_length tokens.

Each example keeps its own positions (position_ids restart at 0) and the row carries no attention
mask, so transformers' masking_utils builds a block-diagonal causal mask: no example attends to
another. The first label of every example is ignored, so no token learns to predict the start of the
next, unrelated example. The loss over a packed row equals the loss over the same examples padded
into a batch (tests/test_tuning_parallel.py checks it), with no compute spent on padding.
"""

from __future__ import annotations

from tuning.render import IGNORE

Features = dict[str, list[int]]


def pack(rows: list[Features], max_length: int) -> list[Features]:
    """Greedy in order: append examples to the current row while they fit, then start a new one."""
    packed: list[Features] = []
    current: Features = {"input_ids": [], "labels": [], "position_ids": []}
    for row in rows:
        ids = row["input_ids"][:max_length]
        if current["input_ids"] and len(current["input_ids"]) + len(ids) > max_length:
            packed.append(current)
            current = {"input_ids": [], "labels": [], "position_ids": []}
        current["input_ids"] += ids
        current["labels"] += [IGNORE] + row["labels"][1 : len(ids)]
        current["position_ids"] += list(range(len(ids)))
    if current["input_ids"]:
        packed.append(current)
    return packed


def pad_packed(batch: list[Features], pad_id: int, multiple_of: int | None = None) -> dict[str, list[list[int]]]:
    """Right-pad packed rows. The padding continues the last example's positions: it comes after that
    example, so the causal mask keeps it out of the example's view, and its labels are ignored. Every
    position 0 is thus the start of a real example (the trainer counts examples that way)."""
    longest = max(len(f["input_ids"]) for f in batch)
    if multiple_of:
        longest = -(-longest // multiple_of) * multiple_of
    out: dict[str, list[list[int]]] = {"input_ids": [], "labels": [], "position_ids": []}
    for f in batch:
        gap = longest - len(f["input_ids"])
        out["input_ids"].append(f["input_ids"] + [pad_id] * gap)
        out["labels"].append(f["labels"] + [IGNORE] * gap)
        last = f["position_ids"][-1] if f["position_ids"] else -1
        out["position_ids"].append(f["position_ids"] + list(range(last + 1, last + 1 + gap)))
    return out
