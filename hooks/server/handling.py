"""What every hook route does alike: read the JSON body, name the object in the log, answer errors as JSON.

A body that is not a Metacontroller request is a 400 with a JSON error; an internal error is a 500,
never a 200 with fewer children (Metacontroller would delete the missing ones).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from flask import Response, g, request
from werkzeug.exceptions import HTTPException

from hooks.metacontroller import BadRequest
from hooks.server.responses import json_error, json_response

log = logging.getLogger("kaito.hooks")


def read_json_body() -> object:
    """The request body as JSON; raises BadRequest for anything else."""
    try:
        return json.loads(request.get_data(cache=False))
    except (ValueError, UnicodeDecodeError) as err:
        raise BadRequest(f"body is not JSON: {err}") from None


def _note_object(body: object) -> None:
    """namespace/name of the request's parent (CompositeController) or object (DecoratorController), for the log."""
    if not isinstance(body, dict):
        return
    obj = body.get("parent") if isinstance(body.get("parent"), dict) else body.get("object")
    if isinstance(obj, dict):
        meta = obj.get("metadata") or {}
        if isinstance(meta, dict):
            g.object = f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def run_hook(
    hook: Callable[[Any], dict[str, Any]], errors: Callable[[Exception, Any], Response | None] | None = None
) -> Response:
    """Answer a hook request: 200 with hook(body), 400 for BadRequest, `errors`' answer, else 500.

    `errors(error, body)` lets a hook family map its own exceptions (None: not one of them).
    """
    body: Any = None
    try:
        body = read_json_body()
        _note_object(body)
        return json_response(hook(body))
    except BadRequest as err:
        return json_error(400, str(err))
    except HTTPException:  # e.g. 413 for an oversized body: the app's handlers answer it
        raise
    except Exception as err:  # every failure must reach Metacontroller as JSON it can read
        answer = errors(err, body) if errors is not None else None
        if answer is not None:
            return answer
        log.exception("hook failed")
        return json_error(500, f"internal error: {type(err).__name__}: {err}")
