"""`python -m inference.launch --dry-run`: the exact runtime argv, checked against SGLang's own parser.

Dry runs execute with torch and sglang made unimportable and sockets disabled, proving the dry run
needs neither and touches no network. The SGLang checks import `sglang.srt.server_args` from the venv
(installed with --no-deps) and skip when it is absent.
"""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from inference_support.launcher import (
    PHI3_TARGETS,
    PRESET,
    REPO,
    base_args,
    check_lora,
    dry_run,
    dry_run_gateway,
    flag,
    make_adapter,
    sglang_parse,
    sglang_prefix,
)
from loopback_support import free_port
from workspace_support import render_cli

pytestmark = pytest.mark.integration  # runs the launcher as a process


def test_single_node_no_adapters(tmp_path):
    rc, argv, err = dry_run(base_args(tmp_path, "--gpus-per-node", "1", "--nnodes", "1", "--node-rank", "0"))
    assert rc == 0, err
    args = sglang_prefix(argv)
    assert flag(args, "--model-path") == str(tmp_path / "weights")
    assert flag(args, "--served-model-name") == PRESET
    assert flag(args, "--tp-size") == "1"
    assert (flag(args, "--host"), flag(args, "--port")) == ("127.0.0.1", "30000")
    for absent in ("--enable-lora", "--lora-paths", "--nnodes", "--dist-init-addr"):
        assert absent not in args


def test_two_adapters(tmp_path):
    make_adapter(tmp_path / "adapters", "support", 8, PHI3_TARGETS)
    make_adapter(tmp_path / "adapters", "dolly", 16, ["qkv_proj", "o_proj"])
    rc, argv, err = dry_run(base_args(tmp_path, "--adapter", "support=1.0", "--adapter", "dolly=0.5"))
    assert rc == 0, err
    args = sglang_prefix(argv)
    assert "--enable-lora" in args
    # the combined adapter (the exact sum, ranks added) is Kaito's /chat default: all adapters, weighted
    assert flag(args, "--lora-paths", 3) == [
        f"support={tmp_path}/adapters/support",
        f"dolly={tmp_path / 'work' / 'dolly'}",
        f"combined={tmp_path / 'work' / 'combined'}",
    ]
    assert flag(args, "--max-lora-rank") == "24"
    assert flag(args, "--max-loras-per-batch") == "8"
    assert flag(args, "--lora-target-modules", 4) == sorted(PHI3_TARGETS)
    gateway = dry_run_gateway(base_args(tmp_path, "--adapter", "support=1.0", "--adapter", "dolly=0.5"))
    assert gateway[gateway.index("--chat-default-adapter") + 1] == "combined"
    assert [gateway[i + 1] for i, a in enumerate(gateway) if a == "--adapter"] == ["support", "dolly", "combined"]
    assert not (tmp_path / "work").exists()  # a dry run writes nothing


def test_every_adapter_and_the_base_model_fit_one_batch(tmp_path):
    names = [f"a{i}" for i in range(10)]
    for name in names:
        make_adapter(tmp_path / "adapters", name, 4, ["q_proj"])
    rc, argv, err = dry_run(base_args(tmp_path, *[x for n in names for x in ("--adapter", n)]))
    assert rc == 0, err
    args = sglang_prefix(argv)
    assert len(flag(args, "--lora-paths", 11)) == 11  # ten adapters and the combined one
    assert flag(args, "--max-loras-per-batch") == "12"  # ... and the base model


def test_two_nodes_pod0_and_pod1(tmp_path):
    addr = "ws-0.ws-headless.team.svc:29500"
    out = {}
    for rank in (0, 1):
        rc, argv, err = dry_run(
            base_args(
                tmp_path, "--gpus-per-node", "2", "--nnodes", "2", "--node-rank", str(rank), "--dist-init-addr", addr
            )
        )
        assert rc == 0, err
        out[rank] = sglang_prefix(argv)
        assert flag(out[rank], "--tp-size") == "4"
        assert flag(out[rank], "--nnodes") == "2" and flag(out[rank], "--node-rank") == str(rank)
        assert flag(out[rank], "--dist-init-addr") == addr
    # identical apart from the rank
    i = out[0].index("--node-rank")
    assert out[0][: i + 1] + out[0][i + 2 :] == out[1][: i + 1] + out[1][i + 2 :]


