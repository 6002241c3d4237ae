"""Fixtures shared by several test modules, and two session-wide rules:

- The HuggingFace Hub is offline for every test and every process a test starts (they inherit this
  environment): nothing here may reach it, and in an air-gapped cluster a lookup is a stall. The set
  is `inference.offline_env.HUB_OFFLINE` (also what the launcher gives the runtime), set before any
  test module imports huggingface_hub, which reads it once. The one exception: a module that serves a
  Hub of its own on loopback (weights_support.loopback_hub) is online, to that Hub only (the guard
  below still refuses anything off the machine), for its tests.
- A test that opens a socket to an address outside this machine fails: the connection is refused
  before it is made (inference.egress_guard, an audit hook on connect/sendto) and the attempt is
  recorded, so a caller that swallows the error still fails the test.
"""

import os
import sys

import pytest

from inference import egress_guard
from inference.offline_env import HUB_OFFLINE

os.environ.update(HUB_OFFLINE)

OUTBOUND_ATTEMPTS: list[str] = []
egress_guard.install(on_refused=lambda address: OUTBOUND_ATTEMPTS.append(repr(address)))


_SERVES_A_HUB: dict[str, bool] = {}


def _serves_its_own_hub(item) -> bool:
    path = str(item.path)
    if path not in _SERVES_A_HUB:
        _SERVES_A_HUB[path] = "LoopbackHub" in item.path.read_text(errors="replace")
    return _SERVES_A_HUB[path]


@pytest.fixture(autouse=True)
def _hub_online_only_for_a_loopback_hub(request, monkeypatch):
    if _serves_its_own_hub(request.node):
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        constants = sys.modules.get("huggingface_hub.constants")
        if constants is not None:
            monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    del OUTBOUND_ATTEMPTS[:]
    outcome = yield
    if OUTBOUND_ATTEMPTS:
        attempts = ", ".join(OUTBOUND_ATTEMPTS)
        del OUTBOUND_ATTEMPTS[:]
        outcome.force_exception(
            pytest.fail.Exception(
                f"the test tried to connect outside this machine ({attempts}); tests talk to loopback only"
            )
        )


@pytest.fixture
def outbound_attempts() -> list[str]:
    """The off-machine connections the guard refused during this test; a test of the guard itself empties it.
    (A fixture, not `from conftest import`: with tests/cluster's conftest in the same session, that name can
    import a second copy of this module.)"""
    return OUTBOUND_ATTEMPTS


@pytest.fixture
def arm():
    """A local HTTPS server speaking ARM's agentPools contract (Azure itself is unreachable here)."""
    from arm_support.fake_arm import FakeArm

    with FakeArm() as server:
        yield server
