"""Start `python -m ...` servers from the repo as real processes on loopback ports."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from loopback_support import free_port

from inference_support.stub_sglang import wait_http

REPO = Path(__file__).resolve().parents[2]


def start_module(args: list[str], health_url: str, timeout: float = 30.0, env: dict | None = None) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_http(health_url, timeout)
    except Exception as err:
        proc.kill()
        out = proc.communicate(timeout=5)[0].decode(errors="replace")
        raise RuntimeError(f"{args[0]} did not come up:\n{out[-3000:]}") from err
    return proc


def stop(proc: subprocess.Popen, grace_s: float = 10, after_kill_s: float = 5) -> None:
    """SIGTERM, `grace_s` to exit, then SIGKILL."""
    proc.terminate()
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(after_kill_s)


def start_gateway(
    served: str, upstream: str, *flags: str, health_path: str = "/healthz", env: dict | None = None
) -> tuple[subprocess.Popen, int]:
    """`python -m inference.gateway` serving `served` in front of `upstream` on a free loopback port, with any
    further `flags`; returns the process and its port once `health_path` answers."""
    port = free_port()
    args = ["inference.gateway", "--served-model-name", served, "--upstream", upstream, *flags]
    args += ["--host", "127.0.0.1", "--port", str(port)]
    return start_module(args, f"http://127.0.0.1:{port}{health_path}", env=env), port