def test_transformers_runtime(tmp_path):
    make_adapter(tmp_path / "adapters", "a", 4, ["q_proj"])
    args = base_args(tmp_path, "--adapter", "a=0.25")
    args[args.index("--runtime") + 1] = "transformers"
    rc, argv, err = dry_run(args)
    assert rc == 0, err
    assert argv[1:3] == ["-m", "inference.hf_server"]
    assert flag(argv, "--lora") == f"a={tmp_path / 'work' / 'a'}"


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--adapter", "missing"], "adapter_config.json not found"),
        (["--nnodes", "2", "--node-rank", "1"], "--dist-init-addr"),
        (["--nnodes", "2", "--node-rank", "2", "--dist-init-addr", "x:1"], "--node-rank"),
        (["--adapter", "a=strong"], "not a number"),
    ],
)
def test_bad_arguments_exit_2_with_message(tmp_path, extra, message):
    rc, _, err = dry_run(base_args(tmp_path, *extra))
    assert rc == 2 and message in err


# --- SGLang's own parser -------------------------------------------------------------------------


def test_sglang_accepts_two_adapter_command(tmp_path):
    make_adapter(tmp_path / "adapters", "support", 8, PHI3_TARGETS)
    make_adapter(tmp_path / "adapters", "dolly", 16, ["qkv_proj", "o_proj"])
    (tmp_path / "weights").mkdir()
    rc, argv, err = dry_run(base_args(tmp_path, "--adapter", "support", "--adapter", "dolly=0.5"))
    assert rc == 0, err
    sa = sglang_parse(sglang_prefix(argv))
    check_lora(sa, ["support", "dolly", "combined"])
    assert sa.max_lora_rank == 24 and sorted(sa.lora_target_modules) == sorted(PHI3_TARGETS)
    assert sa.served_model_name == PRESET and sa.tp_size == 1 and sa.nnodes == 1
    assert sa.lora_strict_loading is True and sa.enable_metrics is True


def test_sglang_accepts_two_node_commands(tmp_path):
    make_adapter(tmp_path / "adapters", "a", 8, ["q_proj", "v_proj"])
    make_adapter(tmp_path / "adapters", "b", 4, ["k_proj"])
    (tmp_path / "weights").mkdir()
    for rank in (0, 1):
        rc, argv, err = dry_run(
            base_args(
                tmp_path,
                "--adapter",
                "a",
                "--adapter",
                "b=0.3",
                "--gpus-per-node",
                "4",
                "--nnodes",
                "2",
                "--node-rank",
                str(rank),
                "--dist-init-addr",
                "ws-0.ws-headless.team.svc:29500",
            )
        )
        assert rc == 0, err
        sa = sglang_parse(sglang_prefix(argv))
        check_lora(sa, ["a", "b", "combined"])
        assert (sa.tp_size, sa.nnodes, sa.node_rank) == (8, 2, rank)
        assert sa.dist_init_addr == "ws-0.ws-headless.team.svc:29500"


# --- the hook's renderer -> our launcher -> SGLang's parser ---------------------------------------


def rendered_main_container(workspace_yaml: Path) -> dict:
    p = render_cli(str(workspace_yaml))
    assert p.returncode == 0, p.stderr
    # the inference workload: a StatefulSet, or a Deployment for presets served from one node
    sts = [
        d
        for d in yaml.safe_load_all(p.stdout)
        if d and d.get("kind") in ("StatefulSet", "Deployment") and not d["metadata"]["name"].endswith("-router")
    ]
    assert len(sts) == 1
    name = sts[0]["metadata"]["name"]
    [main] = [c for c in sts[0]["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    return main


def localize(args: list[str], tmp_path: Path, rank: int) -> list[str]:
    """Run the rendered args here: the pod's mount paths become temp dirs; $(POD_INDEX) as the kubelet expands it."""
    out, it = [], iter(args)
    for a in it:
        if a in ("--weights-dir", "--adapters-dir", "--adapter-files"):
            out += [a, str(tmp_path / a.strip("-"))]
            next(it)
        elif a == "--live-adapters":
            out += [a, str(tmp_path / "adapters.json")]
            next(it)
        else:
            out.append(a.replace("$(POD_INDEX)", str(rank)))
    return out + ["--work-dir", str(tmp_path / "work")]


def test_rendered_two_adapter_example_on_a100(tmp_path):
    """Adapters are live: the rendered pod names only the desired-set file and the files folder, and
    the launcher starts SGLang with room for adapters that arrive later (no adapter in the argv)."""
    main = rendered_main_container(REPO / "examples" / "inference-phi-3-with-adapters.yaml")
    assert main["command"] == ["python", "-m", "inference.launch"]
    assert "--adapter" not in main["args"] and "--live-adapters" in main["args"]
    (tmp_path / "weights-dir").mkdir()
    (tmp_path / "adapter-files").mkdir()
    (tmp_path / "adapters.json").write_text('{"adapters": []}')
    rc, argv, err = dry_run(localize(main["args"], tmp_path, 0))
    assert rc == 0, err
    sa = sglang_parse(sglang_prefix(argv))
    assert sa.enable_lora is True and sa.max_lora_rank >= 16 and not sa.lora_paths
    assert sa.served_model_name == "phi-3-mini-128k-instruct" and sa.tp_size == 1


def test_rendered_two_node_workspace(tmp_path):
    ws = tmp_path / "ws.yaml"
    ws.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kaito.sh/v1alpha1",
                "kind": "Workspace",
                "metadata": {"name": "ws-llama70", "namespace": "team"},
                "resource": {
                    "count": 2,
                    "instanceType": "Standard_NC48ads_A100_v4",
                    "labelSelector": {"matchLabels": {"apps": "llama"}},
                },
                "inference": {
                    "preset": {"name": "llama-3.3-70b-instruct", "presetOptions": {"modelAccessSecret": "hf-token"}}
                },
            }
        )
    )
    main = rendered_main_container(ws)
    (tmp_path / "weights-dir").mkdir()
    for rank in (0, 1):
        rc, argv, err = dry_run(localize(main["args"], tmp_path, rank))
        assert rc == 0, err
        sa = sglang_parse(sglang_prefix(argv))
        assert (sa.nnodes, sa.node_rank, sa.tp_size) == (2, rank, 4)
        assert sa.dist_init_addr == "ws-llama70-0.ws-llama70-headless.team.svc:29500"


