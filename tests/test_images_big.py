"""The big images (tuning, runtime-legacy, runtime: GBs each, CUDA builds of torch) started for what they are
for, on this machine's CPU, by `make images` (KAITO_TEST_BIG_IMAGES=1; `make test` skips them):

- tuning: the trainer container of the rendered tuning Job trains a tiny adapter with LoRA and with QLoRA
  (bitsandbytes 0.50 loads the base in 4 bits on a CPU; the test counts its Linear4bit layers) as UID
  65532 on a read-only root filesystem.
- runtime-legacy: the launcher (the image's entrypoint, with the argv the hook renders) serves a tiny
  Llama with the transformers runtime, adapters included, and answers a chat request.
- runtime: the same with SGLang on CPU. SGLang's GPU kernels cannot run here: as in the real-SGLang tests,
  SGLang's CPU engine flags are added after `--` and the test-only shims (tests/real_sglang/shims, never
  shipped) are mounted on PYTHONPATH.

Where the pinned CUDA bases cannot be pulled, `make images` builds these on its local stand-ins
(release/local_bases.py): the same torch and SGLang releases from PyPI on Debian's Python.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import requests
import yaml
from images_support import Container, ContainerSpec, built, container_tool, run_argv
from loopback_support import free_port

REAL_SGLANG = Path(__file__).resolve().parent / "real_sglang"
sys.path.insert(0, str(REAL_SGLANG))  # its harness renders the launcher argv and builds the tiny models

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(container_tool() is None, reason="no image builder (buildah+podman+runc, or Docker)"),
    pytest.mark.skipif(
        os.environ.get("KAITO_TEST_BIG_IMAGES") != "1",
        reason="the GB-sized images are built and started by `make images` (KAITO_TEST_BIG_IMAGES=1)",
    ),
]

USER = "65532:65532"


def shared_dir(prefix: str) -> Path:
    """A host folder the image's user (65532) can read and write, mounted at the same path."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    folder.chmod(0o777)
    return folder


def open_up(root: Path) -> None:
    """Readable by any user, as files a node's volumes hand to the pod."""
    for path in [root, *root.rglob("*")]:
        path.chmod(0o777 if path.is_dir() else 0o644)


def replaced(args: list[str], flag: str, value: str) -> list[str]:
    i = args.index(flag)
    return [*args[: i + 1], value, *args[i + 2 :]]


def without(args: list[str], flag: str) -> list[str]:
    i = args.index(flag)
    return [*args[:i], *args[i + 2 :]]


def run_to_end(image: str, spec: ContainerSpec, timeout: float) -> tuple[int, str]:
    tool = container_tool()
    assert tool
    name = f"kaito-check-{uuid.uuid4().hex[:8]}"
    container = Container(tool, run_argv(tool, image, spec, name), name)
    try:
        status = container.wait(timeout)
        return status, container.logs()
    finally:
        container.stop()


# ---- tuning -----------------------------------------------------------------------------------------


def trainer_container() -> dict:
    from workspace_support import REPO, request

    from hooks.settings import Settings
    from hooks.workspace.sync import sync

    ws = yaml.safe_load((REPO / "examples" / "tuning-phi-3.yaml").read_text())
    ws["metadata"].setdefault("uid", "u-1")
    children = sync(request(ws), Settings(), "2026-12-06T00:00:00Z")["children"]
    (job,) = [c for c in children if c["kind"] == "Job"]
    pod = job["spec"]["template"]["spec"]
    (trainer,) = [c for c in pod.get("initContainers", []) + pod["containers"] if c["name"] == "trainer"]
    return trainer


