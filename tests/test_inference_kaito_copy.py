"""kaito-copy (inference/copy/kaito-copy.c) compiled here with `gcc -static` and run on real trees."""

import os
import shutil
import stat
import struct
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration  # builds and runs the copy program

SRC = Path(__file__).resolve().parents[1] / "inference" / "copy" / "kaito-copy.c"


@pytest.fixture(scope="module")
def kaito_copy(tmp_path_factory) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    out = tmp_path_factory.mktemp("bin") / "kaito-copy"
    p = subprocess.run(
        ["gcc", "-static", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(out), str(SRC)],
        capture_output=True,
        text=True,
        check=False,
    )
    if p.returncode != 0 and ("cannot find -lc" in p.stderr or "crt1.o" in p.stderr):
        pytest.skip(f"static libc is missing (apt-get install libc6-dev): {p.stderr.strip()[:200]}")
    assert p.returncode == 0, p.stderr
    return out


def has_interpreter(path: Path) -> bool:
    """True when the ELF file asks for a dynamic loader (a PT_INTERP program header)."""
    data = path.read_bytes()
    assert data[:4] == b"\x7fELF" and data[4] == 2  # 64-bit
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    return any(struct.unpack_from("<I", data, phoff + i * phentsize)[0] == 3 for i in range(phnum))


def run(binary, *args, **kw):
    return subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True, **kw, check=False)


def mode(p: Path) -> int:
    return stat.S_IMODE(p.lstat().st_mode)


def make_tree(root: Path) -> None:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "adapter_config.json").write_text('{"r": 8}')
    (root / "adapter_config.json").chmod(0o640)
    big = os.urandom(3 * 1024 * 1024 + 17)  # larger than the copy buffer
    (root / "sub" / "adapter_model.safetensors").write_bytes(big)
    (root / "sub" / "deeper" / "run.sh").write_text("#!/bin/sh\n")
    (root / "sub" / "deeper" / "run.sh").chmod(0o755)
    (root / "sub" / "deeper" / "secret").write_text("s")
    (root / "sub" / "deeper" / "secret").chmod(0o600)
    (root / "empty").write_bytes(b"")
    (root / "sub" / "deeper").chmod(0o750)
    os.symlink("sub/adapter_model.safetensors", root / "link")


def test_binary_is_static(kaito_copy):
    assert not has_interpreter(kaito_copy)


def test_copies_directory_contents_recursively(kaito_copy, tmp_path):
    src, dest = tmp_path / "data", tmp_path / "mnt" / "adapter" / "fin"
    make_tree(src)
    p = run(kaito_copy, src, dest)
    assert p.returncode == 0, p.stderr
    files = sorted(str(q.relative_to(src)) for q in src.rglob("*"))
    assert sorted(str(q.relative_to(dest)) for q in dest.rglob("*")) == files
    for rel in files:
        a, b = src / rel, dest / rel
        assert mode(a) == mode(b), rel
        if a.is_symlink():
            assert b.is_symlink() and os.readlink(b) == os.readlink(a)
        elif a.is_file():
            assert a.read_bytes() == b.read_bytes(), rel


def test_copy_into_existing_dir_overwrites(kaito_copy, tmp_path):
    src, dest = tmp_path / "data", tmp_path / "dest"
    make_tree(src)
    dest.mkdir()
    (dest / "adapter_config.json").write_text("old and longer than the new content")
    (dest / "keep").write_text("k")
    assert run(kaito_copy, src, dest).returncode == 0
    assert (dest / "adapter_config.json").read_text() == '{"r": 8}'
    assert (dest / "keep").read_text() == "k"


