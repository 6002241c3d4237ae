"""The node-local weights cache: one verified copy of each (model repo, commit) per node.

Layout under the cache root (a hostPath shared by every pod on the node):

    models/<org>--<name>/<commit>/            the files, used directly as the runtime's model path
    models/<org>--<name>/<commit>.complete    marker: JSON listing of every file (size, sha256/blob id,
                                              mtime at verification); written last, atomically
    refs/<org>--<name>/<revision>             the commit a revision name resolved to (offline fallback)
    locks/<org>--<name>@<commit>.download     held exclusively while one process downloads/verifies
    locks/<org>--<name>@<commit>.use          held shared by every process serving from the entry

An entry without its marker is never used: it is resumed (partial files are kept) and verified first.
A complete entry is checked cheaply on each use (every file present with its recorded size and mtime;
a file whose mtime changed is hashed again) and fully (every hash) on demand.

Eviction, when the download would not fit: entries that no process uses or downloads, least recently
used first (a use touches the marker), abandoned partial entries by their age, until the free space
covers what is still to download plus the reserve. Nothing in use is ever evicted; if that is not
enough the download stops with an error naming the sizes instead of filling the disk.

Stdlib only: the Hub adapter lives in inference.weights. Locks are flock(2) locks, so they vanish with
the process that held them (a killed pod never leaves a stale lock), and the `use` lock, being an
inheritable descriptor, survives the launcher's exec into the model server.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from urllib.parse import quote

MARKER_SUFFIX = ".complete"
PARTIAL_DIR = ".partial"  # resumable partial downloads inside an entry
HASH_CHUNK = 8 << 20


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
    if not repo or len(parts) > 2 or any(p in ("", ".", "..") for p in parts):
        raise CacheError(f"model repo {repo!r} is not of the form <org>/<name>")
    return "--".join(parts)


def _check_commit(commit: str) -> str:
    if not commit or "/" in commit or commit in (".", ".."):
        raise CacheError(f"commit {commit!r} is not a commit id")
    return commit


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


class _Lock:
    """A flock on a file under locks/; `fd` stays open (and locked) until release()."""

    def __init__(self, path: str):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)

    def try_lock(self, mode: int) -> bool:
        try:
            fcntl.flock(self.fd, mode | fcntl.LOCK_NB)
            return True
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EACCES):
                return False
            raise

    def wait(self, mode: int, on_wait: Callable[[float], None], poll_s: float = 0.5) -> float:
        """Block until locked; returns the seconds waited. on_wait(elapsed) is called about every 30 s."""
        started = time.monotonic()
        next_report = 0.0
        while not self.try_lock(mode):
            elapsed = time.monotonic() - started
            if elapsed >= next_report:
                on_wait(elapsed)
                next_report = elapsed + 30
            time.sleep(poll_s)
        return time.monotonic() - started

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing drops the flock
            self.fd = -1


@dataclass
class Entry:
    """A verified cache entry in use: keep it (its `use` lock) for as long as the files are read."""

    path: str
    listing: Listing
    stats: FetchStats
    use_lock: _Lock

    def keep_across_exec(self) -> None:
        """Let the model server the launcher execs into inherit the shared `use` lock."""
        os.set_inheritable(self.use_lock.fd, True)

    def release(self) -> None:
        self.use_lock.release()


class WeightsCache:
    def __init__(
        self,
        root: str,
        reserve_bytes: int = 1 << 30,
        max_bytes: int | None = None,
        workers: int = 4,
        log: Callable[[str], None] = lambda _m: None,
    ):
        self.root = os.path.abspath(root)
        self.workers = workers  # files downloaded (and hashed) at once
        self.reserve_bytes = reserve_bytes
        self.max_bytes = max_bytes  # optional cap on the cache's own size
        self.log = log

    # --- paths -------------------------------------------------------------------------------
    def entry_dir(self, repo: str, commit: str) -> str:
        return os.path.join(self.root, "models", safe_name(repo), _check_commit(commit))

    def marker_path(self, repo: str, commit: str) -> str:
        return self.entry_dir(repo, commit) + MARKER_SUFFIX

    def _lock_path(self, repo: str, commit: str, kind: str) -> str:
        return os.path.join(self.root, "locks", f"{safe_name(repo)}@{_check_commit(commit)}.{kind}")

    def _ref_path(self, repo: str, revision: str) -> str:
        return os.path.join(self.root, "refs", safe_name(repo), quote(revision, safe=""))

    # --- refs (revision name -> commit), for starting without the Hub -----------------------------
    def remember_ref(self, repo: str, revision: str, commit: str) -> None:
        _write_atomic(self._ref_path(repo, revision), commit)

    def complete_listing_for(self, repo: str, revision: str) -> Listing | None:
        """The complete entry a revision last resolved to on this node (or the revision as a commit)."""
        candidates = [revision]
        try:
            with open(self._ref_path(repo, revision), encoding="utf-8") as f:
                candidates.insert(0, f.read().strip())
        except FileNotFoundError:
            pass
        for commit in candidates:
            try:
                return self.read_marker(repo, commit)
            except (CacheError, OSError, ValueError):
                continue
        return None

    # --- markers -------------------------------------------------------------------------------
    def read_marker(self, repo: str, commit: str) -> Listing:
        with open(self.marker_path(repo, commit), encoding="utf-8") as f:
            doc = json.load(f)
        files = tuple(RepoFile(**{k: v for k, v in e.items() if k != "mtime_ns"}) for e in doc["files"])
        return Listing(doc["repo"], doc["commit"], files)

    def _marker_mtimes(self, repo: str, commit: str) -> dict[str, int]:
        try:
            with open(self.marker_path(repo, commit), encoding="utf-8") as f:
                return {e["path"]: e.get("mtime_ns") for e in json.load(f)["files"]}
        except (OSError, ValueError, KeyError):
            return {}

    def _write_marker(self, listing: Listing) -> None:
        root = self.entry_dir(listing.repo, listing.commit)
        files = []
        for f in listing.files:
            files.append({**asdict(f), "mtime_ns": os.stat(os.path.join(root, f.path)).st_mtime_ns})
        doc = {"repo": listing.repo, "commit": listing.commit, "files": files}
        _write_atomic(self.marker_path(listing.repo, listing.commit), json.dumps(doc, indent=1, sort_keys=True))

    # --- verification ------------------------------------------------------------------------------
    def problems(self, listing: Listing, full: bool, only: Iterable[RepoFile] | None = None) -> dict[str, str]:
        """{file path: problem} for the entry's files (or `only` these). Quick mode hashes only files
        changed since the marker was written (every file when there is no marker); full mode hashes all."""
        root = self.entry_dir(listing.repo, listing.commit)
        mtimes = self._marker_mtimes(listing.repo, listing.commit)

        def check(f: RepoFile) -> str | None:
            recorded = mtimes.get(f.path)
            try:
                changed = recorded is None or os.stat(os.path.join(root, f.path)).st_mtime_ns != recorded
            except FileNotFoundError:
                changed = True
            return file_problem(root, f, hash_it=full or changed)

        files = list(listing.files if only is None else only)
        with ThreadPoolExecutor(max_workers=max(1, min(self.workers, len(files) or 1))) as pool:
            results = list(pool.map(check, files))  # hashlib releases the GIL: shards hash in parallel
        return {f.path: problem for f, problem in zip(files, results, strict=True) if problem}

    def is_complete(self, listing: Listing, full: bool = False) -> bool:
        return os.path.isfile(self.marker_path(listing.repo, listing.commit)) and not self.problems(listing, full)

    # --- the main operation ----------------------------------------------------------------------------
    def ensure(self, listing: Listing, fetch_file: Callable[[RepoFile, str], int], full_verify: bool = False) -> Entry:
        """Return the verified entry for `listing`, downloading (resuming) what is missing or wrong.

        fetch_file(file, entry_dir) puts one file at entry_dir/file.path and returns the bytes it
        transferred; the partial files it keeps for resuming live under entry_dir/.partial, removed
        once the entry is complete. Only one process per entry downloads; the others wait on its
        lock and then find the entry complete.
        """
        started = time.monotonic()
        stats = FetchStats()
        repo, commit = listing.repo, listing.commit
        root = self.entry_dir(repo, commit)
        download_lock = _Lock(self._lock_path(repo, commit, "download"))
        use_lock = _Lock(self._lock_path(repo, commit, "use"))
        try:
            stats.waited_s = download_lock.wait(
                fcntl.LOCK_EX, lambda s: self.log(f"waiting {s:.0f}s for another process downloading {repo}@{commit}")
            )
            # Shared before anything is checked, so no other process can evict the entry under us.
            use_lock.wait(fcntl.LOCK_SH, lambda s: self.log(f"waiting {s:.0f}s for an eviction of {repo}@{commit}"))
            has_marker = os.path.isfile(self.marker_path(repo, commit))
            bad = self.problems(listing, full_verify)
            if has_marker and bad:
                self.log(f"cache entry {repo}@{commit} is damaged, repairing: {'; '.join(bad.values())}")
            if bad or not has_marker:
                self._remove_marker(repo, commit)
                self._download(listing, root, bad, fetch_file, stats)
                self._write_marker(listing)
                shutil.rmtree(os.path.join(root, PARTIAL_DIR), ignore_errors=True)
            self._touch_marker(repo, commit)
        except BaseException:
            use_lock.release()
            raise
        finally:
            download_lock.release()
        stats.seconds = time.monotonic() - started
        return Entry(root, listing, stats, use_lock)

    def ensure_filled(self, repo: str, commit: str, needed_bytes: int, fill: Callable[[str], int]) -> Entry:
        """Like ensure(), for content whose file list is known only once it is there (an image's /data):
        fill(entry_dir) writes the files and returns the bytes it transferred; the marker then lists what
        it wrote, with sizes and sha256, for the checks of later uses."""
        started = time.monotonic()
        stats = FetchStats()
        root = self.entry_dir(repo, commit)
        download_lock = _Lock(self._lock_path(repo, commit, "download"))
        use_lock = _Lock(self._lock_path(repo, commit, "use"))
        try:
            stats.waited_s = download_lock.wait(
                fcntl.LOCK_EX, lambda s: self.log(f"waiting {s:.0f}s for another process filling {repo}@{commit}")
            )
            use_lock.wait(fcntl.LOCK_SH, lambda s: self.log(f"waiting {s:.0f}s for an eviction of {repo}@{commit}"))
            listing: Listing | None = None
            try:
                listing = self.read_marker(repo, commit)
                bad = self.problems(listing, full=False)
            except (OSError, ValueError, KeyError, TypeError):
                bad = {"": "no marker"}
            if bad or listing is None:
                if listing is not None:
                    self.log(f"cache entry {repo}@{commit} is damaged, filling it again: {'; '.join(bad.values())}")
                self._remove_marker(repo, commit)
                shutil.rmtree(root, ignore_errors=True)
                self._make_room(needed_bytes, keep=(repo, commit), stats=stats)
                os.makedirs(root, exist_ok=True)
                stats.downloaded_bytes = fill(root)
                files = []
                for dirpath, _dirs, names in os.walk(root):
                    for name in names:
                        path = os.path.join(dirpath, name)
                        files.append(RepoFile(os.path.relpath(path, root), os.path.getsize(path), sha256_of(path)))
                if not files:
                    raise CacheError(f"{repo}@{commit}: nothing was written")
                listing = Listing(repo, commit, tuple(sorted(files, key=lambda f: f.path)))
                self._write_marker(listing)
                stats.cached, stats.downloaded_files = False, len(files)
            self._touch_marker(repo, commit)
        except BaseException:
            use_lock.release()
            raise
        finally:
            download_lock.release()
        stats.seconds = time.monotonic() - started
        return Entry(root, listing, stats, use_lock)

    def _download(self, listing: Listing, root: str, bad: dict[str, str], fetch_file, stats: FetchStats) -> None:
        os.makedirs(root, exist_ok=True)
        todo = [f for f in listing.files if f.path in bad]
        for f in todo:
            if "is missing" not in bad[f.path]:
                os.remove(os.path.join(root, f.path))  # wrong content: a resume would keep its bytes
        needed = sum(f.size or 0 for f in todo)
        self._make_room(needed, keep=(listing.repo, listing.commit), stats=stats)
        with ThreadPoolExecutor(max_workers=max(1, min(self.workers, len(todo) or 1))) as pool:
            for got in pool.map(lambda f: fetch_file(f, root), todo):
                stats.downloaded_files += 1
                stats.downloaded_bytes += got
        stats.cached = not todo
        still = self.problems(listing, full=True, only=todo)  # the others were hashed before
        if still:
            for path in still:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(root, path))
            raise CacheError(
                f"{listing.repo}@{listing.commit}: downloaded files do not match the Hub's listing: "
                + "; ".join(still.values())
            )

    # --- eviction ------------------------------------------------------------------------------------
    def entries(self) -> Iterable[tuple[str, str, float, bool]]:
        """(repo dir name, commit, last use, complete) for every entry on disk."""
        models = os.path.join(self.root, "models")
        for repo_dir in sorted(os.listdir(models)) if os.path.isdir(models) else []:
            base = os.path.join(models, repo_dir)
            for name in sorted(os.listdir(base)):
                path = os.path.join(base, name)
                if name.endswith(MARKER_SUFFIX) or not os.path.isdir(path):
                    continue
                marker = path + MARKER_SUFFIX
                complete = os.path.isfile(marker)
                yield repo_dir, name, os.path.getmtime(marker if complete else path), complete

    def _room_left(self, needed: int) -> str | None:
        """Why `needed` more bytes do not fit (free space less the reserve; the size cap), or None."""
        free = shutil.disk_usage(self.root).free
        if free < needed + self.reserve_bytes:
            return f"{needed} bytes to download but {free} free on the disk, keeping {self.reserve_bytes} in reserve"
        if self.max_bytes is not None:
            used = _tree_size(os.path.join(self.root, "models"))
            if used + needed > self.max_bytes:
                return f"{needed} bytes to download, {used} already cached, over the cache size cap of {self.max_bytes}"
        return None

    def _make_room(self, needed: int, keep: tuple[str, str], stats: FetchStats) -> None:
        problem = self._room_left(needed)
        if problem is None:
            return
        keep_key = (safe_name(keep[0]), keep[1])
        candidates = sorted(
            (last, repo_dir, commit) for repo_dir, commit, last, _c in self.entries() if (repo_dir, commit) != keep_key
        )
        for _last, repo_dir, commit in candidates:
            freed = self._evict(repo_dir, commit)
            if freed is not None:
                stats.evicted.append(f"{repo_dir}@{commit}")
                self.log(f"evicted {repo_dir}@{commit} ({freed} bytes) to make room")
                problem = self._room_left(needed)
                if problem is None:
                    return
        raise CacheError(
            f"weights cache {self.root}: {problem}, after evicting every entry no pod uses; give the node a "
            "larger disk (the Workspace's instance type or the Machine's storage) or remove other models"
        )

    def _evict(self, repo_dir: str, commit: str) -> int | None:
        """Delete one entry unless a process uses or downloads it; returns the bytes freed."""
        locks = [_Lock(os.path.join(self.root, "locks", f"{repo_dir}@{commit}.{kind}")) for kind in ("download", "use")]
        try:
            if not all(lock.try_lock(fcntl.LOCK_EX) for lock in locks):
                return None
            path = os.path.join(self.root, "models", repo_dir, commit)
            size = _tree_size(path)
            _remove_file(path + MARKER_SUFFIX)  # first: a half-deleted entry must never look complete
            shutil.rmtree(path, ignore_errors=True)
            return size
        finally:
            for lock in locks:
                lock.release()

    def _remove_marker(self, repo: str, commit: str) -> None:
        _remove_file(self.marker_path(repo, commit))

    def _touch_marker(self, repo: str, commit: str) -> None:
        os.utime(self.marker_path(repo, commit))


def _tree_size(path: str) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def _remove_file(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


def _write_atomic(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
