"""JSON responses shared by every hook route: compact bodies, errors as {"error": message}."""

from __future__ import annotations

import json

from flask import Response


def json_response(body: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":")), status=status, mimetype="application/json", headers=headers
    )


def json_error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return json_response({"error": message}, status, headers)
