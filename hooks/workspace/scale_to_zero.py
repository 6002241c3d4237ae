"""Scale to zero and wake on demand: the opt-in annotations (where a Workspace stands, scaled to zero,
waking or serving, is status: hooks/workspace/status/scale_to_zero.py).

A Workspace that carries `kaito.sh/scale-to-zero-after: 15m` keeps a small CPU front behind its Service
(hooks/workspace/children/wake_front.py, inference/wake_front.py): at 0 replicas the front holds requests,
asks for one replica and scales back to 0 after that long without a request. The held-request queue's size
and each request's wait limit are annotations too, with defaults sized for a cold start from a new node.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hooks.workspace.api import Workspace
from hooks.workspace.validation import Problem

AFTER_ANNOTATION = "kaito.sh/scale-to-zero-after"
QUEUE_ANNOTATION = "kaito.sh/scale-to-zero-queue-size"
MAX_WAIT_ANNOTATION = "kaito.sh/scale-to-zero-max-wait"
# How an AKS node the Workspace no longer needs gives its GPU back: Delete (the default) deletes its agent pool
# after the scale-in grace period; Deallocate keeps the pool at count 0, the VM deallocated and its OS disk
# (images, the weights cache) kept, so the next start skips node creation. No effect with bring-your-own nodes.
SCALE_DOWN_MODE_ANNOTATION = "kaito.sh/scale-down-mode"
SCALE_DOWN_MODES = ("Delete", "Deallocate")

# A cold start from a new AKS node takes ~16 minutes (node 284 s, init 126 s, image 101 s, framework 74 s,
# weights 62 s, warm-up 195 s): a request held for less would never be answered on the first wake.
DEFAULT_MAX_WAIT_SECONDS = 20 * 60
DEFAULT_QUEUE_SIZE = 100
MAX_QUEUE_SIZE = 10_000
MIN_IDLE_SECONDS = 60

_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


@dataclass(frozen=True)
class ScaleToZero:
    idle_seconds: int
    queue_size: int
    max_wait_seconds: int


def parse_duration(text: str) -> int | None:
    """Seconds of a Go-style duration made of hours, minutes and seconds (`15m`, `1h30m`, `90s`), else None."""
    match = _DURATION.match(text.strip())
    if not text.strip() or match is None:
        return None
    hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def _field(annotation: str) -> str:
    return f"metadata.annotations[{annotation}]"


def scale_down_mode(ws: Workspace) -> tuple[str, list[Problem]]:
    """The Workspace's scale-down mode (Delete unless it opts in to Deallocate), or the problem."""
    raw = ws.annotations.get(SCALE_DOWN_MODE_ANNOTATION)
    if raw is None:
        return "Delete", []
    if raw not in SCALE_DOWN_MODES:
        return "Delete", [
            Problem(
                _field(SCALE_DOWN_MODE_ANNOTATION),
                f"{raw!r} is not a scale-down mode; use {' or '.join(SCALE_DOWN_MODES)} (Deallocate keeps an idle "
                "node's VM deallocated with its OS disk and weights cache; Delete, the default, deletes its pool)",
            )
        ]
    return raw, []


def parse(ws: Workspace) -> tuple[ScaleToZero | None, list[Problem]]:
    """The scale-to-zero settings of a Workspace that opts in, None for one that does not, or the problems."""
    notes = ws.annotations
    if AFTER_ANNOTATION not in notes:
        stray = [a for a in (QUEUE_ANNOTATION, MAX_WAIT_ANNOTATION) if a in notes]
        return None, [
            Problem(_field(a), f"only applies with {AFTER_ANNOTATION} (e.g. 15m); add it or remove this annotation")
            for a in stray
        ]
    problems = []
    if ws.tuning is not None or ws.inference is None or ws.inference.preset is None:
        problems.append(
            Problem(
                _field(AFTER_ANNOTATION),
                "scale-to-zero wakes a preset's model server on demand; it applies to inference Workspaces with "
                "inference.preset (a pod template or tuning Workspace can still be scaled to 0 with spec.replicas)",
            )
        )
    idle = parse_duration(notes[AFTER_ANNOTATION])
    if idle is None or idle < MIN_IDLE_SECONDS:
        problems.append(
            Problem(
                _field(AFTER_ANNOTATION),
                f"{notes[AFTER_ANNOTATION]!r} is not a duration of at least 1m; use hours, minutes and seconds "
                "such as 15m or 1h30m",
            )
        )
    queue = DEFAULT_QUEUE_SIZE
    if QUEUE_ANNOTATION in notes:
        raw = notes[QUEUE_ANNOTATION].strip()
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_QUEUE_SIZE:
            problems.append(
                Problem(
                    _field(QUEUE_ANNOTATION), f"{raw!r} is not a queue size; use a whole number 1 to {MAX_QUEUE_SIZE}"
                )
            )
        else:
            queue = int(raw)
    max_wait = DEFAULT_MAX_WAIT_SECONDS
    if MAX_WAIT_ANNOTATION in notes:
        parsed = parse_duration(notes[MAX_WAIT_ANNOTATION])
        if parsed is None or parsed < 1:
            problems.append(
                Problem(
                    _field(MAX_WAIT_ANNOTATION),
                    f"{notes[MAX_WAIT_ANNOTATION]!r} is not a duration; use e.g. 20m (how long a request waits "
                    "for the model to wake before a 503)",
                )
            )
        else:
            max_wait = parsed
    if problems or idle is None:
        return None, problems
    return ScaleToZero(idle, queue, max_wait), []
