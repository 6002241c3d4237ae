"""What a weights cache entry holds and how one file is checked: the listing types, the names allowed in
a listing, content hashes, and the stat identity that decides whether a quick check hashes a file again.

A file's identity at verification is (size, mtime, ctime, inode). mtime alone can be put back by whoever
can write the file (utime); ctime cannot: the kernel sets it to "now" on every write, utime, chmod or
rename, and only a process that may set the system clock could restore it. A same-size rewrite with its
mtime restored therefore still changes the identity, and the quick check hashes the file again.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
from dataclasses import dataclass, field

HASH_CHUNK = 8 << 20
PARTIAL_DIR = ".partial"  # resumable partial downloads inside an entry


class CacheError(RuntimeError):
    """The cache cannot provide the entry (verification failed after download, no space, bad input)."""


@dataclass(frozen=True)
class RepoFile:
    path: str
    size: int | None
    sha256: str | None = None  # LFS files: the Hub's sha256 of the content
    blob_id: str | None = None  # git blob id (sha1 of "blob <size>\0" + content), for small files


@dataclass(frozen=True)
class Listing:
    """What the Hub says a repo holds at one commit (already filtered to the files we keep)."""

    repo: str
    commit: str
    files: tuple[RepoFile, ...]

    @property
    def total_bytes(self) -> int:
        return sum(f.size or 0 for f in self.files)


@dataclass
class FetchStats:
    cached: bool = True  # nothing had to be downloaded
    downloaded_files: int = 0
    downloaded_bytes: int = 0
    evicted: list[str] = field(default_factory=list)
    waited_s: float = 0.0  # on another process's download lock
    seconds: float = 0.0


def safe_name(repo: str) -> str:
    parts = repo.split("/")
    if not repo or len(parts) > 2 or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        raise CacheError(f"model repo {repo!r} is not of the form <org>/<name>")
    return "--".join(parts)


def check_commit(commit: str) -> str:
    if not commit or "/" in commit or "\\" in commit or "\0" in commit or commit.startswith("."):
        raise CacheError(f"commit {commit!r} is not a commit id")
    return commit


def listing_path_problem(path: str) -> str | None:
    """Why a file name from a listing may not be written inside an entry, or None. Only plain relative
    POSIX paths already in normal form pass: no absolute path, no `..` or `.` step, no backslash, no NUL,
    nothing under the entry's own partial-download folder."""
    if not isinstance(path, str) or not path:
        return "is empty"
    if "\0" in path:
        return "contains a NUL byte"
    if "\\" in path:
        return "contains a backslash"
    if path.startswith("/"):
        return "is an absolute path"
    if any(step in ("", ".", "..") for step in path.split("/")) or posixpath.normpath(path) != path:
        return "is not a normalised relative path (empty, '.' or '..' steps)"
    if path.split("/", 1)[0] == PARTIAL_DIR:
        return f"names the entry's own {PARTIAL_DIR} folder"
    return None


def check_listing(listing: Listing, root: str) -> None:
    """Refuse a listing any of whose names would land outside `root` (the entry) before anything is written."""
    safe_name(listing.repo)
    check_commit(listing.commit)
    real_root = os.path.realpath(root)
    for f in listing.files:
        problem = listing_path_problem(f.path)
        if problem is None:
            target = os.path.realpath(os.path.join(real_root, f.path))
            if os.path.commonpath([real_root, target]) != real_root or target == real_root:
                problem = "resolves outside the cache entry"
        if problem is not None:
            raise CacheError(f"{listing.repo}@{listing.commit}: the listing's file name {f.path!r} {problem}")


def git_blob_id(path: str) -> str:
    h = hashlib.sha1(f"blob {os.path.getsize(path)}\0".encode())
    return _hash_file(path, h)


def sha256_of(path: str) -> str:
    return _hash_file(path, hashlib.sha256())


def _hash_file(path: str, h) -> str:
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def stamp(path: str) -> dict[str, int]:
    """The file's identity as the quick check compares it (see the module docstring)."""
    st = os.stat(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "ino": st.st_ino}


def unchanged_since(path: str, recorded: dict | None) -> bool:
    """True when the file still has the identity recorded at verification (None: nothing recorded)."""
    if not recorded:
        return False
    try:
        now = stamp(path)
    except FileNotFoundError:
        return False
    return all(recorded.get(k) == v for k, v in now.items())


def file_problem(root: str, f: RepoFile, hash_it: bool) -> str | None:
    """Why the file at root/f.path does not match the listing, or None."""
    path = os.path.join(root, f.path)
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        return f"{f.path} is missing"
    if f.size is not None and size != f.size:
        return f"{f.path} has {size} bytes, the Hub lists {f.size}"
    if not hash_it:
        return None
    if f.sha256 and sha256_of(path) != f.sha256:
        return f"{f.path} does not match its sha256"
    if not f.sha256 and f.blob_id and git_blob_id(path) != f.blob_id:
        return f"{f.path} does not match its git blob id"
    return None
