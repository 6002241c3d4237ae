"""Time to serve a new adapter: live (the desired set changes in the pod) against a pod
restart (the launcher's start path with the adapter on its command line), measured side by side.

    python benchmarks/bench_live_adapters.py [--runtime transformers|sglang] [--rounds 3]

Each round, interleaved: (a) on a running stack, write a desired set that adds one adapter and time until
a request naming it answers 200; remove it again; (b) start a fresh stack with the adapter given on the
command line and time until a request naming it answers 200 (what a restart costs before the first request,
weights already on disk). Prints the medians, the spread and restart/live as a ratio. Tiny random model
(tests/real_sglang/tiny_models.py), CPU, loopback only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests" / "real_sglang"), str(REPO / "tests")]  # the harness and its helpers

from harness import SGLANG_CPU_FLAGS, SHIMS, sglang_python  # noqa: E402
from loopback_support import free_port  # noqa: E402
from tiny_models import LLAMA_ADAPTERS, LLAMA_PRESET, build  # noqa: E402

TIMEOUT_S = 600


def _env_and_python(runtime: str) -> tuple[str, dict, list[str]]:
    if runtime == "sglang":
        python = sglang_python()
        if python is None:
            sys.exit("the SGLang venv is not installed: python3 tests/real_sglang/install_sglang.py")
        env = {**os.environ, "SGLANG_USE_CPU_ENGINE": "1", "PYTHONPATH": os.pathsep.join([str(SHIMS), str(REPO)])}
        return python, env, ["--", *SGLANG_CPU_FLAGS]
    return sys.executable, {**os.environ, "PYTHONPATH": str(REPO)}, []


def _start(runtime: str, tiny, work: Path, extra: list[str]) -> tuple[subprocess.Popen, str]:
    python, env, runtime_flags = _env_and_python(runtime)
    env.pop("VIRTUAL_ENV", None)
    port = free_port()
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
        "--port",
        str(port),
        "--runtime-port",
        str(free_port()),
        "--work-dir",
        str(work / "work"),
        *extra,
        *runtime_flags,
    ]
    log = open(work / "stack.log", "ab")  # noqa: SIM115 - kept open for the process's lifetime
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, f"http://127.0.0.1:{port}"


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, 15)
        proc.wait(30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)


def _until_served(url: str, model: str, proc: subprocess.Popen) -> float:
    start = time.monotonic()
    while time.monotonic() - start < TIMEOUT_S:
        if proc.poll() is not None:
            raise RuntimeError(f"the stack exited with {proc.returncode}")
        try:
            r = requests.post(
                f"{url}/v1/completions",
                timeout=60,
                json={"model": model, "prompt": "hello", "max_tokens": 1, "temperature": 0},
            )
            if r.status_code == 200:
                return time.monotonic() - start
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{model} not served within {TIMEOUT_S} s")


def _desired(path: Path, items: list[tuple[str, str]]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"adapters": [{"name": n, "key": k, "strength": 1.0} for n, k in items]}))
    os.replace(tmp, path)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runtime", choices=["transformers", "sglang"], default="transformers")
    p.add_argument("--rounds", type=int, default=3)
    ns = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-live-"))
    try:
        tiny = build(root, "llama", [plan for plan, _ in LLAMA_ADAPTERS.values()])
        files, config = root / "files", root / "config"
        config.mkdir()
        for name in ("fin", "legal"):
            shutil.copytree(tiny.adapters_dir / name, files / name)
            (files / name / ".kaito-complete").write_text("")
        desired = config / "adapters.json"
        _desired(desired, [("fin", "fin")])
        live_dir = root / "live"
        live_dir.mkdir()
        live, url = _start(
            ns.runtime,
            tiny,
            live_dir,
            ["--adapters-dir", str(root / "none"), "--live-adapters", str(desired), "--adapter-files", str(files)],
        )
        model = f"{LLAMA_PRESET}:legal"
        live_s, restart_s = [], []
        try:
            _until_served(url, f"{LLAMA_PRESET}:fin", live)
            for i in range(ns.rounds):
                changed = time.monotonic()
                _desired(desired, [("fin", "fin"), ("legal", "legal")])
                _until_served(url, model, live)
                live_s.append(time.monotonic() - changed)
                _desired(desired, [("fin", "fin")])
                time.sleep(2)  # the removal is done before the next round
                cold = root / f"restart-{i}"
                cold.mkdir()
                proc, cold_url = _start(
                    ns.runtime,
                    tiny,
                    cold,
                    ["--adapters-dir", str(tiny.adapters_dir), "--adapter", "fin", "--adapter", "legal"],
                )
                try:
                    restart_s.append(_until_served(cold_url, model, proc))
                finally:
                    _stop(proc)
        finally:
            _stop(live)
        lm, rm = statistics.median(live_s), statistics.median(restart_s)
        print(f"runtime {ns.runtime}, {ns.rounds} rounds (interleaved)")
        print(
            f"  live (desired set changed -> adapter served): median {lm:.2f} s "
            f"(min {min(live_s):.2f}, max {max(live_s):.2f})"
        )
        print(
            f"  restart (launcher start -> adapter served):   median {rm:.2f} s "
            f"(min {min(restart_s):.2f}, max {max(restart_s):.2f})"
        )
        print(f"  restart / live: {rm / lm:.1f}x")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
