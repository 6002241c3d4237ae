"""Reading adapter files that someone else wrote: never through a symlink, never without a size cap.

An adapter's files come from its image (kaito-copy keeps symlinks as they are, correctly: it copies, it
does not interpret). Whoever builds the image decides what they are, so the model server's pod reads
them as untrusted input: a symlink to /dev/zero would be an endless read, a symlink to a directory
would copy whatever it points at (another adapter's files, a mounted token) into the served copy.

`snapshot` copies an adapter folder into a private folder the pod owns, walking it with descriptors
opened O_NOFOLLOW relative to their parent (no path is resolved twice), accepting only directories and
regular files, each at most `max_file_bytes` and all together at most `max_total_bytes`. Everything the
agent does afterwards (reading the config, scaling, loading) reads the snapshot.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat

# Generous for LoRA adapters (rank 64 on every module of a 70B model is about 2 GiB), small against a node.
MAX_FILE_BYTES = 8 << 30
MAX_TOTAL_BYTES = 16 << 30
MAX_FILES = 1000
MAX_CONFIG_BYTES = 1 << 20  # adapter_config.json
_COPY_CHUNK = 8 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class UnsafeAdapterFiles(ValueError):
    """The adapter folder holds something other than bounded regular files; the message names it."""


def is_regular_file(path: str) -> bool:
    """True for a regular file that is not a symlink (a completion marker must be written, not linked)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def read_bounded(path: str, max_bytes: int) -> bytes:
    """A regular file's content, refusing a symlink, a device or FIFO, and anything over max_bytes."""
    try:
        fd = os.open(path, _FILE_FLAGS)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise UnsafeAdapterFiles(f"{os.path.basename(path)} {_why_not_opened(e)}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeAdapterFiles(f"{os.path.basename(path)} is not a regular file")
        if st.st_size > max_bytes:
            raise UnsafeAdapterFiles(
                f"{os.path.basename(path)} has {st.st_size} bytes, more than the {max_bytes} allowed"
            )
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise UnsafeAdapterFiles(f"{os.path.basename(path)} grew past the {max_bytes} bytes allowed while it was read")
    return data


def snapshot(
    src: str,
    dest: str,
    max_file_bytes: int = MAX_FILE_BYTES,
    max_total_bytes: int = MAX_TOTAL_BYTES,
    skip: frozenset[str] = frozenset(),
) -> int:
    """Copy the adapter folder src to dest (which must not exist), safely; returns the bytes copied.
    Names in `skip` at the top level are left out (the fetch's completion marker)."""
    try:
        root_fd = os.open(src, _DIR_FLAGS)
    except OSError as e:
        # O_DIRECTORY | O_NOFOLLOW on a symlink says ENOTDIR: name the symlink for what it is.
        why = _why_not_opened(OSError(errno.ELOOP, "") if os.path.islink(src) else e)
        raise UnsafeAdapterFiles(f"the adapter's folder {os.path.basename(src)} {why}") from None
    budget = _Budget(max_file_bytes, max_total_bytes)
    try:
        _copy_dir(root_fd, dest, "", budget, skip)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    finally:
        os.close(root_fd)
    return budget.total


class _Budget:
    def __init__(self, max_file: int, max_total: int):
        self.max_file, self.max_total = max_file, max_total
        self.total = 0
        self.files = 0

    def take(self, rel: str, size: int) -> None:
        self.files += 1
        if self.files > MAX_FILES:
            raise UnsafeAdapterFiles(f"more than {MAX_FILES} files in the adapter folder")
        if size > self.max_file:
            raise UnsafeAdapterFiles(f"{rel} has {size} bytes, more than the {self.max_file} allowed per file")
        self.total += size
        if self.total > self.max_total:
            raise UnsafeAdapterFiles(f"the adapter's files exceed {self.max_total} bytes in all (at {rel})")


def _copy_dir(dir_fd: int, dest: str, rel: str, budget: _Budget, skip: frozenset[str]) -> None:
    os.makedirs(dest, mode=0o700)
    for name in sorted(os.listdir(dir_fd)):
        if not rel and name in skip:
            continue
        where = f"{rel}{name}"
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            raise UnsafeAdapterFiles(f"{where} is a symbolic link; an adapter's files must be regular files")
        if stat.S_ISDIR(st.st_mode):
            sub_fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
            try:
                _copy_dir(sub_fd, os.path.join(dest, name), f"{where}/", budget, skip)
            finally:
                os.close(sub_fd)
        elif stat.S_ISREG(st.st_mode):
            _copy_file(dir_fd, name, os.path.join(dest, name), where, budget)
        else:
            raise UnsafeAdapterFiles(f"{where} is not a regular file (a device, FIFO or socket)")


def _copy_file(dir_fd: int, name: str, dest: str, where: str, budget: _Budget) -> None:
    fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    with os.fdopen(fd, "rb") as src:
        st = os.fstat(src.fileno())
        if not stat.S_ISREG(st.st_mode):  # swapped between the listing and the open
            raise UnsafeAdapterFiles(f"{where} is not a regular file")
        budget.take(where, st.st_size)
        left = st.st_size
        with open(dest, "xb") as out:
            while left > 0 and (chunk := src.read(min(_COPY_CHUNK, left))):
                out.write(chunk)
                left -= len(chunk)
        if src.read(1):
            raise UnsafeAdapterFiles(f"{where} grew while it was copied")


def _why_not_opened(e: OSError) -> str:
    if e.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink
        return "is a symbolic link; an adapter's files must be regular files"
    if e.errno == errno.ENOTDIR:
        return "is not a directory"
    return f"cannot be opened: {os.strerror(e.errno or 0)}"
