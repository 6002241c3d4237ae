"""Loopback networking for tests: every test server listens on 127.0.0.1 only."""

from __future__ import annotations

import json
import socket
from http.server import BaseHTTPRequestHandler


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (also: an address that refuses connections)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def send_json(handler: BaseHTTPRequestHandler, status: int, doc: dict) -> None:
    """Answer a stand-in server's request with `doc` as JSON and its exact length."""
    data = json.dumps(doc).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)
