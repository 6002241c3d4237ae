"""The gateway's JSON: orjson where the image has it, and the shapes of the answers it makes itself
(Kaito-style {"detail"} and OpenAI-style errors that carry both).
"""

from __future__ import annotations

import json

from aiohttp import web

JSON = "application/json"

try:  # faster when present (it is in the SGLang image)
    import orjson

    def loads(b: bytes):
        return orjson.loads(b)

    def dumps(o) -> bytes:
        return orjson.dumps(o)
except ImportError:  # pragma: no cover

    def loads(b: bytes):
        return json.loads(b)

    def dumps(o) -> bytes:
        return json.dumps(o).encode()


def json_response(obj, status: int = 200) -> web.Response:
    return web.Response(body=dumps(obj), status=status, content_type=JSON)


def detail_response(message: str, status: int) -> web.Response:
    return json_response({"detail": message}, status)


def openai_error(message: str, status: int = 400) -> web.Response:
    # OpenAI clients read error.message; Kaito-style clients read detail.
    return json_response(
        {
            "object": "error",
            "error": {"message": message, "type": "invalid_request_error", "code": status},
            "message": message,
            "detail": message,
        },
        status,
    )