def test_single_file_install_creates_parents_and_keeps_mode(kaito_copy, tmp_path):
    dest = tmp_path / "kaito-tools" / "nested" / "kaito-copy"
    p = run(kaito_copy, kaito_copy, dest)
    assert p.returncode == 0, p.stderr
    assert dest.read_bytes() == kaito_copy.read_bytes()
    assert mode(dest) == mode(kaito_copy) and mode(dest) & 0o111
    # the installed copy works
    (tmp_path / "f").write_text("x")
    assert run(dest, tmp_path / "f", tmp_path / "g").returncode == 0 and (tmp_path / "g").read_text() == "x"


def test_errors_exit_nonzero_with_message(kaito_copy, tmp_path):
    p = run(kaito_copy, tmp_path / "missing", tmp_path / "x")
    assert p.returncode == 1 and "missing" in p.stderr
    p = run(kaito_copy, tmp_path)
    assert p.returncode == 2 and "usage" in p.stderr
    (tmp_path / "file").write_text("x")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a").write_text("a")
    p = run(kaito_copy, tmp_path / "d", tmp_path / "file" / "sub")
    assert p.returncode == 1 and "kaito-copy:" in p.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="chroot needs root")
def test_runs_in_an_empty_root_like_a_scratch_image(kaito_copy, tmp_path):
    """An adapter image FROM scratch has only /data; the copier arrives via the shared emptyDir."""
    root = tmp_path / "scratch"
    make_tree(root / "data")
    (root / "kaito-tools").mkdir()
    shutil.copy2(kaito_copy, root / "kaito-tools" / "kaito-copy")
    p = subprocess.run(
        ["/kaito-tools/kaito-copy", "/data", "/mnt/adapter/fin"],
        capture_output=True,
        text=True,
        preexec_fn=lambda: (os.chroot(root), os.chdir("/")),
        env={},
        check=False,
    )
    assert p.returncode == 0, p.stderr
    assert (root / "mnt" / "adapter" / "fin" / "sub" / "adapter_model.safetensors").read_bytes() == (
        root / "data" / "sub" / "adapter_model.safetensors"
    ).read_bytes()


# --- an untrusted source image and a pre-populated destination ---


@pytest.mark.parametrize("descriptors", [None, 32])
def test_a_deep_tree_is_copied_without_overflowing_the_stack_or_the_fd_limit(kaito_copy, tmp_path, descriptors):
    """2500 levels: ~30 MiB of stack when the copy recursed (8 MiB is the default: SIGSEGV), and paths of
    5000 characters, longer than PATH_MAX: the walk opens each level relative to the one above.

    With 32 descriptors: the walk keeps a constant number open, whatever the depth."""
    import resource

    src, dest = tmp_path / "data", tmp_path / "dest"
    src.mkdir()
    make_chain(src, DEPTH, leaf=b"bottom")  # Python's own makedirs/rmtree recurse: build and remove with a loop

    def few_descriptors():
        if descriptors:
            resource.setrlimit(resource.RLIMIT_NOFILE, (descriptors, descriptors))

    try:
        p = run(kaito_copy, src, dest, timeout=120, preexec_fn=few_descriptors)
        assert p.returncode == 0, (p.returncode, p.stderr[-500:])
        assert read_leaf(dest, DEPTH) == b"bottom"
    finally:
        for root in (src, dest):
            remove_chain(root)


DEPTH = 2500


def make_chain(root: Path, depth: int, leaf: bytes = b"") -> None:
    """root/d/d/.../d (depth levels) with a file `leaf` at the bottom, built one level at a time."""
    fd = os.open(root, os.O_RDONLY)
    for _ in range(depth):
        os.mkdir("d", dir_fd=fd)
        child = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = child
    out = os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
    os.write(out, leaf)
    os.close(out)
    os.close(fd)


def read_leaf(root: Path, depth: int) -> bytes:
    fd = os.open(root, os.O_RDONLY)
    for _ in range(depth):
        child = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = child
    leaf = os.open("leaf", os.O_RDONLY, dir_fd=fd)
    os.close(fd)
    with os.fdopen(leaf, "rb") as f:
        return f.read()


