"""The node-local weights cache against a loopback HuggingFace Hub.

The Hub itself cannot be reached from tests (that boundary is replaced by tests/weights_support/
loopback_hub.py, which speaks the HTTP API `huggingface_hub` uses); everything else is real:
`huggingface_hub` downloads, `python -m inference.weights` runs as separate processes sharing one cache
folder (one "node"), killed with SIGKILL half way, racing each other on the flock.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

pytest.importorskip("huggingface_hub")

from weights_support.fetch import fetch_argv
from weights_support.loopback_hub import LoopbackHub

from inference.weights import fetch_into_cache
from inference.weights_cache.cache import CacheError
from inference.weights_cache.locks import SHARED, Lock

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration  # loopback servers and subprocesses
MODEL = "org/tiny"
SHARD = 24 << 20  # bigger than huggingface_hub's 10 MiB write chunk, so a killed download leaves a partial


def repo_files(shard_size: int = 300_000, seed: int = 0) -> dict[str, bytes]:
    rnd = __import__("random").Random(seed)
    return {
        "config.json": b'{"model_type": "llama"}',
        "tokenizer.json": b'{"version": "1.0"}',
        "model-00001-of-00002.safetensors": rnd.randbytes(shard_size),
        "model-00002-of-00002.safetensors": rnd.randbytes(shard_size // 2),
        "pytorch_model.bin": b"duplicate weights in another format" * 40,  # skipped: safetensors exist
        "README.md": b"# tiny",
    }


WANTED = ["config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "tokenizer.json"]


def wanted_bytes(files: dict[str, bytes]) -> int:
    return sum(len(files[name]) for name in WANTED)


def run_fetch(hub: LoopbackHub, cache: Path, *extra: str, wait: bool = True):
    args = fetch_argv(MODEL, cache, cache.parent / f"term-{time.monotonic_ns()}", *extra)
    env = {
        **os.environ,
        "HF_ENDPOINT": hub.url,
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_ETAG_TIMEOUT": "5",
        "PYTHONPATH": str(REPO),
    }
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not wait:
        return proc
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1]), err


@pytest.fixture
def hub(monkeypatch):
    with LoopbackHub({MODEL: repo_files()}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        import huggingface_hub.constants as c

        monkeypatch.setattr(c, "ENDPOINT", server.url)  # in-process calls: the constant was read at import
        yield server


def test_first_start_downloads_and_a_second_pod_downloads_nothing(hub, tmp_path):
    cache = tmp_path / "node-cache"
    first, _ = run_fetch(hub, cache)
    files = hub.repos[MODEL]
    assert first["cached"] is False and first["downloaded_bytes"] == wanted_bytes(files)
    assert hub.body_bytes == wanted_bytes(files)  # the .bin duplicate and README were not fetched
    assert sorted(p for p, _r in hub.file_gets) == WANTED
    entry = cache / "models" / "org--tiny" / first["commit"]
    for name in WANTED:
        assert (entry / name).read_bytes() == files[name]
    assert (entry.parent / (first["commit"] + ".complete")).is_file()

    hub.reset_counters()
    second, _ = run_fetch(hub, cache)
    assert second["cached"] is True and second["downloaded_bytes"] == 0
    assert hub.body_bytes == 0 and hub.file_gets == []


def test_two_concurrent_starts_download_once(tmp_path):
    files = repo_files(shard_size=4 << 20)
    with LoopbackHub({MODEL: files}) as hub:
        cache = tmp_path / "node-cache"
        hub.gate.clear()  # the first pod's download stays in flight ...
        first = run_fetch(hub, cache, wait=False)
        deadline = time.monotonic() + 60
        while not hub.file_gets:
            assert time.monotonic() < deadline and first.poll() is None, first.communicate()[1]
            time.sleep(0.05)
        second = run_fetch(hub, cache, wait=False)
        lines = iter(second.stderr.readline, "")  # ... until the second pod says it waits for it
        line = next((x for x in lines if "waiting" in x), "")
        assert "another process downloading" in line, line
        hub.gate.set()
        results = []
        for p in (first, second):
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
            results.append(json.loads(out.strip().splitlines()[-1]))
    assert hub.body_bytes == wanted_bytes(files)  # downloaded once
    assert [r["cached"] for r in results] == [False, True]
    assert results[1]["waited_s"] > 0


def test_a_download_killed_half_way_resumes(tmp_path):
    files = repo_files(shard_size=SHARD)
    cache = tmp_path / "node-cache"
    with LoopbackHub({MODEL: files}, bytes_per_s=16 << 20) as hub:
        proc = run_fetch(hub, cache, wait=False)
        commit = hub.commits[MODEL]
        partial = cache / "models" / "org--tiny" / commit / ".partial" / "model-00001-of-00002.safetensors.part"
        deadline = time.monotonic() + 60
        while not partial.exists() or partial.stat().st_size < 10 << 20:  # well into the first shard
            assert time.monotonic() < deadline and proc.poll() is None, "download never got half way"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        marker = cache / "models" / "org--tiny" / f"{commit}.complete"
        assert not marker.exists()
        sent_before = hub.body_bytes

        hub.bytes_per_s = None
        hub.reset_counters()
        result, _ = run_fetch(hub, cache)
    assert result["cached"] is False and marker.is_file()
    ranges = [r for _p, r in hub.file_gets if r]
    assert ranges and all(int(r.split("=")[1].split("-")[0]) > 0 for r in ranges), hub.file_gets
    assert hub.body_bytes < wanted_bytes(files) - (8 << 20)  # what was on disk was not fetched again
    assert sent_before + hub.body_bytes >= wanted_bytes(files)
    entry = marker.parent / commit
    for name in WANTED:
        assert (entry / name).read_bytes() == files[name]


def test_config_json_alone_is_not_a_complete_entry(hub, tmp_path):
    """config.json present, shards missing: not an entry. Without the completion marker nothing is trusted."""
    cache = tmp_path / "node-cache"
    entry = cache / "models" / "org--tiny" / hub.commits[MODEL]
    entry.mkdir(parents=True)
    (entry / "config.json").write_bytes(hub.repos[MODEL]["config.json"])
    result, _ = run_fetch(hub, cache)
    assert result["cached"] is False
    assert sorted(p for p, _r in hub.file_gets) == WANTED[1:]  # the good config.json was kept
    assert (entry / "model-00002-of-00002.safetensors").is_file()


@pytest.mark.parametrize("damage", ["truncate", "delete", "flip-a-byte"])
def test_a_corrupted_entry_is_detected_and_repaired(hub, tmp_path, damage):
    cache = tmp_path / "node-cache"
    first, _ = run_fetch(hub, cache)
    shard = cache / "models" / "org--tiny" / first["commit"] / "model-00002-of-00002.safetensors"
    good = shard.read_bytes()
    if damage == "truncate":
        shard.write_bytes(good[: len(good) // 2])
    elif damage == "delete":
        shard.unlink()
    else:  # same size, different content: found by the hash because the file changed since verification
        time.sleep(0.01)
        shard.write_bytes(bytes([good[0] ^ 0xFF]) + good[1:])
    hub.reset_counters()
    second, err = run_fetch(hub, cache)
    assert "damaged" in err and "model-00002-of-00002.safetensors" in err
    assert second["cached"] is False and [p for p, _r in hub.file_gets] == ["model-00002-of-00002.safetensors"]
    assert shard.read_bytes() == good


def _rewrite_same_size_keeping_mtime(path: Path, offset: int) -> None:
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns


@pytest.mark.parametrize("name", ["tokenizer.json", "model-00001-of-00002.safetensors"])
def test_a_same_size_rewrite_with_its_mtime_restored_is_re_verified(hub, tmp_path, name):
    """The poisoned-cache case: a file rewritten in place, same size, mtime put back. The quick check
    compares the kernel-kept ctime and inode too, so the file is hashed again and repaired: 0 poisoned hits."""
    cache = tmp_path / "node-cache"
    first, _ = run_fetch(hub, cache)
    target = cache / "models" / "org--tiny" / first["commit"] / name
    _rewrite_same_size_keeping_mtime(target, offset=5)
    hub.reset_counters()
    second, err = run_fetch(hub, cache, "--namespace", "other-team")
    assert "damaged" in err and name in err
    assert second["cached"] is False and [p for p, _r in hub.file_gets] == [name]
    assert target.read_bytes() == hub.repos[MODEL][name]


def test_full_verify_hashes_every_file(hub, tmp_path):
    cache = tmp_path / "node-cache"
    first, _ = run_fetch(hub, cache)
    marker = cache / "models" / "org--tiny" / (first["commit"] + ".complete")
    doc = json.loads(marker.read_text())
    shard = cache / "models" / "org--tiny" / first["commit"] / "model-00001-of-00002.safetensors"
    _rewrite_same_size_keeping_mtime(shard, offset=1000)
    for entry in doc["files"]:  # a marker that vouches for the changed file: only hashing finds it
        if entry["path"] == shard.name:
            entry["stamp"] = {
                "size": shard.stat().st_size,
                "mtime_ns": shard.stat().st_mtime_ns,
                "ctime_ns": shard.stat().st_ctime_ns,
                "ino": shard.stat().st_ino,
            }
    marker.write_text(json.dumps(doc))
    hub.reset_counters()
    quick, _ = run_fetch(hub, cache)
    assert quick["cached"] is True
    full, err = run_fetch(hub, cache, "--full-verify")
    assert full["cached"] is False and "sha256" in err
    assert shard.read_bytes() == hub.repos[MODEL]["model-00001-of-00002.safetensors"]


def test_hub_unreachable_uses_the_verified_copy_but_a_refusal_does_not(tmp_path, monkeypatch):
    import huggingface_hub.constants as c

    cache = tmp_path / "node-cache"
    with LoopbackHub({MODEL: repo_files()}) as hub:
        monkeypatch.setattr(c, "ENDPOINT", hub.url)
        fetch_into_cache(MODEL, str(cache), reserve_bytes=0).release()
        url = hub.url
    monkeypatch.setattr(c, "ENDPOINT", url)  # nothing listens there any more
    entry = fetch_into_cache(MODEL, str(cache), reserve_bytes=0)
    assert entry.stats.cached and Path(entry.path, "config.json").is_file()
    entry.release()
    with LoopbackHub({}) as empty_hub:  # answers 404: no such repo (or no access) -> no fallback
        monkeypatch.setattr(c, "ENDPOINT", empty_hub.url)
        with pytest.raises(Exception, match=r"404|not found|Repository"):
            fetch_into_cache(MODEL, str(cache), reserve_bytes=0)


def _use(cache: Path, repo_dir: str, commit: str) -> Lock:
    """A pod serving from the entry: the shared `use` lock, taken as a read-only model container takes it."""
    lock = Lock(str(cache / "models" / repo_dir / ".locks" / f"{commit}.use"), writable=False)
    assert lock.try_lock(SHARED)
    return lock


def test_eviction_is_lru_and_spares_entries_in_use(tmp_path, monkeypatch):
    import huggingface_hub.constants as c

    repos = {f"org/m{i}": repo_files(shard_size=200_000, seed=i) for i in range(4)}
    size = wanted_bytes(repos["org/m0"])
    cache = tmp_path / "node-cache"
    with LoopbackHub(repos) as hub:
        monkeypatch.setattr(c, "ENDPOINT", hub.url)
        commits = {}
        for i, repo in enumerate(["org/m0", "org/m1", "org/m2"]):
            entry = fetch_into_cache(repo, str(cache), reserve_bytes=0)
            commits[repo] = entry.listing.commit
            entry.release()
            os.utime(entry.path + ".complete", (1000 + i, 1000 + i))  # m0 least recently used
        # m0 is oldest but a pod serves from it (shared use lock): m1 goes instead.
        in_use = _use(cache, "org--m0", commits["org/m0"])
        cap = 3 * size + size // 2  # room for three entries
        entry = fetch_into_cache("org/m3", str(cache), reserve_bytes=0, max_bytes=cap)
        assert entry.stats.evicted == [f"org--m1@{commits['org/m1']}"]
        entry.release()
        present = {p.name for p in (cache / "models").glob("*/[!.]*") if p.is_dir()}
        assert present == {commits["org/m0"], commits["org/m2"], hub.commits["org/m3"]}
        # Everything else in use too: a clear error instead of filling the disk.
        held = [_use(cache, f"org--{r}", hub.commits["org/" + r]) for r in ("m2", "m3")]
        with pytest.raises(CacheError, match="cache size cap"):
            fetch_into_cache("org/m1", str(cache), reserve_bytes=0, max_bytes=cap)
        for lock in [in_use, *held]:
            lock.release()


def test_a_file_hashed_again_and_found_good_is_restamped_so_the_next_start_is_quick(hub, tmp_path):
    """A marker from before identities were recorded (or a file whose identity changed harmlessly, e.g. a
    backup restore): hashed once, found good, downloaded not, and the marker then records its identity."""
    cache = tmp_path / "node-cache"
    first, _ = run_fetch(hub, cache)
    marker = cache / "models" / "org--tiny" / (first["commit"] + ".complete")
    doc = json.loads(marker.read_text())
    for entry in doc["files"]:
        del entry["stamp"]
    marker.write_text(json.dumps(doc))
    hub.reset_counters()
    second, _ = run_fetch(hub, cache)
    assert second["cached"] is True and hub.file_gets == []
    assert all("ctime_ns" in e["stamp"] for e in json.loads(marker.read_text())["files"])
