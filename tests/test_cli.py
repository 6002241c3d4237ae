"""`python -m hooks render` as a user runs it: YAML on stdout, status on stderr, exit codes, light imports."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from workspace_support import PHI3_CHILD_KINDS, REPO, render_cli

pytestmark = pytest.mark.integration  # runs `python -m hooks` as a process


def test_render_prints_children_as_a_yaml_stream_and_status_on_stderr():
    out = render_cli("examples/inference-phi-3.yaml")
    assert out.returncode == 0, out.stderr
    docs = list(yaml.safe_load_all(out.stdout))
    assert [d["kind"] for d in docs] == PHI3_CHILD_KINDS
    assert "&id" not in out.stdout  # no YAML anchors for a human to untangle
    assert "workspace-phi-3-mini: ResourceReady=False" in out.stderr
    assert "runtime transformers" in out.stderr


def test_render_byo_mode_has_no_machines():
    out = render_cli("examples/inference-phi-3.yaml", "--node-provisioning", "byo")
    assert out.returncode == 0
    assert "Machine" not in [d["kind"] for d in yaml.safe_load_all(out.stdout)]


def test_render_invalid_workspace_exits_2_with_one_line_per_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kaito.sh/v1alpha1",
                "kind": "Workspace",
                "metadata": {"name": "bad"},
                "resource": {"instanceType": "Standard_NC24ads_A100_v4", "labelSelector": {"matchLabels": {"a": "b"}}},
                "tuning": {
                    "preset": {"name": "phi-3-mini-128k-instruct"},
                    "method": "qlora",
                    "input": {"urls": ["http://169.254.169.254/latest/meta-data"]},
                    "output": {"image": "<YOUR_IMAGE>"},
                },
            }
        )
    )
    out = render_cli(str(bad))
    assert out.returncode == 2
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert any(line.startswith("bad: tuning.input.urls[0]:") for line in lines), lines
    assert any(line.startswith("bad: tuning.output.image:") for line in lines), lines
    assert any(line.startswith("bad: tuning.output.imagePushSecret:") for line in lines), lines


def test_render_unreadable_file_exits_2(tmp_path):
    out = render_cli(str(tmp_path / "missing.yaml"))
    assert out.returncode == 2 and "missing.yaml" in out.stderr


def test_cli_and_hook_server_import_nothing_heavy():
    code = (
        "import sys, hooks.cli.main, hooks.server.app, hooks.workspace.sync, hooks.machine.sync, hooks.machine.arm_client\n"
        "hooks.cli.main.main(['render', 'examples/inference-phi-3-with-adapters.yaml'])\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'sglang', 'transformers', 'peft', 'azure', 'bitsandbytes'})\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )
    assert "HEAVY []" in out.stderr, out.stderr