# --- real (not dry) runs that stop before the runtime --------------------------------------------


def launch(args: list[str], env_extra: dict) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        [sys.executable, "-m", "inference.launch", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env_extra},
        check=False,
    )


def port_closed(port: int) -> bool:
    import socket
    import time

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                return True
        time.sleep(0.1)
    return False


def test_missing_weights_without_model_is_a_clear_error(tmp_path):
    port = free_port()
    args = base_args(tmp_path)
    i = args.index("--model")
    del args[i : i + 2]
    args[args.index("--port") + 1] = str(port)
    p = launch(args, {})
    assert p.returncode == 2
    assert "config.json not found" in p.stderr and "presetOptions.image" in p.stderr
    assert port_closed(port)  # the gateway it started went with it


def test_download_failure_names_the_model(tmp_path):
    """HF_HUB_OFFLINE=1 makes huggingface_hub refuse the network: the real download path, failing."""
    pytest.importorskip("huggingface_hub")
    args = base_args(tmp_path)
    args[args.index("--port") + 1] = str(free_port())
    p = launch(args, {"HF_HUB_OFFLINE": "1", "HF_TOKEN": ""})
    assert p.returncode == 1
    assert "cannot fetch model 'microsoft/Phi-3-mini-128k-instruct'" in p.stderr


def test_weights_decisions():
    from inference.weights import ignore_patterns, select_files
    from inference.weights_cache.cache import RepoFile

    st = ignore_patterns(["config.json", "model-00001.safetensors", "pytorch_model.bin", "original/consolidated.pth"])
    assert "*.bin" in st and "original/*" in st
    assert "*.bin" not in ignore_patterns(["config.json", "pytorch_model.bin"])
    listing = [RepoFile(p, 1) for p in ("config.json", "a.safetensors", "b.bin", "original/x/y.pth", "README.md")]
    assert [f.path for f in select_files(listing)] == ["config.json", "a.safetensors"]


def test_rendered_v100_quick_start_uses_the_transformers_fallback(tmp_path):
    """SGLang's CUDA 13 build does not run on a V100 (Standard_NC6s_v3): the hook picks the transformers runtime."""
    main = rendered_main_container(REPO / "examples" / "inference-phi-3.yaml")
    assert flag(main["args"], "--runtime") == "transformers"
    (tmp_path / "weights-dir").mkdir()
    rc, argv, err = dry_run(localize(main["args"], tmp_path, 0))
    assert rc == 0, err
    assert argv[1:3] == ["-m", "inference.hf_server"]
    assert flag(argv, "--model-path") == str(tmp_path / "weights-dir")
    assert flag(argv, "--served-model-name") == "phi-3-mini-4k-instruct"


@pytest.mark.parametrize("text", ["a=nan", "a=NaN", "a=inf", "a=-inf"])
def test_adapter_strength_must_be_finite(text):
    from inference.launch_args import UsageError, parse_adapter

    with pytest.raises(UsageError, match="finite"):
        parse_adapter(text)
    assert parse_adapter("a=0.5").strength == 0.5
