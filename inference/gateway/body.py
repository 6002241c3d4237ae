"""Request bodies up to the gateway's limit: read as they arrive and abandoned once past it (413),
then parsed as JSON (400 when they are not).
"""

from __future__ import annotations

from aiohttp import web

from inference.gateway.jsonio import loads
from inference.gateway.state import MAX_BODY_BYTES
from inference.gateway.validation import RequestError

# Request bodies above this are refused as they arrive (a long prompt is well under 1 MiB; images sent
# inline as base64 are the large legitimate case).
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024


class BodyTooLarge(Exception):
    """A request body over the gateway's limit (answered 413 naming the limit)."""


async def read_body(request: web.Request) -> bytes:
    """The body, read as it arrives and abandoned at the limit: a declared Content-Length over it is
    refused before reading anything, a chunked body once the limit is passed."""
    limit = request.app[MAX_BODY_BYTES]
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLarge(_too_large(limit))
    body = bytearray()
    async for chunk in request.content.iter_chunked(256 * 1024):
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge(_too_large(limit))
    return bytes(body)


def _too_large(limit: int) -> str:
    return f"request body is larger than the gateway's limit of {limit} bytes ({limit // (1024 * 1024)} MiB)"


async def read_json(request: web.Request):
    raw = await read_body(request)
    try:
        return raw, loads(raw)
    except ValueError:
        raise RequestError("request body is not valid JSON") from None
