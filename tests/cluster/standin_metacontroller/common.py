"""What the stand-in's modules share: the sync error, object descriptions for logs, API error text."""

from __future__ import annotations

import json
import logging
from typing import Any

log = logging.getLogger("standin_metacontroller")


class SyncError(RuntimeError):
    """The sync failed; the object is retried with backoff (and a SyncError event is recorded)."""


def describe(obj: dict[str, Any]) -> str:
    m = obj.get("metadata") or {}
    return f"{obj.get('kind')} {m.get('namespace') + '/' if m.get('namespace') else ''}{m.get('name')}"


def api_message(err: Exception) -> str:
    """The apiserver's message for an API error (its Status), else the exception's text."""
    body = getattr(err, "body", None)
    if body:
        try:
            return json.loads(body).get("message") or str(err)
        except (ValueError, AttributeError):
            return str(body)[:500]
    return str(err).splitlines()[0][:500] if str(err) else type(err).__name__
