"""Finding, reading and normalising SFT dataset files (no torch here).

Every row becomes an Example: `prompt` (not trained on, may be empty) + `completion` (trained on), both
as chat messages when the row is conversational, or as plain text otherwise. Rendering with the
model's chat template and tokenising happen in `tuning.tokenize`.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

EXTENSIONS = {
    ".parquet": "parquet",
    ".json": "json",
    ".jsonl": "jsonl",
    ".csv": "csv",
}


class DatasetError(ValueError):
    """The dataset cannot be used; the message names the file or row."""


@dataclass(frozen=True)
class Example:
    prompt: str | list[dict[str, str]]
    completion: str | list[dict[str, str]]

    @property
    def conversational(self) -> bool:
        return isinstance(self.completion, list)


def find_dataset_files(root: str, extension: str | None = None) -> list[str]:
    """Sorted paths of every dataset file under `root` (optionally only one extension, e.g. "parquet")."""
    wanted = None
    if extension:
        wanted = "." + extension.lower().lstrip(".")
        if wanted not in EXTENSIONS:
            raise DatasetError(f"dataset_extension {extension!r} is not one of {sorted(EXTENSIONS)}")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            ext = os.path.splitext(name)[1].lower()
            if ext in EXTENSIONS and (wanted is None or ext == wanted) and not name.startswith("."):
                found.append(os.path.join(dirpath, name))
    return found


def read_rows(path: str) -> list[dict[str, Any]]:
    """Rows of one dataset file as plain dicts."""
    kind = EXTENSIONS.get(os.path.splitext(path)[1].lower())
    if kind == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if kind == "csv":
        with open(path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    if kind in ("json", "jsonl"):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        return _json_rows(text, path)
    raise DatasetError(f"{path}: unsupported file type")


def _json_rows(text: str, path: str) -> list[dict[str, Any]]:
    stripped = text.strip()
    if not stripped:
        return []
    try:
        doc = json.loads(stripped)
    except json.JSONDecodeError:
        doc = None
        rows = []
        for n, line in enumerate(stripped.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise DatasetError(f"{path}:{n}: not JSON or JSON Lines ({exc.msg})") from exc
    else:
        if isinstance(doc, dict) and isinstance(doc.get("data"), list):
            rows = doc["data"]
        elif isinstance(doc, list):
            rows = doc
        else:
            rows = [doc]
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise DatasetError(f"{path}: record {n} is not an object")
    return rows


def _messages(value: Any, where: str) -> list[dict[str, str]]:
    if isinstance(value, str):
        try:
            value = json.loads(value)  # CSV cells hold the list as JSON text
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{where}: messages is a string that is not a JSON list") from exc
    if not isinstance(value, list) or not value:
        raise DatasetError(f"{where}: messages must be a non-empty list of {{role, content}}")
    out = []
    for m in value:
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise DatasetError(f"{where}: every message needs 'role' and 'content'")
        out.append({"role": str(m["role"]), "content": "" if m["content"] is None else str(m["content"])})
    return out


def row_to_example(
    row: dict[str, Any], where: str, text_column: str = "text", messages_column: str = "messages"
) -> Example:
    """Normalise one row: messages, prompt/completion (strings or message lists), instruction/output, or text."""
    if row.get(messages_column) is not None:
        msgs = _messages(row[messages_column], where)
        last = max((i for i, m in enumerate(msgs) if m["role"] == "assistant"), default=None)
        if last is None:
            raise DatasetError(f"{where}: conversation has no assistant turn to learn from")
        return Example(prompt=msgs[:last], completion=[msgs[last]])
    if row.get("prompt") is not None and row.get("completion") is not None:
        p, c = row["prompt"], row["completion"]
        if isinstance(p, list) or isinstance(c, list):
            return Example(prompt=_messages(p, where) if p else [], completion=_messages(c, where))
        return Example(
            prompt=[{"role": "user", "content": str(p)}], completion=[{"role": "assistant", "content": str(c)}]
        )
    if row.get("instruction") is not None and row.get("output") is not None:
        user = str(row["instruction"])
        extra = row.get("input") or row.get("context")
        if extra:
            user = f"{user}\n\n{extra}"
        return Example(
            prompt=[{"role": "user", "content": user}],
            completion=[{"role": "assistant", "content": str(row["output"])}],
        )
    if row.get(text_column) is not None:
        return Example(prompt="", completion=str(row[text_column]))
    raise DatasetError(
        f"{where}: no usable columns (have {sorted(row)}); expected '{messages_column}', "
        f"'prompt'+'completion', 'instruction'+'output' or '{text_column}'"
    )


def load_examples(root: str, dataset_config: dict[str, Any]) -> list[Example]:
    """Every example from every dataset file under `root` (DatasetConfig.dataset_path is relative to it)."""
    sub = dataset_config.get("dataset_path")
    base = os.path.join(root, sub) if sub else root
    if os.path.isfile(base):
        files = [base]
    else:
        files = find_dataset_files(base, dataset_config.get("dataset_extension"))
    if not files:
        raise DatasetError(f"no dataset files ({', '.join(sorted(EXTENSIONS))}) under {base}")
    text_column = dataset_config.get("response_column") or "text"
    messages_column = dataset_config.get("messages_column") or "messages"
    examples = []
    for path in files:
        for n, row in enumerate(read_rows(path), 1):
            examples.append(row_to_example(row, f"{path} row {n}", text_column, messages_column))
    if not examples:
        raise DatasetError(f"dataset files under {base} hold no rows")
    return examples


def select_for_training(examples: list[Example], dataset_config: dict[str, Any]) -> list[Example]:
    """Shuffle (seeded) and keep the train_test_split fraction, at least one example."""
    import random

    chosen = list(examples)
    if dataset_config.get("shuffle_dataset", True):
        random.Random(int(dataset_config.get("shuffle_seed", 42))).shuffle(chosen)
    split = float(dataset_config.get("train_test_split", 1.0))
    keep = max(1, round(len(chosen) * split))
    return chosen[:keep]


def iter_text(examples: Iterable[Example]) -> Iterable[str]:
    for ex in examples:
        for part in (ex.prompt, ex.completion):
            if isinstance(part, str):
                yield part
            else:
                for m in part:
                    yield m["content"]
