"""`make cluster` / `make cluster-down` (tests/cluster/up.py) as the README walks through it: start in the
background, use the printed KUBECONFIG/PATH, apply quick start 1 and watch it become ready (the AKS
simulator turns the agent pool into a Node by itself), delete it, stop everything."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from operator_stack import METACONTROLLER_SOURCE, REPO

UP = Path(__file__).resolve().parent / "up.py"


@dataclass
class MadeCluster:
    """A `make cluster` started as the README says; `stopped` and `pid` are filled in when it is stopped."""

    env: dict[str, str]
    user_env: dict[str, str] = field(default_factory=dict)
    pid: str | None = None
    stopped: subprocess.CompletedProcess | None = None

    def kubectl(self, *args: str) -> str:
        out = subprocess.run(
            ["kubectl", *args], env=self.user_env, capture_output=True, text=True, timeout=60, check=False
        )
        assert out.returncode == 0, out.stderr
        return out.stdout


@contextlib.contextmanager
def made_cluster(tmp_path: Path) -> Iterator[MadeCluster]:
    """`up.py start`, the printed KUBECONFIG/PATH as the user's environment, `up.py stop` at the end; a failed
    assertion inside gets the end of every component's log."""
    made = MadeCluster(env={**os.environ, "KAITO_CLUSTER_STATE": str(tmp_path / "state")})
    started = subprocess.run(
        [sys.executable, str(UP), "start"], env=made.env, capture_output=True, text=True, timeout=900, check=False
    )
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        exported = re.search(r"^export KUBECONFIG=(\S+) PATH=(\S+):\$PATH$", started.stdout, re.M)
        assert exported, started.stdout
        made.user_env = {**made.env, "KUBECONFIG": exported[1], "PATH": f"{exported[2]}:{made.env['PATH']}"}
        yield made
    except AssertionError as failure:
        logs = sorted((tmp_path / "state").glob("**/*.log"))
        tails = "\n".join(f"===== {p.name} =====\n{p.read_text(errors='replace')[-3000:]}" for p in logs)
        raise AssertionError(f"{failure}\n{tails}") from None
    finally:
        pid_file = tmp_path / "state" / "pid"
        made.pid = pid_file.read_text() if pid_file.exists() else None
        made.stopped = subprocess.run(
            [sys.executable, str(UP), "stop"], env=made.env, capture_output=True, text=True, timeout=120, check=False
        )


def test_make_cluster_walkthrough(built, tmp_path):
    if not (built / "bin" / "metacontroller").exists():
        pytest.skip(
            f"{METACONTROLLER_SOURCE} is absent (../shared, the reference folder beside the checkout, is not there)"
        )
    with made_cluster(tmp_path) as made:
        kubectl = made.kubectl
        kubectl("apply", "-f", str(REPO / "examples" / "inference-phi-3.yaml"))
        deadline, columns = time.monotonic() + 240, ""
        while time.monotonic() < deadline:
            columns = kubectl("get", "workspace", "workspace-phi-3-mini")
            if columns.split("\n")[1].split()[2:5] == ["True", "True", "True"]:
                break
            time.sleep(2)
        assert columns.split("\n")[1].split()[2:5] == ["True", "True", "True"], columns
        node = json.loads(kubectl("get", "nodes", "-o", "json"))["items"][0]
        assert node["status"]["allocatable"]["nvidia.com/gpu"] == "1"

        kubectl("delete", "workspace", "workspace-phi-3-mini", "--timeout=120s")
        deadline = time.monotonic() + 120
        while json.loads(kubectl("get", "machines", "-A", "-o", "json"))["items"] and time.monotonic() < deadline:
            time.sleep(2)
        assert not json.loads(kubectl("get", "machines", "-A", "-o", "json"))["items"]
    stopped = made.stopped
    assert stopped is not None and stopped.returncode == 0 and "stopped" in stopped.stdout, (
        stopped.stdout + stopped.stderr if stopped else None
    )
    if made.pid:
        pid = made.pid
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]


@pytest.mark.scale_to_zero
def test_make_cluster_front_wakes_a_workspace_scaled_to_zero(built, tmp_path):
    """The README's scale-to-zero walkthrough on `make cluster`: `up.py front` runs the Workspace's front and the
    stand-in model server; `kubectl scale --replicas=0` releases the Machine; a curl to the front waits while
    the Workspace wakes (SCALE Waking), and is answered once it serves again."""
    if not (built / "bin" / "metacontroller").exists():
        pytest.skip(f"{METACONTROLLER_SOURCE} is absent")
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import threading

    import requests

    example = REPO / "examples" / "scale-to-zero" / "workspace-phi-3-scale-to-zero.yaml"
    name = "workspace-phi-3-scale-to-zero"
    front = None
    with made_cluster(tmp_path) as made:
        env, kubectl = made.env, made.kubectl

        def scale_column() -> str:
            header, row = kubectl("get", "workspace", name).split("\n")[:2]
            return dict(zip(header.split(), row.split(), strict=False)).get("SCALE", "")

        def until(what: str, probe, timeout: float) -> None:
            deadline = time.monotonic() + timeout
            while not probe():
                assert time.monotonic() < deadline, f"timed out waiting for {what}"
                time.sleep(2)

        kubectl("apply", "-f", str(example))
        until("the Workspace Serving", lambda: scale_column() == "Serving", 240)
        try:
            front = subprocess.Popen(
                [sys.executable, str(UP), "front", "--workspace", name],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            assert front.stdout is not None
            url = None
            for line in front.stdout:
                if found := re.search(r"curl (http://127\.0\.0\.1:\d+)/v1/chat/completions", line):
                    url = found[1]
                    break
            assert url, f"up.py front printed no URL (exit {front.poll()})"
            threading.Thread(target=front.stdout.read, daemon=True).start()  # keep its pipe drained

            def front_answers() -> bool:
                try:
                    return requests.get(f"{url}/healthz", timeout=2).ok
                except requests.ConnectionError:
                    return False

            until("the front", front_answers, 60)

            kubectl("scale", "workspace", name, "--replicas=0")
            until(
                "the Machine released", lambda: not json.loads(kubectl("get", "machines", "-o", "json"))["items"], 240
            )
            until("SCALE ScaledToZero", lambda: scale_column() == "ScaledToZero", 120)

            answer: dict = {}

            def curl() -> None:
                body = {
                    "model": "phi-3-mini-4k-instruct",
                    "messages": [{"role": "user", "content": "hi"}],
                    "max_tokens": 4,
                }
                reply = requests.post(f"{url}/v1/chat/completions", json=body, timeout=500)
                answer["status"], answer["body"] = reply.status_code, reply.text

            client = threading.Thread(target=curl)
            client.start()
            until("SCALE Waking", lambda: scale_column() == "Waking", 60)
            assert not answer  # held while the Workspace wakes
            client.join(480)
            assert answer.get("status") == 200, answer
            assert json.loads(answer["body"])["choices"][0]["message"]["content"]
            until("SCALE Serving", lambda: scale_column() == "Serving", 60)
            assert len(json.loads(kubectl("get", "machines", "-o", "json"))["items"]) == 1
        finally:
            if front is not None and front.poll() is None:
                front.send_signal(signal.SIGINT)
                front.wait(60)
    assert front is not None and front.returncode == 0
