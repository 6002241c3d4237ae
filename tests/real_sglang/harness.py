"""Start the serving stack the way a Workspace pod does, on this machine's CPU.

The launcher argv is the one the Workspace hook renders into the StatefulSet (`python -m hooks render`),
with the pod's paths and ports replaced by local ones and `$(POD_INDEX)` by 0. The test adds only the
runtime's CPU-only flags (after `--`, the launcher's pass-through) and, for SGLang, the test-only shims
on PYTHONPATH (tests/real_sglang/shims: stand-ins for GPU kernels, see the README there).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import install_sglang
import requests
import yaml
from loopback_support import free_port

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SHIMS = HERE / "shims"

# What SGLang needs to run on a CPU without the native CPU kernel build (notes: sglang-on-cpu.md).
SGLANG_CPU_FLAGS = [
    "--device",
    "cpu",
    "--attention-backend",
    "torch_native",
    "--lora-backend",
    "torch_native",
    "--disable-cuda-graph",
    "--disable-overlap-schedule",
    "--max-total-tokens",
    "4096",
    "--dtype",
    "float32",
]
START_TIMEOUT_S = float(os.environ.get("KAITO_REAL_SGLANG_START_TIMEOUT", "300"))
A100_SKU = "Standard_NC24ads_A100_v4"
RUNTIME_ANNOTATION = "kaito.sh/runtime"


def sglang_python() -> str | None:
    venv = install_sglang.default_venv()
    return str(install_sglang.venv_python(venv)) if install_sglang.is_complete(venv) else None


def workspace(name: str, preset: str, adapters: list[tuple[str, str]], runtime: str) -> dict:
    ws = {
        "apiVersion": "kaito.sh/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": name, "namespace": "default"},
        "resource": {"instanceType": A100_SKU, "labelSelector": {"matchLabels": {"apps": name}}},
        # Weights from an image (an init container copies them into --weights-dir): nothing to download.
        "inference": {
            "preset": {"name": preset, "presetOptions": {"image": "registry.example/tiny-weights:1"}},
            "adapters": [
                {"source": {"name": n, "image": f"registry.example/{n}:1"}, "strength": s} for n, s in adapters
            ],
        },
    }
    if runtime == "transformers":
        ws["metadata"]["annotations"] = {RUNTIME_ANNOTATION: "transformers"}
    return ws


def rendered_launch_command(ws: dict) -> list[str]:
    """The inference container's command + args as the hook renders them."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(ws, f)
    try:
        out = subprocess.run(
            [sys.executable, "-m", "hooks", "render", f.name],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        os.unlink(f.name)
    if out.returncode != 0:
        raise RuntimeError(f"hooks render failed ({out.returncode}):\n{out.stderr}")
    for doc in yaml.safe_load_all(out.stdout):
        # The inference workload: a StatefulSet, or a Deployment for presets served from one node.
        if doc and doc.get("kind") in ("StatefulSet", "Deployment") and "router" not in doc["metadata"]["name"]:
            container = doc["spec"]["template"]["spec"]["containers"][0]
            if container.get("command", [])[:3] == ["python", "-m", "inference.launch"]:
                return list(container["command"]) + list(container["args"])
    raise RuntimeError(f"no inference workload in the rendered children:\n{out.stdout[:2000]}")


def _replace_flag(args: list[str], flag: str, value: str) -> list[str]:
    if flag not in args:
        raise RuntimeError(f"the rendered launcher argv has no {flag}: {args}")
    i = args.index(flag)
    return args[: i + 1] + [value] + args[i + 2 :]


def local_argv(
    rendered: list[str],
    python: str,
    weights: Path,
    adapters: Path,
    work: Path,
    port: int,
    runtime_port: int,
    runtime_flags: list[str],
) -> list[str]:
    """The pod's command with local paths/ports; `python` becomes the runtime venv's interpreter."""
    if rendered[:3] != ["python", "-m", "inference.launch"]:
        raise RuntimeError(f"unexpected inference container command: {rendered[:3]}")
    args = rendered[3:]
    args = _replace_flag(args, "--weights-dir", str(weights))
    args = _replace_flag(args, "--adapters-dir", str(adapters))
    args = _replace_flag(args, "--port", str(port))
    args = ["0" if a == "$(POD_INDEX)" else a for a in args]
    args += ["--runtime-port", str(runtime_port), "--work-dir", str(work)]
    if runtime_flags:
        args += ["--", *runtime_flags]
    return [python, "-m", "inference.launch", *args]


def put_adapter_files(files_root: Path, key: str, adapter_dir: Path) -> None:
    """What the node's fetch pod does: the adapter's files under <key>/, the completion marker last."""
    dest = files_root / key
    shutil.copytree(adapter_dir, dest, dirs_exist_ok=True)
    (dest / ".kaito-complete").write_text("")


def write_desired(path: Path, adapters: list[tuple[str, str, float]]) -> None:
    """The desired set as the hook's ConfigMap holds it (name, key, strength), swapped in atomically as the
    kubelet does with a symlink flip."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"adapters": [{"name": n, "key": k, "strength": s} for n, k, s in adapters]}))
    os.replace(tmp, path)


def publish_live_adapters(
    args: list[str], adapters_src: Path, adapters: list[tuple[str, str]], root: Path
) -> list[str]:
    """When the hook renders live adapters (`--live-adapters FILE --adapter-files DIR`), do locally what the
    pod's volumes do: the desired set at a local FILE (the ConfigMap's `adapters.json`) and each adapter's
    files under DIR/<key> with the completion marker written last (the node's fetch pod)."""
    if "--live-adapters" not in args:
        return args
    desired, files = root / "live-config" / "adapters.json", root / "live-files"
    desired.parent.mkdir(parents=True, exist_ok=True)
    for name, _ in adapters:
        put_adapter_files(files, f"{name}-v1", adapters_src / name)
    write_desired(desired, [(name, f"{name}-v1", float(strength)) for name, strength in adapters])
    args = _replace_flag(args, "--live-adapters", str(desired))
    return _replace_flag(args, "--adapter-files", str(files))


@dataclass
class Stack:
    runtime: str
    url: str
    served: str
    proc: subprocess.Popen
    log_path: Path
    argv: list[str]
    start_seconds: float

    def log_tail(self, chars: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM the launcher's process group (runtime, its workers and the gateway), then SIGKILL."""
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


def runtime_process(runtime: str) -> tuple[str, dict[str, str], list[str]]:
    """The interpreter, environment and CPU-only runtime flags a local stack of `runtime` runs with."""
    if runtime == "sglang":
        python = sglang_python()
        if python is None:
            raise RuntimeError("SGLang venv missing: run `python3 tests/real_sglang/install_sglang.py`")
        env = {**os.environ, "SGLANG_USE_CPU_ENGINE": "1", "PYTHONPATH": os.pathsep.join([str(SHIMS), str(REPO)])}
        flags = SGLANG_CPU_FLAGS
    else:
        python, env, flags = sys.executable, {**os.environ, "PYTHONPATH": str(REPO)}, []
    env.pop("VIRTUAL_ENV", None)
    return python, env, flags


def launch(runtime: str, served: str, argv: list[str], env: dict[str, str], port: int, log_path: Path) -> Stack:
    """Start the launcher in its own process group (so stop() ends the runtime and the gateway with it)."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return Stack(runtime, f"http://127.0.0.1:{port}", served, proc, log_path, argv, 0.0)


def wait_healthy(stack: Stack, timeout_s: float = START_TIMEOUT_S) -> Stack:
    """Wait (bounded) for the gateway's /health to be 200; stop the stack and raise with its log otherwise."""
    started = time.monotonic()
    while time.monotonic() < started + timeout_s:
        if stack.proc.poll() is not None:
            stack.stop()
            raise RuntimeError(
                f"{stack.runtime} stack exited with {stack.proc.returncode} before it was healthy\n"
                f"argv: {stack.argv}\n--- log ---\n{stack.log_tail()}"
            )
        try:
            if requests.get(f"{stack.url}/health", timeout=30).status_code == 200:
                stack.start_seconds = time.monotonic() - started
                return stack
        except requests.RequestException:
            pass
        time.sleep(1)
    stack.stop()
    raise RuntimeError(
        f"{stack.runtime} stack not healthy within {timeout_s:.0f} s\nargv: {stack.argv}\n"
        f"--- log ---\n{stack.log_tail()}"
    )


def start_stack(
    runtime: str,
    preset: str,
    adapters: list[tuple[str, str]],
    weights: Path,
    adapters_dir: Path,
    work: Path,
    log_dir: Path,
) -> Stack:
    """Render the Workspace, start the launcher, wait (bounded) for the gateway's /health to be 200."""
    python, env, flags = runtime_process(runtime)
    rendered = rendered_launch_command(workspace(f"tiny-{runtime}", preset, adapters, runtime))
    port = free_port()
    argv = local_argv(rendered, python, weights, adapters_dir, work, port, free_port(), flags)
    argv = publish_live_adapters(argv, adapters_dir, adapters, work)
    log_dir.mkdir(parents=True, exist_ok=True)
    return wait_healthy(launch(runtime, preset, argv, env, port, log_dir / f"{runtime}-{preset}.log"))


def start_live_stack(runtime: str, served: str, weights: Path, work: Path, launcher_args: list[str]) -> Stack:
    """Start the launcher with the given flags (live or fixed adapters) on loopback, without waiting for it.

    Its work folder is `work`/work and its log `work`/stack.log; wait_healthy() waits for /health, a caller
    that times the first answer polls the model itself."""
    python, env, flags = runtime_process(runtime)
    port = free_port()
    argv = [python, "-m", "inference.launch", "--runtime", runtime, "--served-model-name", served]
    argv += ["--weights-dir", str(weights), "--port", str(port), "--runtime-port", str(free_port())]
    argv += ["--work-dir", str(work / "work"), *launcher_args]
    if flags:
        argv += ["--", *flags]
    return launch(runtime, served, argv, env, port, work / "stack.log")
