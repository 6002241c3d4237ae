"""Gunicorn app factory for the Machine hook tests: `gunicorn 'arm_support.machine_app:make_app()'`
with tests/ on PYTHONPATH.

With FAKE_ARM_URL set, the Machine hook talks to that fake ARM (tests/arm_support/fake_arm.py) through the
real SDK with a static test token; without it, the production provider AgentPools.from_env is used
(so a missing Azure setting shows up as the hook's 500, not as a crash at start).
"""

import os
import warnings

from hooks.machine.arm_client import AgentPools


def _pools_provider():
    base_url = os.environ.get("FAKE_ARM_URL")
    if not base_url:
        return AgentPools.from_env
    from arm_support.pools import agent_pools

    warnings.filterwarnings("ignore", message="Unverified HTTPS request")

    def provider():
        return agent_pools(base_url)

    return provider


def make_app():
    from hooks.server.app import create_app

    return create_app(pools_provider=_pools_provider())
