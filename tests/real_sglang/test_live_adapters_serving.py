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
import tarfile
import threading
import time
from pathlib import Path

import pytest
import requests
from harness import Stack, put_adapter_files, sglang_python, start_live_stack, wait_healthy, write_desired
from tiny_models import LLAMA_PRESET

pytestmark = pytest.mark.live_adapters

REPO = Path(__file__).resolve().parents[2]
PROMPT = "the quick brown fox"
N = 10
CHANGE_TIMEOUT_S = 120


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
    put_adapter_files(files, "fin-v1", tiny.adapters_dir / "fin")
    write_desired(desired, [("fin", "fin-v1", 1.0)])
    args = ["--adapters-dir", str(tmp / "mounted-adapters"), "--live-adapters", str(desired)]
    args += ["--adapter-files", str(files), "--max-lora-rank", "32"]
    stack = wait_healthy(start_live_stack(runtime, LLAMA_PRESET, tiny.weights_dir, tmp, args), 300)
    return Live(stack, desired, files, work)


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
    put_adapter_files(live.files, "legal-v1", tiny_llama.adapters_dir / "legal")
    stop, thread, failures = _during(live, model("fin"), {fin})
    write_desired(live.desired, [("fin", "fin-v1", 1.0), ("legal", "legal-v1", 1.0)])
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
    write_desired(live.desired, [("fin", "fin-v1", 0.5), ("legal", "legal-v1", 1.0)])
    deadline = time.monotonic() + CHANGE_TIMEOUT_S
    while live.text(model("fin")) != fin_half and time.monotonic() < deadline:
        time.sleep(0.5)
    for s, t in ((stop, thread), (legal_stop, legal_thread)):
        s.set()
        t.join(300)
    assert not failures and not legal_failures, (failures, legal_failures)
    assert live.text(model("fin")) == fin_half

    # 4. remove legal: refused by name, gone from the model list and from disk
    write_desired(live.desired, [("fin", "fin-v1", 0.5)])
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
    write_desired(live.desired, [("fin", "fin-v1", 0.5), ("from-image", key, 1.0)])
    live.wait_states({"fin": "Ready", "from-image": "Ready"})
    assert live.text(model("from-image")) == ref(("legal", 1.0))

    # 6. an adapter the running server has no room for fails with a message saying what to change
    big = tmp_path / "big"
    shutil.copytree(tiny_llama.adapters_dir / "fin", big)
    cfg = json.loads((big / "adapter_config.json").read_text())
    (big / "adapter_config.json").write_text(json.dumps({**cfg, "r": 64}))
    put_adapter_files(live.files, "big-v1", big)
    write_desired(live.desired, [("fin", "fin-v1", 0.5), ("from-image", key, 1.0), ("big", "big-v1", 1.0)])
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
