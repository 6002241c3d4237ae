"""Session fixtures: the tiny models (built once) and one serving stack at a time per runtime.

`stack` is parametrized over the two runtimes, so every contract test runs against the real SGLang
server (marked `real_sglang`) and against the transformers runtime (inference.hf_server). Stacks are
module-scoped and pytest finishes one runtime's stack before it starts the next: at most one server
runs at a time (SGLang on CPU holds about 4.4 GB over its processes).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

pytest.importorskip("peft")
pytest.importorskip("transformers")

from harness import sglang_python, start_stack
from tiny_models import LLAMA_ADAPTERS, LLAMA_PRESET, PHI3_ADAPTERS, PHI3_PRESET, Reference, build


def _require_sglang() -> None:
    if sglang_python() is not None:
        return
    why = "the SGLang venv is not installed (python3 tests/real_sglang/install_sglang.py; `make test-setup` does it)"
    if os.environ.get("KAITO_REQUIRE_REAL_SGLANG") == "1":
        pytest.fail(why)
    pytest.skip(why)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-llama")
    return build(root, "llama", [plan for plan, _ in LLAMA_ADAPTERS.values()])


@pytest.fixture(scope="session")
def tiny_phi3(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-phi3")
    return build(root, "phi3", [plan for plan, _ in PHI3_ADAPTERS.values()], seed=1)


@pytest.fixture(scope="session")
def llama_ref(tiny_llama):
    return Reference(tiny_llama)


@pytest.fixture(scope="session")
def phi3_ref(tiny_phi3):
    return Reference(tiny_phi3)


def _serve(runtime, preset, adapters, tiny, tmp_path_factory):
    if runtime == "sglang":
        _require_sglang()
    work = tmp_path_factory.mktemp(f"work-{runtime}-{preset}")
    stack = start_stack(
        runtime,
        preset,
        [(n, s) for n, (_, s) in adapters.items()],
        tiny.weights_dir,
        tiny.adapters_dir,
        work / "adapters",
        work,
    )
    print(f"\n{runtime} stack for {preset} healthy after {stack.start_seconds:.1f} s", file=sys.stderr)
    try:
        yield stack
    finally:
        stack.stop()
        if os.environ.get("KAITO_REAL_SGLANG_SHOW_LOG"):
            print(stack.log_tail(20000), file=sys.stderr)


RUNTIMES = [pytest.param("sglang", marks=pytest.mark.real_sglang), "transformers"]


# Module scope: a stack stops when its module (or its runtime's share of it) is done.
@pytest.fixture(scope="module", params=RUNTIMES)
def stack(request, tiny_llama, tmp_path_factory):
    yield from _serve(request.param, LLAMA_PRESET, LLAMA_ADAPTERS, tiny_llama, tmp_path_factory)


@pytest.fixture(scope="module", params=RUNTIMES)
def phi3_stack(request, tiny_phi3, tmp_path_factory):
    yield from _serve(request.param, PHI3_PRESET, PHI3_ADAPTERS, tiny_phi3, tmp_path_factory)


def pytest_collection_modifyitems(config, items):
    """Everything here is `real_sglang` (C's layout: `make test-fast` leaves this folder out); the SGLang
    parameter also carries the mark by itself."""
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.real_sglang)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test against a stack shows the stack's log tail (runtime + gateway)."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        for name in ("stack", "phi3_stack"):
            s = item.funcargs.get(name)
            if s is not None:
                report.sections.append((f"{s.runtime} stack log (tail)", s.log_tail(4000)))
