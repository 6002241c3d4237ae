"""A HuggingFace Hub stand-in on loopback: the part of the Hub HTTP API that `huggingface_hub` uses to
list a model repo and download its files (the real Hub is unreachable from tests; this is the boundary).

Served: GET /api/models/<org>/<name>[/revision/<rev>] (model info with file sizes, LFS sha256 and git
blob ids), HEAD and GET /<org>/<name>/resolve/<rev>/<path> (ETag, X-Repo-Commit, Range requests).
It counts what it sends, and can be slowed down so that a test can kill a client half way.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

LFS_THRESHOLD = 1024  # files at least this big are listed as LFS files (sha256), like safetensors shards


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


class LoopbackHub:
    def __init__(
        self, repos: dict[str, dict[str, bytes]], bytes_per_s: float | None = None, gated_tokens: set[str] | None = None
    ):
        self.repos = repos
        # A gated repo: only requests bearing one of these tokens get an answer (None: every request).
        self.gated_tokens = gated_tokens
        self.bytes_per_s = bytes_per_s
        self.commits = {
            repo: hashlib.sha1(repr(sorted(files.items())).encode()).hexdigest() for repo, files in repos.items()
        }
        self.lock = threading.Lock()
        self.body_bytes = 0  # file content bytes sent by GET /resolve
        self.file_gets: list[tuple[str, str | None]] = []  # (path, Range header)
        self.api_calls = 0
        self.gate = threading.Event()  # file bodies wait for it: a test can hold a download in flight
        self.gate.set()

    # --- what a test asks -------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def reset_counters(self) -> None:
        with self.lock:
            self.body_bytes, self.file_gets, self.api_calls = 0, [], 0

    def __enter__(self) -> LoopbackHub:
        hub = self

        # The preamble every stand-in HTTP server here has (HTTP/1.1 keep-alive, quiet log), kept with its server.
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                hub._answer(self, head=True)

            def do_GET(self):
                hub._answer(self, head=False)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    # --- the API --------------------------------------------------------------------------------
    def _repo_at(self, org: str, name: str, rev: str):
        repo = f"{org}/{name}"
        if repo not in self.repos or rev not in ("main", self.commits[repo]):
            return None, None
        return repo, self.commits[repo]

    def _answer(self, h: BaseHTTPRequestHandler, head: bool) -> None:
        path = unquote(urlsplit(h.path).path)
        if self.gated_tokens is not None:
            token = (h.headers.get("Authorization") or "").removeprefix("Bearer ")
            if token not in self.gated_tokens:
                return self._send(
                    h,
                    403,
                    b'{"error": "Access to this model is restricted"}',
                    {"Content-Type": "application/json", "X-Error-Code": "GatedRepo"},
                    head,
                )
        m = re.fullmatch(r"/api/models/([^/]+)/([^/]+)(?:/revision/([^/]+))?", path)
        if m:
            with self.lock:
                self.api_calls += 1
            return self._model_info(h, m.group(1), m.group(2), m.group(3) or "main", head)
        m = re.fullmatch(r"/([^/]+)/([^/]+)/resolve/([^/]+)/(.+)", path)
        if m:
            org, name, rev, fname = m.groups()
            return self._resolve(h, org, name, rev, fname, head)
        self._send(h, 404, b'{"error": "not found"}', {"Content-Type": "application/json"}, head)

    def _model_info(self, h, org, name, rev, head):
        repo, commit = self._repo_at(org, name, rev)
        if repo is None:
            return self._send(
                h,
                404,
                b'{"error": "Repository not found"}',
                {"Content-Type": "application/json", "X-Error-Code": "RepoNotFound"},
                head,
            )
        siblings = []
        for fname, data in sorted(self.repos[repo].items()):
            entry = {"rfilename": fname, "size": len(data), "blobId": git_blob_id(data)}
            if len(data) >= LFS_THRESHOLD:
                entry["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            siblings.append(entry)
        body = json.dumps({"id": repo, "modelId": repo, "sha": commit, "private": False, "siblings": siblings}).encode()
        self._send(h, 200, body, {"Content-Type": "application/json"}, head)

    def _resolve(self, h, org, name, rev, fname, head):
        repo, commit = self._repo_at(org, name, rev)
        data = self.repos.get(repo, {}).get(fname) if repo else None
        if data is None:
            return self._send(h, 404, b"Entry not found", {"X-Error-Code": "EntryNotFound"}, head)
        etag = hashlib.sha256(data).hexdigest() if len(data) >= LFS_THRESHOLD else git_blob_id(data)
        headers = {
            "ETag": f'"{etag}"',
            "X-Repo-Commit": commit,
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if len(data) >= LFS_THRESHOLD:
            headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(len(data))})
        rng = h.headers.get("Range")
        status, body = 200, data
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng or "")
        if m:
            start = int(m.group(1))
            end = int(m.group(2)) if m.group(2) else len(data) - 1
            if start >= len(data):
                return self._send(h, 416, b"", {"Content-Range": f"bytes */{len(data)}"}, head)
            status, body = 206, data[start : end + 1]
            headers["Content-Range"] = f"bytes {start}-{start + len(body) - 1}/{len(data)}"
        if not head:
            with self.lock:
                self.file_gets.append((fname, rng))
            self.gate.wait(60)
        self._send(h, status, body, headers, head, count=True)

    def _send(self, h, status, body, headers, head, count=False):
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if head:
            return
        step = 64 << 10
        for i in range(0, len(body), step):
            chunk = body[i : i + step]
            try:
                h.wfile.write(chunk)
                h.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                return
            if count:
                with self.lock:
                    self.body_bytes += len(chunk)
            if self.bytes_per_s and count:
                time.sleep(len(chunk) / self.bytes_per_s)
