"""The product's AgentPools client pointed at the fake ARM, as every Machine test builds it."""

from __future__ import annotations

from typing import Any

from arm_support.fake_arm import CLUSTER, INSTALL_ID, RESOURCE_GROUP, SUBSCRIPTION, StaticTokenCredential


def agent_pools(base_url: str, credential: Any = None, install_id: str = INSTALL_ID, **options: Any):
    """AgentPools on the fake ARM's cluster with its static token (or `credential`); the fake's self-signed
    certificate is not verified. `options` go to AgentPools unchanged (timeouts, polling)."""
    from hooks.machine.arm_client import AgentPools

    return AgentPools(
        credential or StaticTokenCredential(),
        SUBSCRIPTION,
        RESOURCE_GROUP,
        CLUSTER,
        install_id=install_id,
        base_url=base_url,
        connection_verify=False,
        **options,
    )
