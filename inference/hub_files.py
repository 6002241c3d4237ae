"""Resumable file downloads from the HuggingFace Hub (thin adapter over huggingface_hub's HTTP session).

Why not `hf_hub_download`: since huggingface_hub 1.x it writes each download to a process-unique temp
file and deletes it on failure, so a pod killed half way (startup probe, OOM, eviction) starts the
file from zero next time. Here the partial file has a stable name beside the entry
(`.partial/<path>.part`) and the next attempt, in this process or the next pod, asks for the rest
with an HTTP Range request. Retries with backoff resume the same way. Completeness and content are
checked by the cache (size and hash from the repo listing), not here.
"""

from __future__ import annotations

import os
import time
from urllib.parse import quote

from inference.weights_cache.cache import PARTIAL_DIR, RepoFile

CHUNK = 1 << 20  # written (and so kept) every MiB


class DownloadError(RuntimeError):
    pass


def partial_path(entry_dir: str, f: RepoFile) -> str:
    return os.path.join(entry_dir, PARTIAL_DIR, f.path + ".part")


def _is_transient(error: Exception) -> bool:
    import httpx2

    status = getattr(getattr(error, "response", None), "status_code", None)
    if status is not None:
        return status >= 500 or status == 429
    return isinstance(error, (httpx2.TransportError, OSError, DownloadError))


def fetch_file(
    model: str, commit: str, f: RepoFile, entry_dir: str, token: str | None, attempts: int = 5, backoff_s: float = 1.0
) -> int:
    """Download repo file `f` at `commit` to entry_dir/f.path; returns the bytes transferred."""
    transferred = 0
    for attempt in range(1, attempts + 1):
        try:
            transferred += _fetch_once(model, commit, f, entry_dir, token)
            return transferred
        except Exception as e:
            if attempt == attempts or not _is_transient(e):
                raise
            time.sleep(min(backoff_s * 2 ** (attempt - 1), 30))
    return transferred


def _fetch_once(model: str, commit: str, f: RepoFile, entry_dir: str, token: str | None) -> int:
    from huggingface_hub import constants
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    part = partial_path(entry_dir, f)
    final = os.path.join(entry_dir, f.path)
    os.makedirs(os.path.dirname(part), exist_ok=True)
    have = os.path.getsize(part) if os.path.exists(part) else 0
    if f.size is not None and have > f.size:
        have = 0  # not a prefix of this file
    headers = build_hf_headers(token=token)
    if have:
        headers["Range"] = f"bytes={have}-"
    transferred = 0
    # The Hub's file URL (what hf_hub_url builds), from the endpoint as configured now (HF_ENDPOINT).
    url = f"{constants.ENDPOINT}/{model}/resolve/{quote(commit, safe='')}/{quote(f.path)}"
    with get_session().stream("GET", url, headers=headers, follow_redirects=True, timeout=60) as response:
        if response.status_code == 416 and have and have == f.size:
            pass  # the partial is already whole
        else:
            hf_raise_for_status(response)
            if response.status_code == 206:
                start = int(response.headers.get("Content-Range", "bytes 0-").split(" ")[1].split("-")[0])
                if start != have:
                    raise DownloadError(f"{f.path}: asked for bytes from {have}, the server sent from {start}")
                mode = "ab"
            else:  # 200: the whole file (a server that ignores Range)
                mode = "wb"
            with open(part, mode) as out:
                for chunk in response.iter_bytes(CHUNK):
                    out.write(chunk)
                    transferred += len(chunk)
                out.flush()
                os.fsync(out.fileno())
    size = os.path.getsize(part)
    if f.size is not None and size != f.size:
        raise DownloadError(f"{f.path}: the connection ended after {size} of {f.size} bytes")
    os.makedirs(os.path.dirname(final), exist_ok=True)
    os.replace(part, final)
    return transferred
