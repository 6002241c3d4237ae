"""The launcher with the node-local weights cache, end to end on CPU: a weights download killed half way
resumes on the next start and the model server then answers; the server holds the entry's `use` lock.

The HuggingFace Hub is the boundary that cannot exist here: tests/weights_support/loopback_hub.py
serves a tiny random Llama over the Hub's HTTP API. The launcher, the downloader (`python -m
inference.weights`, the init container's command), the transformers server and the gateway are real.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("huggingface_hub")

from inference_support.launcher import transformers_launch  # noqa: E402
from inference_support.stub_sglang import free_port, wait_http  # noqa: E402
from tuning_support.tiny import make_tokenizer, tiny_config  # noqa: E402
from weights_support.fetch import fetch_argv  # noqa: E402
from weights_support.loopback_hub import LoopbackHub  # noqa: E402

from inference.weights_cache.locks import EXCLUSIVE, Lock  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration  # loopback servers and subprocesses
MODEL = "org/tiny-llama"


def tiny_llama_files(directory: Path) -> dict[str, bytes]:
    """A random 2-layer Llama whose safetensors (~8 MiB) is big enough to be cut half way."""
    tok = make_tokenizer(str(directory))
    torch.manual_seed(0)
    cfg = tiny_config("llama", tok, hidden_size=256, intermediate_size=1024)
    transformers.LlamaForCausalLM(cfg).save_pretrained(directory)
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}


def test_killed_download_resumes_and_the_server_starts(tmp_path):
    files = tiny_llama_files(tmp_path / "src")
    shard = max(files, key=lambda n: len(files[n]))
    assert shard.endswith(".safetensors") and len(files[shard]) > 6 << 20
    cache = tmp_path / "node-cache"
    with LoopbackHub({MODEL: files}, bytes_per_s=2 << 20) as hub:
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_TELEMETRY": "1"}
        init = subprocess.Popen(
            fetch_argv(MODEL, cache, tmp_path / "term"),
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        partial = cache / "models" / "org--tiny-llama" / hub.commits[MODEL] / ".partial" / f"{shard}.part"
        deadline = time.monotonic() + 60
        while not partial.exists() or partial.stat().st_size < len(files[shard]) // 2:
            assert time.monotonic() < deadline and init.poll() is None, init.communicate()[1]
            time.sleep(0.05)
        init.send_signal(signal.SIGKILL)  # the pod dies half way (probe, OOM, eviction)
        init.wait(10)
        half = hub.body_bytes
        hub.bytes_per_s = None
        hub.reset_counters()

        port, rport = free_port(), free_port()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                *transformers_launch(
                    "tiny",
                    tmp_path / "unused",
                    tmp_path / "adapters",
                    port,
                    rport,
                    tmp_path / "work",
                    "--model",
                    MODEL,
                    "--weights-cache",
                    str(cache),
                ),
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            try:
                wait_http(f"http://127.0.0.1:{port}/health", 120)
            except Exception:  # noqa: BLE001 - any failure to come up: show the server output
                proc.kill()
                raise RuntimeError(proc.communicate(timeout=5)[0].decode(errors="replace")[-3000:]) from None
            resumed = [r for p, r in hub.file_gets if p == shard]
            assert resumed and resumed[0] and int(resumed[0].split("=")[1].split("-")[0]) > 0, hub.file_gets
            assert hub.body_bytes < sum(map(len, files.values())) - half // 2  # only the rest was fetched
            r = requests.post(
                f"http://127.0.0.1:{port}/v1/chat/completions",
                timeout=60,
                json={"model": "tiny", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4},
            )
            assert r.status_code == 200, r.text
            commit = hub.commits[MODEL]
            use_lock = Lock(str(cache / "models" / "org--tiny-llama" / ".locks" / f"{commit}.use"))
            try:  # the server (the launcher's exec) holds it shared
                assert not use_lock.try_lock(EXCLUSIVE)
            finally:
                use_lock.release()
            marker = json.loads((cache / "models" / "org--tiny-llama" / f"{commit}.complete").read_text())
            assert sorted(f["path"] for f in marker["files"]) == sorted(files)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
