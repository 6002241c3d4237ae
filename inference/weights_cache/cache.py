"""The node-local weights cache: one verified copy of each (model repo, commit) per node.

Layout under the cache root (a hostPath shared by the pods on the node):

    models/<org>--<name>/<commit>/            the files, used directly as the runtime's model path
    models/<org>--<name>/<commit>.complete    marker: JSON listing of every file (size, sha256/blob id, and
                                              its identity at verification); written last, atomically
    models/<org>--<name>/.refs/<revision>     the commit a revision name resolved to (offline fallback)
    models/<org>--<name>/.locks/<commit>.use  held shared by every process serving from the entry
    locks/<org>--<name>/<commit>.download     held exclusively while one process downloads/verifies
    access/<org>--<name>/<commit>/<namespace> the Hub accepted this namespace's own request (weights_cache.access)

Writers and readers are separate: only the `model-weights` init container writes (it mounts the root
read-write); the model container mounts its own model's `models/<org>--<name>` read-only, so it can read
its files and hold the `use` lock shared, but change no file, marker or lock, and see no other model.

An entry without its marker is never used: it is resumed (partial files are kept) and verified first.
A complete entry is checked on each use: every file present with the size and identity (size, mtime,
ctime, inode) recorded at verification; a file whose identity changed is hashed again. `--full-verify`
hashes everything.

Eviction, when the download would not fit: entries that no process uses or downloads, least recently
used first (a writer's use touches the marker), abandoned partial entries by their age, until the free
space covers what is still to download plus the reserve. Nothing in use is ever evicted; if that is not
enough the download stops with an error naming the sizes instead of filling the disk.

Stdlib only: the Hub adapter lives in inference.weights.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from urllib.parse import quote

from inference.weights_cache.files import (
    PARTIAL_DIR,
    CacheError,
    FetchStats,
    Listing,
    RepoFile,
    check_commit,
    check_listing,
    file_problem,
    safe_name,
    sha256_of,
    stamp,
    unchanged_since,
)
from inference.weights_cache.locks import EXCLUSIVE, SHARED, Lock, hold_entry

__all__ = ["PARTIAL_DIR", "CacheError", "Entry", "FetchStats", "Listing", "RepoFile", "WeightsCache"]

MARKER_SUFFIX = ".complete"
LOCKS_DIR = ".locks"  # inside a model's folder: the `use` locks its readers hold
REFS_DIR = ".refs"
_REPO_FILE_FIELDS = {f.name for f in fields(RepoFile)}


@dataclass
class Entry:
    """A verified cache entry in use: keep it (its `use` lock) for as long as the files are read."""

    path: str
    listing: Listing
    stats: FetchStats
    use_lock: Lock

    def keep_across_exec(self) -> None:
        """Let the model server the launcher execs into inherit the shared `use` lock."""
        self.use_lock.keep_across_exec()

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
    def model_dir(self, repo: str) -> str:
        return os.path.join(self.root, "models", safe_name(repo))

    def entry_dir(self, repo: str, commit: str) -> str:
        return os.path.join(self.model_dir(repo), check_commit(commit))

    def marker_path(self, repo: str, commit: str) -> str:
        return self.entry_dir(repo, commit) + MARKER_SUFFIX

    def use_lock_path(self, repo: str, commit: str) -> str:
        return os.path.join(self.model_dir(repo), LOCKS_DIR, f"{check_commit(commit)}.use")

    def _download_lock_path(self, repo: str, commit: str) -> str:
        return os.path.join(self.root, "locks", safe_name(repo), f"{check_commit(commit)}.download")

    def _ref_path(self, repo: str, revision: str) -> str:
        return os.path.join(self.model_dir(repo), REFS_DIR, quote(revision, safe=""))

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
            except (CacheError, OSError, ValueError, KeyError, TypeError):
                continue
        return None

    # --- markers -------------------------------------------------------------------------------
    def read_marker(self, repo: str, commit: str) -> Listing:
        with open(self.marker_path(repo, commit), encoding="utf-8") as f:
            doc = json.load(f)
        files = tuple(RepoFile(**{k: v for k, v in e.items() if k in _REPO_FILE_FIELDS}) for e in doc["files"])
        return Listing(doc["repo"], doc["commit"], files)

    def _marker_stamps(self, repo: str, commit: str) -> dict[str, dict]:
        try:
            with open(self.marker_path(repo, commit), encoding="utf-8") as f:
                return {e["path"]: e.get("stamp") for e in json.load(f)["files"]}
        except (OSError, ValueError, KeyError, TypeError):
            return {}

    def _write_marker(self, listing: Listing) -> None:
        root = self.entry_dir(listing.repo, listing.commit)
        files = [{**asdict(f), "stamp": stamp(os.path.join(root, f.path))} for f in listing.files]
        doc = {"repo": listing.repo, "commit": listing.commit, "files": files}
        _write_atomic(self.marker_path(listing.repo, listing.commit), json.dumps(doc, indent=1, sort_keys=True))

    # --- verification ------------------------------------------------------------------------------
    def problems(self, listing: Listing, full: bool, only: Iterable[RepoFile] | None = None) -> dict[str, str]:
        """{file path: problem} for the entry's files (or `only` these). Quick mode hashes only files whose
        identity changed since the marker was written (every file when there is no marker); full mode all."""
        root = self.entry_dir(listing.repo, listing.commit)
        stamps = self._marker_stamps(listing.repo, listing.commit)

        def check(f: RepoFile) -> str | None:
            changed = not unchanged_since(os.path.join(root, f.path), stamps.get(f.path))
            return file_problem(root, f, hash_it=full or changed)

        files = list(listing.files if only is None else only)
        with ThreadPoolExecutor(max_workers=max(1, min(self.workers, len(files) or 1))) as pool:
            results = list(pool.map(check, files))  # hashlib releases the GIL: shards hash in parallel
        return {f.path: problem for f, problem in zip(files, results, strict=True) if problem}

    def _restamp_needed(self, listing: Listing) -> bool:
        root, stamps = self.entry_dir(listing.repo, listing.commit), self._marker_stamps(listing.repo, listing.commit)
        return not all(unchanged_since(os.path.join(root, f.path), stamps.get(f.path)) for f in listing.files)

    def is_complete(self, listing: Listing, full: bool = False) -> bool:
        return os.path.isfile(self.marker_path(listing.repo, listing.commit)) and not self.problems(listing, full)

    # --- readers ---------------------------------------------------------------------------------------
    def open_read_only(self, repo: str, revision: str) -> Entry | None:
        """The complete, unchanged entry for repo@revision, held shared, without writing anything (the model
        container's read-only mount); None when there is none or it changed since verification."""
        listing = self.complete_listing_for(repo, revision)
        if listing is None:
            return None
        try:
            use_lock = Lock(self.use_lock_path(repo, listing.commit), writable=False)
        except OSError:
            return None
        use_lock.wait(SHARED, lambda s: self.log(f"waiting {s:.0f}s for an eviction of {repo}@{listing.commit}"))
        bad = (
            self.problems(listing, full=False)
            if os.path.isfile(self.marker_path(repo, listing.commit))
            else {"": "gone"}
        )
        if bad:
            use_lock.release()
            self.log(f"cache entry {repo}@{listing.commit} is not usable as verified: {'; '.join(bad.values())}")
            return None
        return Entry(self.entry_dir(repo, listing.commit), listing, FetchStats(), use_lock)

    # --- writers ---------------------------------------------------------------------------------------
    def ensure(self, listing: Listing, fetch_file: Callable[[RepoFile, str], int], full_verify: bool = False) -> Entry:
        """Return the verified entry for `listing`, downloading (resuming) what is missing or wrong.

        fetch_file(file, entry_dir) puts one file at entry_dir/file.path and returns the bytes it
        transferred; the partial files it keeps for resuming live under entry_dir/.partial, removed
        once the entry is complete. Only one process per entry downloads; the others wait on its
        lock and then find the entry complete. A listing with a name that would land outside the entry
        is refused before anything is written.
        """
        started = time.monotonic()
        stats = FetchStats()
        repo, commit = listing.repo, listing.commit
        root = self.entry_dir(repo, commit)
        check_listing(listing, root)
        with self._hold(repo, commit, "downloading") as hold:
            stats.waited_s = hold.waited_s
            has_marker = os.path.isfile(self.marker_path(repo, commit))
            bad = self.problems(listing, full_verify)
            if has_marker and bad:
                self.log(f"cache entry {repo}@{commit} is damaged, repairing: {'; '.join(bad.values())}")
            if bad or not has_marker:
                _remove_file(self.marker_path(repo, commit))
                self._download(listing, root, bad, fetch_file, stats)
                self._write_marker(listing)
                shutil.rmtree(os.path.join(root, PARTIAL_DIR), ignore_errors=True)
            elif self._restamp_needed(listing):  # files hashed again and found good: next start is quick
                self._write_marker(listing)
            os.utime(self.marker_path(repo, commit))
        stats.seconds = time.monotonic() - started
        return Entry(root, listing, stats, hold.use_lock)

    def ensure_filled(self, repo: str, commit: str, needed_bytes: int, fill: Callable[[str], int]) -> Entry:
        """Like ensure(), for content whose file list is known only once it is there (an image's /data):
        fill(entry_dir) writes the files and returns the bytes it transferred; the marker then lists what
        it wrote, with sizes and sha256, for the checks of later uses."""
        started = time.monotonic()
        stats = FetchStats()
        root = self.entry_dir(repo, commit)
        with self._hold(repo, commit, "filling") as hold:
            stats.waited_s = hold.waited_s
            listing: Listing | None = None
            try:
                listing = self.read_marker(repo, commit)
                bad = self.problems(listing, full=False)
            except (OSError, ValueError, KeyError, TypeError):
                bad = {"": "no marker"}
            if bad or listing is None:
                if listing is not None:
                    self.log(f"cache entry {repo}@{commit} is damaged, filling it again: {'; '.join(bad.values())}")
                listing = self._fill(repo, commit, root, needed_bytes, fill, stats)
            os.utime(self.marker_path(repo, commit))
        stats.seconds = time.monotonic() - started
        return Entry(root, listing, stats, hold.use_lock)

    @contextlib.contextmanager
    def _hold(self, repo: str, commit: str, doing: str):
        """One writer per entry, no eviction under it (locks.hold_entry)."""
        with hold_entry(
            self._download_lock_path(repo, commit),
            self.use_lock_path(repo, commit),
            f"{doing} {repo}@{commit}",
            self.log,
        ) as hold:
            yield hold

    def _fill(self, repo: str, commit: str, root: str, needed: int, fill, stats: FetchStats) -> Listing:
        _remove_file(self.marker_path(repo, commit))
        shutil.rmtree(root, ignore_errors=True)
        self._make_room(needed, keep=(repo, commit), stats=stats)
        os.makedirs(root, exist_ok=True)
        stats.downloaded_bytes = fill(root)
        files = []
        for dirpath, _dirs, names in os.walk(root):
            for name in names:
                path = os.path.join(dirpath, name)
                if os.path.islink(path):
                    raise CacheError(f"{repo}@{commit}: {os.path.relpath(path, root)} is a symlink, not a file")
                files.append(RepoFile(os.path.relpath(path, root), os.path.getsize(path), sha256_of(path)))
        if not files:
            raise CacheError(f"{repo}@{commit}: nothing was written")
        listing = Listing(repo, commit, tuple(sorted(files, key=lambda f: f.path)))
        self._write_marker(listing)
        stats.cached, stats.downloaded_files = False, len(files)
        return listing

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
                _remove_file(os.path.join(root, path))
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
                if name.startswith(".") or name.endswith(MARKER_SUFFIX) or not os.path.isdir(path):
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
        model = os.path.join(self.root, "models", repo_dir)
        locks = [
            Lock(os.path.join(self.root, "locks", repo_dir, f"{commit}.download")),
            Lock(os.path.join(model, LOCKS_DIR, f"{commit}.use")),
        ]
        try:
            if not all(lock.try_lock(EXCLUSIVE) for lock in locks):
                return None
            path = os.path.join(model, commit)
            size = _tree_size(path)
            _remove_file(path + MARKER_SUFFIX)  # first: a half-deleted entry must never look complete
            shutil.rmtree(path, ignore_errors=True)
            return size
        finally:
            for lock in locks:
                lock.release()


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