@pytest.fixture(scope="module")
def tuning_image():
    return built("tuning")


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_tuning_image_trains_a_tiny_adapter_on_cpu(tuning_image, method):
    from tuning_support import tiny

    trainer = trainer_container()
    root = shared_dir("kaito-tuning-")
    try:
        model, data, results, cache = root / "model", root / "data", root / "results", root / "cache"
        tiny.make_model(str(model), "phi3")
        tiny.write_parquet(str(data / "train.parquet"), tiny.chat_rows(8))
        config = root / "config" / "training_config.yaml"
        config.parent.mkdir()
        text = tiny.training_yaml(method, TrainingArguments={"output_dir": str(results)})
        # Adapters train in float32 on a CPU (bfloat16 matmuls are slow there and some kernels lack them).
        config.write_text(text.replace("bfloat16", "float32"))
        results.mkdir()
        cache.mkdir()
        open_up(root)
        args = list(trainer["command"])
        for flag, value in (("--config", config), ("--model", model), ("--data", data), ("--output", results)):
            args = replaced(args, flag, str(value))
        # The Job fetches the base model from the Hugging Face Hub into the node's weights cache; no Hub is
        # reachable here, so the tiny model is given as the pod's --model folder instead.
        args = without(without(args, "--model-repo"), "--weights-cache")
        spec = ContainerSpec(
            command=args[1:],
            entrypoint=args[0],
            env={"HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""},
            user=USER,
            read_only=True,
            tmpfs=[("/tmp", "2Gi"), ("/dev/shm", "1Gi")],
            binds=[(str(root), str(root), False)],
        )
        status, logs = run_to_end(tuning_image, spec, timeout=900)
        assert status == 0, logs[-4000:]
        assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in results.iterdir()}, logs[-2000:]
        assert json.loads((results / "adapter_config.json").read_text())["r"] == 4
        if method == "qlora":  # the base really loads in 4 bits on this CPU (bitsandbytes' CPU backend)
            probe = (
                "import bitsandbytes as bnb, torch\n"
                "from transformers import AutoModelForCausalLM, BitsAndBytesConfig\n"
                "q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type='nf4', bnb_4bit_compute_dtype=torch.float32)\n"
                f"m = AutoModelForCausalLM.from_pretrained('{model}', quantization_config=q, device_map={{'': 'cpu'}})\n"
                "print('linear4bit', sum(isinstance(x, bnb.nn.Linear4bit) for x in m.modules()))\n"
            )
            check = ContainerSpec(
                ["-c", probe],
                entrypoint="python",
                env=spec.env,
                user=USER,
                read_only=True,
                tmpfs=spec.tmpfs,
                binds=spec.binds,
            )
            status, logs = run_to_end(tuning_image, check, timeout=300)
            counted = re.search(r"^linear4bit (\d+)$", logs, re.MULTILINE)
            assert status == 0 and counted and int(counted[1]) > 0, logs[-2000:]
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ---- runtime and runtime-legacy -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_llama():
    from tiny_models import LLAMA_ADAPTERS, build

    root = shared_dir("kaito-tiny-llama-")
    model = build(root, "llama", [plan for plan, _ in LLAMA_ADAPTERS.values()])
    open_up(root)
    yield model
    shutil.rmtree(root, ignore_errors=True)


def serve_from_image(image: str, runtime: str, tiny, extra_env: dict, binds: list, flags: list[str]) -> None:
    """The launcher in `image` with the argv the hook renders for a Workspace on `runtime`; one chat request."""
    from harness import local_argv, publish_live_adapters, rendered_launch_command, workspace
    from tiny_models import LLAMA_ADAPTERS, LLAMA_PRESET

    adapters = [(n, s) for n, (_, s) in LLAMA_ADAPTERS.items()]
    work = shared_dir(f"kaito-{runtime}-work-")
    port = free_port()
    rendered = rendered_launch_command(workspace(f"tiny-{runtime}", LLAMA_PRESET, adapters, runtime))
    argv = local_argv(rendered, "python", tiny.weights_dir, tiny.adapters_dir, work, port, free_port(), flags)
    argv = publish_live_adapters(argv, tiny.adapters_dir, adapters, work)
    open_up(work)
    assert argv[:3] == ["python", "-m", "inference.launch"]
    spec = ContainerSpec(
        command=argv[3:],  # the image's entrypoint is the launcher
        env={"HF_HUB_OFFLINE": "1", **extra_env},
        user=USER,
        read_only=True,
        tmpfs=[("/tmp", "2Gi"), ("/dev/shm", "2Gi")],
        binds=[
            (str(tiny.weights_dir.parent), str(tiny.weights_dir.parent), True),
            (str(work), str(work), False),
            *binds,
        ],
    )
    tool = container_tool()
    assert tool
    name = f"kaito-{runtime}-{uuid.uuid4().hex[:8]}"
    container = Container(tool, run_argv(tool, image, spec, name), name)
    try:
        deadline = time.monotonic() + 600
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/health", timeout=30).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert container.running() and time.monotonic() < deadline, container.logs()[-5000:]
            time.sleep(2)
        adapter = next(iter(LLAMA_ADAPTERS))
        answer = requests.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json={
                "model": f"{LLAMA_PRESET}:{adapter}",
                "messages": [{"role": "user", "content": "Hello"}],
                "max_tokens": 4,
            },
            timeout=120,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["choices"][0]["message"]["content"] is not None
        kaito = requests.post(
            f"http://127.0.0.1:{port}/chat", json={"prompt": "Hi", "generate_kwargs": {"max_length": 4}}, timeout=120
        )
        assert kaito.status_code == 200, kaito.text
    finally:
        container.stop()
        shutil.rmtree(work, ignore_errors=True)


def test_runtime_legacy_image_serves_a_tiny_model_with_the_transformers_runtime(tiny_llama):
    serve_from_image(built("runtime-legacy"), "transformers", tiny_llama, {"CUDA_VISIBLE_DEVICES": ""}, [], [])


def test_runtime_image_serves_a_tiny_model_with_sglang_on_cpu(tiny_llama):
    from harness import SGLANG_CPU_FLAGS, SHIMS

    shims = "/opt/kaito-test-shims"  # test-only stand-ins for SGLang's GPU kernels, mounted, never in the image
    env = {"SGLANG_USE_CPU_ENGINE": "1", "PYTHONPATH": f"{shims}:/opt/kaito", "CUDA_VISIBLE_DEVICES": ""}
    serve_from_image(built("runtime"), "sglang", tiny_llama, env, [(str(SHIMS), shims, True)], SGLANG_CPU_FLAGS)
