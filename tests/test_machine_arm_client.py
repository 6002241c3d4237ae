"""hooks/machine/arm_client.py against the real azure-mgmt-containerservice client and a local fake ARM (HTTPS).

Azure's servers cannot exist here, so tests/arm_support/fake_arm.py plays ARM's documented agentPools
contract; everything between our client and the socket is the real SDK.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("azure.mgmt.containerservice", reason="azure-mgmt-containerservice is not installed")

from arm_support.fake_arm import CLUSTER, INSTALL_ID, RESOURCE_GROUP, SUBSCRIPTION, StaticTokenCredential
from arm_support.pools import agent_pools
from loopback_support import free_port

from hooks.machine.arm_client import (
    AgentPools,
    ArmRefused,
    ArmSettingsError,
    ArmThrottled,
    ArmUnreachable,
    Pool,
)

pytestmark = pytest.mark.integration  # starts a local HTTPS fake ARM server

REPO = Path(__file__).resolve().parents[1]
POOL_PREFIX = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/"
    f"Microsoft.ContainerService/managedClusters/{CLUSTER}/agentPools/"
)
BODY = {"properties": {"vmSize": "Standard_NC24ads_A100_v4", "count": 1, "mode": "User", "osType": "Linux"}}


def test_get_missing_pool_is_none(arm):
    assert agent_pools(arm.base_url).get("ws0000000001") is None
    (call,) = arm.state.requests
    assert (call.method, call.path) == ("GET", POOL_PREFIX + "ws0000000001")
    assert call.query["api-version"] == ["2026-08-01"]
    assert call.headers["authorization"] == "Bearer fake-arm-token"


def test_create_sends_the_body_verbatim_and_does_not_poll(arm):
    credential = StaticTokenCredential()
    pools = agent_pools(arm.base_url, credential)
    pools.create("ws0000000001", BODY)
    time.sleep(0.2)  # a poller thread, if one had been started, would have called by now
    assert [(r.method, r.path) for r in arm.state.requests] == [("PUT", POOL_PREFIX + "ws0000000001")]
    assert arm.state.requests[0].body == BODY
    assert credential.scopes == [(arm.base_url + "/.default",)]
    pool = pools.get("ws0000000001")
    assert isinstance(pool, Pool)
    assert (pool.name, pool.provisioning_state, pool.vm_size) == (
        "ws0000000001",
        "Creating",
        BODY["properties"]["vmSize"],
    )
    assert pool.last_modified.startswith("2026-11-26T12:00:00")


def test_failed_pool_exposes_arm_error(arm):
    pools = agent_pools(arm.base_url)
    pools.create("ws0000000001", BODY)
    arm.set_state("ws0000000001", "Failed", ("AllocationFailed", "Allocation failed. No capacity for NC24ads_A100_v4."))
    pool = pools.get("ws0000000001")
    assert (pool.provisioning_state, pool.error_code) == ("Failed", "AllocationFailed")
    assert pool.error_message == "Allocation failed. No capacity for NC24ads_A100_v4."


def test_quota_refusal_keeps_code_and_message(arm):
    arm.refuse_vm_size(
        "Standard_NC24ads_A100_v4", "QuotaExceeded", "Operation results in exceeding quota limits of Core."
    )
    with pytest.raises(ArmRefused) as caught:
        agent_pools(arm.base_url).create("ws0000000001", BODY)
    assert (caught.value.status, caught.value.code) == (400, "QuotaExceeded")
    assert caught.value.message == "Operation results in exceeding quota limits of Core."
    assert "ws0000000001" not in arm.state.pools


def test_put_into_a_missing_cluster_is_a_refusal(arm):
    pools = AgentPools(
        StaticTokenCredential(),
        SUBSCRIPTION,
        RESOURCE_GROUP,
        "no-such-cluster",
        install_id=INSTALL_ID,
        base_url=arm.base_url,
        connection_verify=False,
    )
    with pytest.raises(ArmRefused) as caught:
        pools.create("ws0000000001", BODY)
    assert (caught.value.status, caught.value.code) == (404, "ResourceNotFound")


def test_throttling_is_reported_with_retry_after_and_not_retried(arm):
    arm.throttle(count=1, retry_after=42)
    with pytest.raises(ArmThrottled) as caught:
        agent_pools(arm.base_url).get("ws0000000001")
    assert caught.value.retry_after == 42
    assert len(arm.state.requests) == 1  # the SDK's own retries are off: Metacontroller retries


def test_server_errors_count_as_unreachable(arm):
    arm.fail_next(503, "ServiceUnavailable", "The service is temporarily unavailable.")
    with pytest.raises(ArmUnreachable, match="503"):
        agent_pools(arm.base_url).get("ws0000000001")


def test_wrong_token_is_a_refusal_not_an_outage(arm):
    with pytest.raises(ArmRefused) as caught:
        agent_pools(arm.base_url, StaticTokenCredential("stale")).get("ws0000000001")
    assert (caught.value.status, caught.value.code) == (401, "AuthenticationFailed")


def test_credential_failure_is_a_refusal_and_sends_nothing(arm):
    from azure.core.exceptions import ClientAuthenticationError

    class NoIdentity:
        def get_token(self, *scopes, **kwargs):
            raise ClientAuthenticationError("WorkloadIdentityCredential: no federated token file")

    with pytest.raises(ArmRefused) as caught:
        agent_pools(arm.base_url, NoIdentity()).get("ws0000000001")
    assert caught.value.code == "AuthenticationFailed"
    assert "no federated token file" in caught.value.message
    assert arm.state.requests == []


def test_delete_lifecycle(arm):
    pools = agent_pools(arm.base_url)
    pools.create("ws0000000001", BODY)
    assert pools.delete("ws0000000001") is True  # 202 accepted
    assert pools.get("ws0000000001").provisioning_state == "Deleting"
    arm.finish_delete("ws0000000001")
    assert pools.delete("ws0000000001") is False  # 204: nothing to delete
    assert pools.get("ws0000000001") is None
    assert [r.method for r in arm.state.requests] == ["PUT", "DELETE", "GET", "DELETE", "GET"]


def test_connection_refused_is_unreachable_and_fast():
    pools = agent_pools(f"https://127.0.0.1:{free_port()}")
    started = time.monotonic()
    with pytest.raises(ArmUnreachable):
        pools.get("ws0000000001")
    assert time.monotonic() - started < 3


def test_default_timeouts_stay_under_the_hook_timeout(arm):
    arm.hang(7)  # longer than the default read timeout, shorter than nothing: must be cut off
    started = time.monotonic()
    with pytest.raises(ArmUnreachable, match="timed out"):
        agent_pools(arm.base_url).get("ws0000000001")
    assert time.monotonic() - started < 6.5


def test_from_env_requires_settings_and_reads_no_credential():
    with pytest.raises(ArmSettingsError, match="AZURE_RESOURCE_GROUP, AZURE_CLUSTER_NAME"):
        AgentPools.from_env({"AZURE_SUBSCRIPTION_ID": SUBSCRIPTION})
    azure = {"AZURE_SUBSCRIPTION_ID": SUBSCRIPTION, "AZURE_RESOURCE_GROUP": "rg", "AZURE_CLUSTER_NAME": "aks"}
    with pytest.raises(ArmSettingsError, match=r"missing: KAITO_INSTALL_ID .*kube-system"):
        AgentPools.from_env(azure)
    with pytest.raises(ArmSettingsError, match="KAITO_INSTALL_ID 'not one/id' must be"):
        AgentPools.from_env({**azure, "KAITO_INSTALL_ID": "not one/id"})
    pools = AgentPools.from_env({**azure, "KAITO_INSTALL_ID": INSTALL_ID})
    assert (pools.resource_group, pools.cluster_name, pools.install_id) == ("rg", "aks", INSTALL_ID)
    pools.close()


def test_hook_modules_do_not_import_azure_at_module_level():
    code = (
        "import sys, hooks.machine.arm_client, hooks.machine.sync, hooks.server.machine_routes\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('azure', 'torch', 'transformers', 'peft', 'sglang'))\n"
        "assert not heavy, heavy\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env=env)
