"""The node-local weights cache shared by namespaces that must not reach each other through it.

- gated models: the Hub must have accepted a namespace's own request before that namespace is served,
  also when the Hub is unreachable;
- file names from the Hub's listing never land outside the cache entry;
- the model container's read-only mount: it reads and holds its entry, changes no file, marker or lock,
  and cannot take a lock exclusively.

The Hub is replaced by tests/weights_support/loopback_hub.py (it cannot be reached from tests); the
read-only mount is a real bind mount in a user and mount namespace (`unshare`), as the kubelet makes it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("huggingface_hub")

from weights_support.loopback_hub import LoopbackHub

from inference.weights import fetch_into_cache
from inference.weights_cache.cache import CacheError, Listing, RepoFile, WeightsCache
from inference.weights_cache.files import listing_path_problem

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration  # loopback servers and subprocesses
MODEL = "org/gated"
FILES = {"config.json": b'{"model_type": "llama"}', "model.safetensors": os.urandom(200_000)}


def _endpoint(monkeypatch, url: str) -> None:
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "ENDPOINT", url)  # in-process calls: the constant was read at import


def _unreachable_url() -> str:
    """A loopback port nothing listens on (a fresh URL: pooled connections to the old Hub cannot answer)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_a_gated_copy_serves_only_namespaces_the_hub_accepted_also_when_it_is_unreachable(tmp_path, monkeypatch):
    cache = str(tmp_path / "node-cache")
    with LoopbackHub({MODEL: FILES}, gated_tokens={"team-a-token"}) as hub:
        _endpoint(monkeypatch, hub.url)
        fetch_into_cache(MODEL, cache, token="team-a-token", reserve_bytes=0, namespace="team-a").release()
        with pytest.raises(Exception, match=r"403|restricted|Gated"):  # the Hub's refusal is never bypassed
            fetch_into_cache(MODEL, cache, reserve_bytes=0, namespace="team-b")
    _endpoint(monkeypatch, _unreachable_url())
    with pytest.raises(CacheError, match="never accepted namespace 'team-b'"):
        fetch_into_cache(MODEL, cache, reserve_bytes=0, namespace="team-b")
    with pytest.raises(CacheError, match="never accepted namespace 'team-b'"):
        fetch_into_cache(MODEL, cache, reserve_bytes=0, namespace="team-b", prefer_local=True)
    entry = fetch_into_cache(MODEL, cache, reserve_bytes=0, namespace="team-a")  # its own earlier acceptance
    assert entry.stats.cached and Path(entry.path, "config.json").read_bytes() == FILES["config.json"]
    entry.release()


def test_in_a_pod_an_unnamed_namespace_gets_no_offline_copy(tmp_path, monkeypatch):
    cache = str(tmp_path / "node-cache")
    with LoopbackHub({MODEL: FILES}) as hub:
        _endpoint(monkeypatch, hub.url)
        fetch_into_cache(MODEL, cache, reserve_bytes=0).release()
    _endpoint(monkeypatch, _unreachable_url())
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")  # every pod has it; records would be shared
    with pytest.raises(CacheError, match="never accepted namespace"):
        fetch_into_cache(MODEL, cache, reserve_bytes=0)


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("../x", "normalised"),
        ("a/../../x", "normalised"),
        ("/abs/x", "absolute"),
        ("a\\..\\x", "backslash"),
        ("a\0b", "NUL"),
        ("./a", "normalised"),
        ("a//b", "normalised"),
        (".partial/x.part", ".partial"),
        ("", "empty"),
    ],
)
def test_listing_names_that_would_leave_the_entry_are_refused(name, why):
    assert why in listing_path_problem(name)


def test_ok_listing_names_pass():
    for name in ("config.json", "original/params.json", "a.b/c-d_e.safetensors", "..hidden-but-plain"):
        assert listing_path_problem(name) is None, name


def test_a_hub_listing_naming_files_outside_the_entry_writes_nothing(tmp_path, monkeypatch):
    cache = tmp_path / "node-cache"
    with LoopbackHub({MODEL: {**FILES, "../escape.json": b"{}", "/abs/x.json": b"{}"}}) as hub:
        _endpoint(monkeypatch, hub.url)
        with pytest.raises(CacheError, match=r"file name '(\.\./escape|/abs/x)\.json'"):
            fetch_into_cache(MODEL, str(cache), reserve_bytes=0, namespace="team-a")
        assert hub.file_gets == []
    assert not (cache / "models" / "org--gated" / "escape.json").exists()
    written = {str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file()}
    assert not any(p.startswith("models/org--gated/") and not p.startswith("models/org--gated/.") for p in written)


def test_ensure_refuses_a_bad_name_before_calling_the_fetcher(tmp_path):
    cache = WeightsCache(str(tmp_path / "c"), reserve_bytes=0)
    called = []
    listing = Listing(MODEL, "abc123", (RepoFile("config.json", 2), RepoFile("sub/../../../x", 2)))
    with pytest.raises(CacheError, match=re.escape("sub/../../../x")):
        cache.ensure(listing, lambda f, root: called.append(f) or 0)
    assert called == [] and not (tmp_path / "x").exists()


