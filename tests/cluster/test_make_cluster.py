"""`make cluster` / `make cluster-down` (tests/cluster/up.py) as the README walks through it: start in the
background, use the printed KUBECONFIG/PATH, apply quick start 1 and watch it become ready (the AKS
simulator turns the agent pool into a Node by itself), delete it, stop everything."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from operator_stack import METACONTROLLER_SOURCE, REPO

UP = Path(__file__).resolve().parent / "up.py"


def test_make_cluster_walkthrough(built, tmp_path):
    if not (built / "bin" / "metacontroller").exists():
        pytest.skip(
            f"{METACONTROLLER_SOURCE} is absent (../shared, the reference folder beside the checkout, is not there)"
        )
    env = {**os.environ, "KAITO_CLUSTER_STATE": str(tmp_path / "state")}
    started = subprocess.run(
        [sys.executable, str(UP), "start"], env=env, capture_output=True, text=True, timeout=900, check=False
    )
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        exported = re.search(r"^export KUBECONFIG=(\S+) PATH=(\S+):\$PATH$", started.stdout, re.M)
        assert exported, started.stdout
        user_env = {**env, "KUBECONFIG": exported[1], "PATH": f"{exported[2]}:{env['PATH']}"}

        def kubectl(*args: str) -> str:
            out = subprocess.run(
                ["kubectl", *args], env=user_env, capture_output=True, text=True, timeout=60, check=False
            )
            assert out.returncode == 0, out.stderr
            return out.stdout

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
    except AssertionError as failure:
        logs = sorted((tmp_path / "state").glob("**/*.log"))
        tails = "\n".join(f"===== {p.name} =====\n{p.read_text(errors='replace')[-3000:]}" for p in logs)
        raise AssertionError(f"{failure}\n{tails}") from None
    finally:
        pid = (tmp_path / "state" / "pid").read_text() if (tmp_path / "state" / "pid").exists() else None
        stopped = subprocess.run(
            [sys.executable, str(UP), "stop"], env=env, capture_output=True, text=True, timeout=120, check=False
        )
    assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stdout + stopped.stderr
    if pid:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
