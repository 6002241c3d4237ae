"""A model server stand-in that answers what the test scripts, and records every request it gets.

For gateway tests that need the runtime's exact bytes (SGLang's answer shapes, its stream split at odd
places, its /server_info): the GPU engine cannot run here. Unscripted paths answer 404 like SGLang's
front end. Each script entry is (status, content type, body); a list body is sent as chunks with a short
pause between them (a stream)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ScriptedUpstream:
    def __init__(self) -> None:
        self.script: dict[str, tuple[int, str, bytes | list[bytes]]] = {}
        self.requests: list[tuple[str, str, bytes]] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                upstream.requests.append((self.command, self.path, body))
                status, ctype, payload = upstream.script.get(
                    self.path, (404, "application/json", b'{"detail": "Not Found"}')
                )
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                if isinstance(payload, list):
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for piece in payload:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                        self.wfile.flush()
                        time.sleep(0.02)
                    self.wfile.write(b"0\r\n\r\n")
                else:
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)

            do_GET = do_POST = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.answer("/health", 200, {})

    def answer(self, path: str, status: int, obj) -> None:
        self.script[path] = (status, "application/json", json.dumps(obj).encode())

    def stream(self, path: str, events: list[dict], split_at: int = 0) -> None:
        """Server-sent events, then [DONE]; split_at > 0 cuts the byte stream into pieces of that size."""
        data = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
        pieces = [data[i : i + split_at] for i in range(0, len(data), split_at)] if split_at else [data]
        self.script[path] = (200, "text/event-stream", pieces)

    def paths(self) -> list[str]:
        return [path for _, path, _ in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