READER = r"""
import json, os, sys
from inference.weights import ensure_weights
from inference.weights_cache.locks import EXCLUSIVE, Lock
from tuning.base_model import ensure_model
cache, model, who = sys.argv[1], sys.argv[2], sys.argv[3]
if who == "trainer":  # the tuning Job's trainer: --model-repo with --weights-cache, as the hook renders it
    ensure_weights = lambda model, _dir, _token, cache, revision="main": ensure_model(_dir, model, cache, revision)
path, entry = ensure_weights(model, "/nonexistent", None, cache)
out = {"path": path, "config": open(os.path.join(path, "config.json")).read()}
marker = path + ".complete"
lock = os.path.join(os.path.dirname(path), ".locks", os.path.basename(path) + ".use")
for what, act in [
    ("write_file", lambda: open(os.path.join(path, "config.json"), "w").write("{}")),
    ("write_marker", lambda: open(marker, "w").write("{}")),
    ("utime_marker", lambda: os.utime(marker)),
    ("unlink_lock", lambda: os.unlink(lock)),
    ("exclusive_lock", lambda: Lock(lock, writable=False).try_lock(EXCLUSIVE) or (_ for _ in ()).throw(OSError("busy"))),
]:
    try:
        act()
        out[what] = "allowed"
    except OSError as e:
        out[what] = type(e).__name__ + ":" + str(e.errno)
try:
    ensure_weights(model, "/nonexistent", None, cache, revision="not-fetched")
    out["not_fetched"] = "served"
except Exception as e:
    out["not_fetched"] = str(e)
print(json.dumps(out))
sys.stdout.flush()
sys.stdin.read()  # hold the entry until the test is done with eviction
"""


def _read_only_mount_works() -> bool:
    if not shutil.which("unshare"):
        return False
    with tempfile.TemporaryDirectory() as d:
        os.makedirs(f"{d}/a")
        os.makedirs(f"{d}/b")
        probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount --bind {d}/a {d}/b && mount -o remount,ro,bind {d}/b"],
                               check=False, capture_output=True)  # fmt: skip
    return probe.returncode == 0


@pytest.mark.skipif(not _read_only_mount_works(), reason="needs unshare with user and mount namespaces")
@pytest.mark.parametrize("who", ["model-container", "trainer"])
def test_a_reader_reads_its_entry_through_a_read_only_mount_and_changes_nothing(tmp_path, monkeypatch, who):
    cache = tmp_path / "node-cache"
    with LoopbackHub({MODEL: FILES, "org/other": {"config.json": b"{}", "w.safetensors": os.urandom(100_000)}}) as hub:
        _endpoint(monkeypatch, hub.url)
        fetch_into_cache(MODEL, str(cache), reserve_bytes=0, namespace="team-a").release()  # the init container
    model_dir = cache / "models" / "org--gated"
    before = {str(p): p.stat().st_mtime_ns for p in model_dir.rglob("*")}
    # The pod's view: only its model's folder, read-only (the kubelet's subPath mount), nothing else.
    view = tmp_path / "view"
    (view / "models" / "org--gated").mkdir(parents=True)
    (tmp_path / "reader.py").write_text(READER)
    script = (f'mount --bind "{model_dir}" "{view}/models/org--gated" && '
              f'mount -o remount,ro,bind "{view}/models/org--gated" && '
              f'exec "{sys.executable}" "{tmp_path}/reader.py" "{view}" {MODEL} {who}')  # fmt: skip
    reader = subprocess.Popen(["unshare", "-rm", "sh", "-c", script], cwd=REPO, text=True, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    try:
        line = reader.stdout.readline()
        assert line, reader.communicate(timeout=10)[1]
        seen = json.loads(line)
        assert seen["config"] == FILES["config.json"].decode()
        for what in ("write_file", "write_marker", "utime_marker", "unlink_lock"):
            assert seen[what] == "OSError:30", (what, seen[what])  # EROFS
        assert seen["exclusive_lock"] == "OSError:9", seen  # EBADF: a read-only descriptor takes shared locks only
        assert not (view / "models" / "org--other").exists()
        assert "mounts read-only: the model-weights init container fills it" in seen["not_fetched"], seen
        assert seen["path"].startswith(f"{view}/models/org--gated/"), seen
        # While it serves, a writer that needs room cannot evict the entry (the reader's shared lock).
        cache_obj = WeightsCache(str(cache), reserve_bytes=0)
        commit = next(p.name for p in model_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
        assert cache_obj._evict("org--gated", commit) is None
    finally:
        reader.communicate(input="", timeout=10)
    assert {str(p): p.stat().st_mtime_ns for p in model_dir.rglob("*")} == before
    assert WeightsCache(str(cache), reserve_bytes=0)._evict("org--gated", commit) is not None  # free again
