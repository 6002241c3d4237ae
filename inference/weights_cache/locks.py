"""Locks of the weights cache: open-file-description (OFD) record locks on small files.

Why OFD locks and not flock(2): an exclusive OFD lock needs a descriptor open for writing, so a model
container that mounts its entry read-only can take the shared `use` lock (and keep the entry from being
evicted while it serves) but can never take an exclusive one: it cannot block another pod's download or
pretend an eviction. Like flock, an OFD lock belongs to the open descriptor, vanishes when the process
that held it dies (no stale locks after a kill), conflicts between descriptors of one process too, and
survives exec when the descriptor is inheritable (the launcher execs into the model server).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

SHARED, EXCLUSIVE = fcntl.F_RDLCK, fcntl.F_WRLCK
_OFD_SETLK = getattr(fcntl, "F_OFD_SETLK", 37)  # Linux's value; Python names it since 3.9


def _flock_struct(kind: int) -> bytes:
    # struct flock: l_type, l_whence (short), l_start, l_len (off_t), l_pid (0 for OFD locks), padding.
    return struct.pack("hhqqi", kind, os.SEEK_SET, 0, 0, 0) + b"\0" * 4


class Lock:
    """A record lock on a whole file; `fd` stays open (and locked) until release().

    writable=False opens the file read-only and never creates it: a reader on a read-only mount, which
    can hold SHARED only."""

    def __init__(self, path: str, writable: bool = True):
        self.path = path
        if writable:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        else:
            self.fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)

    def try_lock(self, kind: int) -> bool:
        try:
            fcntl.fcntl(self.fd, _OFD_SETLK, _flock_struct(kind))
            return True
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EACCES):
                return False
            raise

    def wait(self, kind: int, on_wait: Callable[[float], None], poll_s: float = 0.5) -> float:
        """Block until locked; returns the seconds waited. on_wait(elapsed) is called about every 30 s."""
        started = time.monotonic()
        next_report = 0.0
        while not self.try_lock(kind):
            elapsed = time.monotonic() - started
            if elapsed >= next_report:
                on_wait(elapsed)
                next_report = elapsed + 30
            time.sleep(poll_s)
        return time.monotonic() - started

    def keep_across_exec(self) -> None:
        os.set_inheritable(self.fd, True)

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the last descriptor of the description drops the lock
            self.fd = -1


@dataclass
class Hold:
    """An entry held by one process: its `use` lock (shared) and how long it waited for the download lock."""

    use_lock: Lock
    waited_s: float


@contextlib.contextmanager
def hold_entry(download_path: str, use_path: str, what: str, log: Callable[[str], None]) -> Iterator[Hold]:
    """Hold an entry while it is checked and filled: the download lock exclusively (one writer per entry,
    the others wait), and the use lock shared before anything is looked at (no eviction under us).
    The download lock is released when the block ends; the use lock only if the block fails: on success
    it is the caller's, kept for as long as the files are read."""
    download = Lock(download_path)
    use = Lock(use_path)
    try:
        waited = download.wait(EXCLUSIVE, lambda s: log(f"waiting {s:.0f}s for another process {what}"))
        use.wait(SHARED, lambda s: log(f"waiting {s:.0f}s for an eviction of {what.split()[-1]}"))
        yield Hold(use, waited)
    except BaseException:
        use.release()
        raise
    finally:
        download.release()
