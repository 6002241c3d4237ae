"""Live adapters on a running model server: added, removed and re-weighted without a restart.

The stack is started by the launcher in live mode (`--live-adapters FILE --adapter-files DIR`), as the
Workspace pod runs it; the test then changes the desired set the way the hook's ConfigMap does, and puts
adapter files where the node's fetch pod would (the kubelet pulling the adapter image and our copy
program are the parts that cannot run here: for the image step the test pulls a FROM-scratch adapter
image from a real local registry with skopeo and unpacks its layer). After each step every answer
through the gateway equals transformers+peft for the intended adapter set, the model server is the
same process, and requests to adapters that did not change all succeed during the change.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest
import requests
from harness import SGLANG_CPU_FLAGS, SHIMS, Stack, sglang_python
from loopback_support import free_port
from tiny_models import LLAMA_PRESET

pytestmark = pytest.mark.live_adapters

REPO = Path(__file__).resolve().parents[2]
PROMPT = "the quick brown fox"
N = 10
CHANGE_TIMEOUT_S = 120


def _put_files(files_root: Path, key: str, adapter_dir: Path) -> None:
    """What the node's fetch pod does: the adapter's files under <key>/, the completion marker last."""
    dest = files_root / key
    shutil.copytree(adapter_dir, dest)
    (dest / ".kaito-complete").write_text("")


def _write_desired(path: Path, adapters: list[tuple[str, str, float]]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"adapters": [{"name": n, "key": k, "strength": s} for n, k, s in adapters]}))
    os.replace(tmp, path)  # kubelet swaps ConfigMap files atomically (a symlink flip)


class Live:
    def __init__(self, stack: Stack, desired: Path, files: Path, work: Path):
        self.stack, self.desired, self.files, self.work = stack, desired, files, work

    def adapters(self) -> dict:
        return requests.get(f"{self.stack.url}/adapters", timeout=30).json()

    def wait_states(self, expected: dict[str, str]) -> dict:
        deadline = time.monotonic() + CHANGE_TIMEOUT_S
        report: dict = {}
        while time.monotonic() < deadline:
            report = self.adapters()
            states = {a["name"]: a["state"] for a in report["adapters"]}
            as_expected = all(states.get(n) == s for n, s in expected.items())
            if as_expected and set(states) <= set(expected) | {"combined"} and report.get("synced"):
                return report
            time.sleep(0.5)
        raise AssertionError(
            f"adapter states not {expected} within {CHANGE_TIMEOUT_S} s: {report}\n{self.stack.log_tail(4000)}"
        )

    def complete(self, model: str) -> requests.Response:
        return requests.post(
            f"{self.stack.url}/v1/completions",
            timeout=300,
            json={"model": model, "prompt": PROMPT, "max_tokens": N, "temperature": 0},
        )

    def text(self, model: str) -> str:
        r = self.complete(model)
        assert r.status_code == 200, r.text
        body = r.json()
        expected = model if ":" in model else f"{LLAMA_PRESET}:{model}"  # a bare adapter name comes back qualified
        assert body["model"] == expected, "the client's model name comes back, not the runtime's internal one"
        return body["choices"][0]["text"]


def _start(runtime: str, tiny, tmp: Path) -> Live:
    desired, files, work = tmp / "config" / "adapters.json", tmp / "files", tmp / "work"
    for d in (desired.parent, files, work, tmp / "mounted-adapters"):
        d.mkdir(parents=True)
    _put_files(files, "fin-v1", tiny.adapters_dir / "fin")
    _write_desired(desired, [("fin", "fin-v1", 1.0)])
    port, runtime_port = free_port(), free_port()
    if runtime == "sglang":
        python = sglang_python()
        env = {**os.environ, "SGLANG_USE_CPU_ENGINE": "1", "PYTHONPATH": os.pathsep.join([str(SHIMS), str(REPO)])}
        extra = ["--", *SGLANG_CPU_FLAGS]
    else:
        python, env, extra = sys.executable, {**os.environ, "PYTHONPATH": str(REPO)}, []
    env.pop("VIRTUAL_ENV", None)
    argv = [
        python,
        "-m",
        "inference.launch",
        "--runtime",
        runtime,
        "--served-model-name",
        LLAMA_PRESET,
        "--weights-dir",
        str(tiny.weights_dir),
        "--adapters-dir",
        str(tmp / "mounted-adapters"),
        "--live-adapters",
        str(desired),
        "--adapter-files",
        str(files),
        "--max-lora-rank",
        "32",
        "--port",
        str(port),
        "--runtime-port",
        str(runtime_port),
        "--work-dir",
        str(work),
        *extra,
    ]
    log_path = tmp / f"{runtime}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    stack = Stack(runtime, f"http://127.0.0.1:{port}", LLAMA_PRESET, proc, log_path, argv, 0.0)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{runtime} live stack exited with {proc.returncode}\n{stack.log_tail()}")
        try:
            if requests.get(f"{stack.url}/health", timeout=30).status_code == 200:
                return Live(stack, desired, files, work)
        except requests.RequestException:
            pass
        time.sleep(1)
    stack.stop()
    raise RuntimeError(f"{runtime} live stack not healthy in 300 s\n{stack.log_tail()}")


RUNTIMES = [pytest.param("sglang", marks=pytest.mark.real_sglang), "transformers"]


@pytest.fixture(scope="module", params=RUNTIMES)
def live(request, tiny_llama, tmp_path_factory):
    if request.param == "sglang" and sglang_python() is None:
        pytest.skip("the SGLang venv is not installed (python3 tests/real_sglang/install_sglang.py)")
    lv = _start(request.param, tiny_llama, tmp_path_factory.mktemp(f"live-{request.param}"))
    try:
        yield lv
    finally:
        lv.stack.stop()


def _hammer(live: Live, model: str, expected: set[str], stop: threading.Event, failures: list) -> None:
    """Requests to an adapter during a change: each must succeed with one of the expected answers."""
    while not stop.is_set():
        try:
            r = live.complete(model)
            if r.status_code != 200 or r.json()["choices"][0]["text"] not in expected:
                failures.append((r.status_code, r.text[:300]))
        except requests.RequestException as e:
            failures.append(("error", str(e)))


def _during(live: Live, model: str, expected: set[str]):
    stop, failures = threading.Event(), []
    thread = threading.Thread(target=_hammer, args=(live, model, expected, stop, failures), daemon=True)
    thread.start()
    return stop, thread, failures


def test_adapters_change_live_without_restarting_the_model_server(live, tiny_llama, llama_ref, tmp_path):
    ref = lambda *mix: llama_ref.complete(PROMPT, N, tuple(mix))["text"]  # noqa: E731
    pid = live.stack.proc.pid
    model = lambda name: f"{LLAMA_PRESET}:{name}"  # noqa: E731

    # 1. started with fin: served before the pod reported healthy
    live.wait_states({"fin": "Ready"})
    fin = ref(("fin", 1.0))
    assert live.text(model("fin")) == fin
    assert live.text("fin") == fin  # Kaito's bare adapter name too

    # 2. add legal while fin is in use
    _put_files(live.files, "legal-v1", tiny_llama.adapters_dir / "legal")
    stop, thread, failures = _during(live, model("fin"), {fin})
    _write_desired(live.desired, [("fin", "fin-v1", 1.0), ("legal", "legal-v1", 1.0)])
    live.wait_states({"fin": "Ready", "legal": "Ready"})
    stop.set()
    thread.join(300)
    assert not failures, failures
    assert live.text(model("legal")) == ref(("legal", 1.0))
    assert live.text(model("fin")) == fin
    chat = requests.post(
        f"{live.stack.url}/chat",
        timeout=300,
        json={
            "prompt": PROMPT,
            "generate_kwargs": {"max_new_tokens": N, "do_sample": False},
            "return_full_text": False,
        },
    ).json()
    assert chat["Result"] == ref(("fin", 1.0), ("legal", 1.0)), "/chat applies all adapters at their strengths"

    # 3. re-weight fin to 0.5: its name never fails and never serves anything but the old or new weights
    fin_half = ref(("fin", 0.5))
    assert fin_half != fin
    stop, thread, failures = _during(live, model("fin"), {fin, fin_half})
    legal_stop, legal_thread, legal_failures = _during(live, model("legal"), {ref(("legal", 1.0))})
    _write_desired(live.desired, [("fin", "fin-v1", 0.5), ("legal", "legal-v1", 1.0)])
    deadline = time.monotonic() + CHANGE_TIMEOUT_S
    while live.text(model("fin")) != fin_half and time.monotonic() < deadline:
        time.sleep(0.5)
    for s, t in ((stop, thread), (legal_stop, legal_thread)):
        s.set()
        t.join(300)
    assert not failures and not legal_failures, (failures, legal_failures)
    assert live.text(model("fin")) == fin_half

    # 4. remove legal: refused by name, gone from the model list and from disk
    _write_desired(live.desired, [("fin", "fin-v1", 0.5)])
    live.wait_states({"fin": "Ready"})
    r = live.complete(model("legal"))
    assert r.status_code == 400 and "legal" in r.text
    ids = [m["id"] for m in requests.get(f"{live.stack.url}/v1/models", timeout=30).json()["data"]]
    assert model("legal") not in ids and model("fin") in ids
    served_copies = os.listdir(live.work / "live")
    assert not [d for d in served_copies if d.startswith("legal.")], served_copies
    assert len([d for d in served_copies if d.startswith("fin.")]) == 1, "the old fin copy is deleted too"

    # 5. an adapter from a FROM-scratch image in a real local registry
    key = _fetch_from_registry(tiny_llama.adapters_dir / "legal", live.files, tmp_path)
    _write_desired(live.desired, [("fin", "fin-v1", 0.5), ("from-image", key, 1.0)])
    live.wait_states({"fin": "Ready", "from-image": "Ready"})
    assert live.text(model("from-image")) == ref(("legal", 1.0))

    # 6. an adapter the running server has no room for fails with a message saying what to change
    big = tmp_path / "big"
    shutil.copytree(tiny_llama.adapters_dir / "fin", big)
    cfg = json.loads((big / "adapter_config.json").read_text())
    (big / "adapter_config.json").write_text(json.dumps({**cfg, "r": 64}))
    _put_files(live.files, "big-v1", big)
    _write_desired(live.desired, [("fin", "fin-v1", 0.5), ("from-image", key, 1.0), ("big", "big-v1", 1.0)])
    report = live.wait_states({"fin": "Ready", "from-image": "Ready", "big": "Failed"})
    big_state = next(a for a in report["adapters"] if a["name"] == "big")
    assert "max-lora-rank" in big_state["message"] and "restarts" in big_state["message"]

    assert live.stack.proc.poll() is None and live.stack.proc.pid == pid, "the model server was not restarted"
    os.kill(pid, 0)


def _fetch_from_registry(adapter_dir: Path, files_root: Path, tmp: Path) -> str:
    """Push the adapter as the tuning job does (a FROM-scratch image), then play the node's fetch pod:
    pull it with skopeo and unpack its layer's data/ into <files>/<key>/."""
    registry_support = pytest.importorskip("tuning_support.registry")
    if registry_support.SKOPEO_BIN is None or registry_support.REGISTRY_BIN is None:
        pytest.skip("docker-registry/skopeo not installed (make test-setup installs them as root)")
    from tuning.push import push

    source = tmp / "adapter-src"
    shutil.copytree(adapter_dir, source)
    (tmp / "registry").mkdir()
    with registry_support.running_registry(str(tmp / "registry")) as reg:
        image = f"{reg['host']}/adapters/live:0.0.1"
        push(str(source), image, plain_http=True, require_marker=False)
        oci = tmp / "oci"
        out = registry_support.skopeo("copy", "--src-tls-verify=false", f"docker://{image}", f"oci:{oci}:live")
        assert out.returncode == 0, out.stderr
    index = json.loads((oci / "index.json").read_text())
    manifest_digest = index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads((oci / "blobs" / "sha256" / manifest_digest).read_text())
    key = "img-" + manifest_digest[:16]
    dest = files_root / key
    dest.mkdir()
    for layer in manifest["layers"]:
        with tarfile.open(oci / "blobs" / "sha256" / layer["digest"].split(":")[1]) as tar:
            for member in tar.getmembers():
                if member.isfile() and member.name.startswith("data/"):
                    member.name = member.name[len("data/") :]
                    tar.extract(member, dest, filter="data")
    (dest / ".kaito-complete").write_text("")
    return key
