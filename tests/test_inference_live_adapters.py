"""The live-adapter agent's order of operations, with a recording runtime (the real servers run in
tests/real_sglang/test_live_adapters.py): a name is published only once its copy is loaded, and
unloaded only after the mapping no longer points at it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("safetensors")

from inference.gateway.stream import ModelRenamer
from inference.gateway.translation import Served, model_entry, resolve_model
from inference.live_adapters import FILES_COMPLETE, Agent, Capacity, Published
from inference.live_adapters_runner import served_from


def _adapter(dest: Path, rank: int = 4) -> None:
    import torch
    from safetensors.torch import save_file

    dest.mkdir(parents=True)
    save_file(
        {
            "base_model.model.layers.0.q_proj.lora_A.weight": torch.ones(rank, 8),
            "base_model.model.layers.0.q_proj.lora_B.weight": torch.ones(8, rank),
        },
        str(dest / "adapter_model.safetensors"),
    )
    (dest / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": rank, "lora_alpha": 8, "target_modules": ["q_proj"]})
    )
    (dest / FILES_COMPLETE).write_text("")


class Recorder:
    def __init__(self):
        self.events: list[tuple] = []
        self.loaded: set[str] = set()

    def load(self, internal, path):
        assert Path(path).exists()
        self.loaded.add(internal)
        self.events.append(("load", internal))

    def unload(self, internal):
        self.loaded.discard(internal)
        self.events.append(("unload", internal))

    def publish(self, published: Published):
        for internal in published.names.values():
            assert internal in self.loaded, f"published {internal} before it was loaded"
        self.events.append(("publish", dict(published.names)))


@pytest.fixture
def agent(tmp_path):
    rec = Recorder()
    desired = tmp_path / "adapters.json"
    a = Agent(
        str(desired),
        str(tmp_path / "files"),
        str(tmp_path / "work"),
        Capacity(max_rank=16),
        rec.load,
        rec.unload,
        rec.publish,
    )
    return a, rec, desired, tmp_path


def _want(path: Path, *items):
    path.write_text(json.dumps({"adapters": [{"name": n, "key": k, "strength": s} for n, k, s in items]}))


def test_reweight_loads_the_new_copy_before_the_old_one_goes(agent):
    a, rec, desired, tmp = agent
    _adapter(tmp / "files" / "k1")
    _want(desired, ("fin", "k1", 1.0))
    a.reconcile()
    assert a.published().names == {"fin": "fin.1"}
    _want(desired, ("fin", "k1", 0.5))
    a.reconcile()
    assert rec.events[-3:] == [("load", "fin.2"), ("publish", {"fin": "fin.2"}), ("unload", "fin.1")]
    assert not (tmp / "work" / "fin.1").exists() and (tmp / "work" / "fin.2").exists()


def test_removal_unpublishes_before_unloading_and_deletes_the_copy(agent):
    a, rec, desired, tmp = agent
    _adapter(tmp / "files" / "k1")
    _adapter(tmp / "files" / "k2")
    _want(desired, ("fin", "k1", 1.0), ("legal", "k2", 1.0))
    a.reconcile()
    assert a.published().chat_default == "combined"
    _want(desired, ("fin", "k1", 1.0))
    a.reconcile()
    i = rec.events.index(("unload", "legal.2"))
    assert "legal" not in rec.events[i - 1][1], "the name left the mapping before the runtime unloaded it"
    assert a.published() == Published({"fin": "fin.1"}, "fin")
    assert sorted(p.name for p in (tmp / "work").iterdir()) == ["fin.1"]


def test_files_not_there_yet_is_pending_and_an_oversized_adapter_fails_with_what_to_change(agent):
    a, rec, desired, tmp = agent
    _adapter(tmp / "files" / "big", rank=32)
    _want(desired, ("late", "nope", 1.0), ("big", "big", 1.0))
    a.reconcile()
    states = {s.name: s for s in a.states.values()}
    assert states["late"].state == "Pending" and not a.synced
    assert states["big"].state == "Failed" and "--max-lora-rank 16" in states["big"].message
    assert not rec.events, "nothing was loaded"


def test_gateway_maps_live_names_both_ways():
    served = served_from(Served("phi"), Published({"fin": "fin.3"}, "fin"))
    assert resolve_model("phi:fin", served) == "phi:fin.3" and resolve_model("fin", served) == "phi:fin.3"
    assert model_entry(served, 0, "phi:fin")["id"] == "phi:fin"
    rename = ModelRenamer(served.client_model_names())
    body = b'data: {"model":"phi:fin.3","x":1}\n\ndata: {"model":"phi:fin.3"}\n\n'
    out = b"".join(rename(body[i : i + 5]) for i in range(0, len(body), 5)) + rename.flush()
    assert out == body.replace(b"fin.3", b"fin")


def test_pod_report_is_patched_into_the_pods_annotation_once_per_change(agent, tmp_path):
    """The report reaches the hook as this pod's annotation: a merge patch with the pod-bound token (a loopback
    HTTP server stands in for the API server here; tests/cluster checks the admission policy on the real one)."""
    import http.server
    import threading

    from inference.live_adapters_runner import PodReporter

    seen = []

    class Api(http.server.BaseHTTPRequestHandler):
        def do_PATCH(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen.append((self.path, self.headers["Authorization"], self.headers["Content-Type"], json.loads(body)))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Api)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        tokens = tmp_path / "token-dir"
        tokens.mkdir()
        for name, value in {"token": "t0k", "namespace": "ns1", "pod-name": "ws1-abc"}.items():
            (tokens / name).write_text(value + "\n")
        reporter = PodReporter(str(tokens), f"http://127.0.0.1:{server.server_address[1]}")
        a, _, desired, tmp = agent
        _adapter(tmp / "files" / "k1")
        desired.write_text(json.dumps({"adapters": [{"name": "fin", "key": "k1", "strength": 1.0}], "revision": "r1"}))
        a.reconcile()
        reporter.report(a.report())
        reporter.report(a.report())  # unchanged: no second write
        assert len(seen) == 1
        path, auth, ctype, body = seen[0]
        assert path == "/api/v1/namespaces/ns1/pods/ws1-abc" and auth == "Bearer t0k"
        assert ctype == "application/merge-patch+json"
        report = json.loads(body["metadata"]["annotations"]["kaito.sh/adapters"])
        assert report["revision"] == "r1" and report["adapters"] == [{"name": "fin", "state": "Ready"}]
    finally:
        server.shutdown()
        server.server_close()


def _break(kind: str, folder: Path, secret_dir: Path) -> None:
    """A broken adapter image, as kaito-copy would leave it on the node (it keeps symlinks as they are)."""
    if kind == "config-to-dev-zero":
        (folder / "adapter_config.json").unlink()
        (folder / "adapter_config.json").symlink_to("/dev/zero")
    elif kind == "directory-symlink":
        (folder / "extra").symlink_to(secret_dir, target_is_directory=True)
    elif kind == "oversized-file":  # sparse: 9 GiB on paper, nothing on disk; refused before a byte is read
        with open(folder / "adapter_model.safetensors", "r+b") as f:
            f.truncate(9 << 30)
    elif kind == "folder-is-a-symlink":
        real = folder.parent / "elsewhere"
        folder.rename(real)
        folder.symlink_to(real, target_is_directory=True)
    elif kind == "fifo":
        os.mkfifo(folder / "adapter_model.bin")
    elif kind == "not-a-tensor-file":
        (folder / "adapter_model.safetensors").write_bytes(b"\xff" * 64)


@pytest.mark.parametrize(
    ("kind", "reason", "says"),
    [
        ("config-to-dev-zero", "UnsafeFiles", "adapter_config.json is a symbolic link"),
        ("directory-symlink", "UnsafeFiles", "extra is a symbolic link"),
        ("oversized-file", "UnsafeFiles", "more than the 8589934592 allowed per file"),
        ("folder-is-a-symlink", "UnsafeFiles", "is a symbolic link"),
        ("fifo", "UnsafeFiles", "adapter_model.bin is not a regular file"),
        ("not-a-tensor-file", "InvalidAdapter", "while preparing the adapter"),
    ],
)
def test_a_broken_adapter_fails_alone_with_its_reason_and_the_others_keep_serving(agent, kind, reason, says):
    a, rec, desired, tmp = agent
    secret_dir = tmp / "token-stand-in"
    secret_dir.mkdir()
    (secret_dir / "token").write_text("s3cret")
    _adapter(tmp / "files" / "good")
    _adapter(tmp / "files" / "bad")
    _break(kind, tmp / "files" / "bad", secret_dir)
    _want(desired, ("fin", "good", 1.0), ("evil", "bad", 1.0))
    a.reconcile()
    states = {s.name: s for s in a.states.values()}
    assert states["fin"].state == "Ready"
    assert states["evil"].state == "Failed" and states["evil"].reason == reason, states["evil"]
    assert says in states["evil"].message, states["evil"].message
    assert a.published() == Published({"fin": "fin.1"}, "fin")
    copied = [p for p in (tmp / "work").rglob("*")]
    assert not any(p.name == "token" or p.is_symlink() for p in copied), copied
    assert sorted(p.name for p in (tmp / "work").iterdir()) == ["fin.1"]  # no leftover snapshot or copy
    events = len(rec.events)
    a.reconcile()  # the same broken files are not tried again on every poll
    assert len(rec.events) == events and a.states["evil"].state == "Failed"