def remove_chain(root: Path) -> None:
    """Remove root/d/.../d bottom-up, holding one descriptor and climbing with '..'."""
    if not root.is_dir():
        return
    fd, depth = os.open(root, os.O_RDONLY), 0
    while os.path.isdir(f"/proc/self/fd/{fd}/d"):
        child = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd, depth = child, depth + 1
    for name in os.listdir(fd):
        os.unlink(name, dir_fd=fd)
    for _ in range(depth):
        parent = os.open("..", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = parent
        os.rmdir("d", dir_fd=fd)
    os.close(fd)


@pytest.mark.parametrize("how", ["nested path", "source symlink to an ancestor"])
def test_a_destination_inside_the_source_is_refused(kaito_copy, tmp_path, how):
    (tmp_path / "weights.bin").write_text("w")
    if how == "nested path":
        src, dest = tmp_path, tmp_path / "mnt" / "adapter"
    else:  # an image whose /data is a symlink to "/" while the destination is /mnt/adapter
        os.symlink(tmp_path, tmp_path / "data")
        src, dest = tmp_path / "data", tmp_path / "mnt" / "adapter"
    p = run(kaito_copy, src, dest, timeout=60)
    assert p.returncode == 1 and "inside the source" in p.stderr, (p.returncode, p.stderr[-500:])
    assert not (dest / "mnt").exists()


def test_symlinks_and_hard_links_in_the_destination_are_replaced_not_written_through(kaito_copy, tmp_path):
    src, dest, outside = tmp_path / "data", tmp_path / "dest", tmp_path / "outside"
    make_tree(src)
    outside.mkdir()
    victim = outside / "victim"
    victim.write_text("precious")
    dest.mkdir()
    os.symlink(victim, dest / "adapter_config.json")  # file entry: a symlink to a file elsewhere
    os.symlink(outside, dest / "sub")  # directory entry: a symlink to a directory elsewhere
    os.link(victim, dest / "empty")  # a hard link to the victim
    p = run(kaito_copy, src, dest)
    assert p.returncode == 0, p.stderr
    assert victim.read_text() == "precious"
    assert sorted(q.name for q in outside.iterdir()) == ["victim"]
    assert not (dest / "adapter_config.json").is_symlink()
    assert (dest / "adapter_config.json").read_text() == '{"r": 8}'
    assert not (dest / "sub").is_symlink() and (dest / "sub").is_dir()
    assert (dest / "sub" / "adapter_model.safetensors").read_bytes() == (
        src / "sub" / "adapter_model.safetensors"
    ).read_bytes()
    assert (dest / "empty").read_bytes() == b"" and (dest / "empty").stat().st_ino != victim.stat().st_ino


def test_a_single_file_destination_symlink_is_replaced(kaito_copy, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "f").write_text("new")
    os.symlink(victim, tmp_path / "g")
    assert run(kaito_copy, tmp_path / "f", tmp_path / "g").returncode == 0
    assert (
        victim.read_text() == "precious" and not (tmp_path / "g").is_symlink() and (tmp_path / "g").read_text() == "new"
    )


def test_setuid_setgid_and_sticky_bits_are_dropped(kaito_copy, tmp_path):
    src, dest = tmp_path / "data", tmp_path / "dest"
    (src / "bin").mkdir(parents=True)
    (src / "bin" / "tool").write_text("#!/bin/sh\n")
    (src / "bin" / "tool").chmod(0o6755)
    (src / "bin").chmod(0o3775)
    (src / "one").write_text("x")
    (src / "one").chmod(0o4700)
    assert mode(src / "bin" / "tool") == 0o6755  # the bits really are set on the source
    p = run(kaito_copy, src, dest)
    assert p.returncode == 0, p.stderr
    assert mode(dest / "bin" / "tool") == 0o755
    assert mode(dest / "bin") == 0o775
    assert mode(dest / "one") == 0o700
    assert run(kaito_copy, src / "one", tmp_path / "single").returncode == 0
    assert mode(tmp_path / "single") == 0o700
