"""Fixtures shared by several test modules."""

import pytest


@pytest.fixture
def arm():
    """A local HTTPS server speaking ARM's agentPools contract (Azure itself is unreachable here)."""
    from fake_arm import FakeArm

    with FakeArm() as server:
        yield server
