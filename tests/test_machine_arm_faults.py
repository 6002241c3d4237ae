"""The Machine hook when ARM misbehaves: wrong-parent 404s, overlapping
PUTs, malformed 200s, absurd Retry-After, and answers too slow for Metacontroller's 10 s hook timeout.

Real SDK, real Flask app; ARM is the local fake (tests/arm_support/fake_arm.py), Azure's servers being unreachable.
"""

import threading
import time

import pytest

pytest.importorskip("azure.mgmt.containerservice", reason="azure-mgmt-containerservice is not installed")

from arm_support.fake_arm import INSTALL_ID
from arm_support.pools import agent_pools
from machine_support import NAME, conditions, hook_request, make_machine

from hooks.machine import sync as machine_sync
from hooks.machine.arm_client import MAX_RETRY_AFTER_S, ArmThrottled, ArmUnreachable
from hooks.machine.deadline import ARM_BUDGET_S, DeadlinePools
from hooks.machine.pools import pool_body
from hooks.machine.request import read_machine
from hooks.server.app import create_app

pytestmark = pytest.mark.integration


@pytest.fixture
def client(arm):
    return create_app(pools_provider=lambda: agent_pools(arm.base_url)).test_client()


def existing_pool(arm):
    agent_pools(arm.base_url).create(NAME, pool_body(read_machine(make_machine()), INSTALL_ID))
    arm.set_state(NAME, "Succeeded")
    arm.state.requests.clear()


# ---- only the agent pool's own 404 means "pool gone" -------------------------------------------------


@pytest.mark.parametrize("code", ["ResourceGroupNotFound", "SubscriptionNotFound", "ResourceNotFound"])
def test_finalize_keeps_the_machine_when_arm_cannot_find_the_cluster_or_its_group(arm, code):
    existing_pool(arm)
    arm.wrong_parent(code)  # e.g. a mistyped AZURE_RESOURCE_GROUP in aks.env
    response = machine_sync.finalize(hook_request(make_machine(), finalizing=True), agent_pools(arm.base_url))
    assert response["finalized"] is False
    ready = conditions(response)["Ready"]
    assert ready["reason"] == "DeletionRefused" and code in ready["message"], ready
    assert not arm.calls("DELETE")
    arm.state.parent_missing = None
    assert NAME in arm.state.pools  # the pool is still there, and so is its Machine


def test_finalize_completes_on_the_pools_own_not_found(arm):
    response = machine_sync.finalize(hook_request(make_machine(), finalizing=True), agent_pools(arm.base_url))
    assert response["finalized"] is True


def test_sync_shows_a_missing_resource_group_as_a_refusal_to_read(arm):
    arm.wrong_parent("ResourceGroupNotFound")
    response = machine_sync.sync(hook_request(make_machine()), agent_pools(arm.base_url))
    ready = conditions(response)["Ready"]
    assert ready["reason"] == "ProvisioningRefused" and "ResourceGroupNotFound" in ready["message"]
    assert not arm.calls("PUT")


# ---- overlapping syncs create the pool once ----------------------------------------------------------


def test_two_overlapping_syncs_create_the_pool_once(arm):
    """Both syncs read "no pool" and both PUT; the PUT is create-only (If-None-Match: *), so the second
    is answered 412 by ARM without touching the pool (on real AKS a second PUT on a Creating pool is an
    update that can fail it or be refused), and the hook counts 412 as "created"."""
    arm.hang(0.5)  # both GETs are answered before either PUT lands
    pools = agent_pools(arm.base_url)
    responses = []

    def sync():
        responses.append(machine_sync.sync(hook_request(make_machine()), pools))

    threads = [threading.Thread(target=sync) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    arm.hang(0)
    puts = arm.calls("PUT", NAME)
    assert len(puts) == 2 and all(p.headers.get("if-none-match") == "*" for p in puts)
    assert arm.state.pools[NAME]["properties"]["provisioningState"] == "Creating"  # never updated
    assert [conditions(r)["Ready"]["reason"] for r in responses] == ["Creating", "Creating"]


# ---- malformed answers are transient; Retry-After is clamped -----------------------------------------


@pytest.mark.parametrize("body", [b'{"unexpected": true}', b"<html>gateway</html>", b'{"properties": {}}', b""])
def test_a_malformed_200_is_transient_not_a_refusal(arm, client, body):
    arm.answer_raw_next(200, body)
    with pytest.raises(ArmUnreachable):
        agent_pools(arm.base_url).get(NAME)
    arm.answer_raw_next(200, body)
    answer = client.post("/sync/machine", json=hook_request(make_machine()))
    assert answer.status_code == 500, answer.get_json()  # Metacontroller keeps the status and retries
    assert not arm.calls("PUT")


@pytest.mark.parametrize(
    "raw, expected", [("99999999", MAX_RETRY_AFTER_S), ("inf", MAX_RETRY_AFTER_S), ("nan", 10), ("0", 1), ("12", 12)]
)
def test_retry_after_is_clamped(arm, client, raw, expected):
    arm.fail_next(429, "TooManyRequests", "slow down", {"Retry-After": raw})
    with pytest.raises(ArmThrottled) as caught:
        agent_pools(arm.base_url).get(NAME)
    assert caught.value.retry_after == expected
    arm.fail_next(429, "TooManyRequests", "slow down", {"Retry-After": raw})
    answer = client.post("/sync/machine", json=hook_request(make_machine()))
    assert answer.status_code == 429 and answer.headers["Retry-After"] == str(expected)


# ---- one deadline across all ARM calls of a request --------------------------------------------------


def test_two_slow_calls_share_one_budget(arm):
    """Each answer comes just under the adapter's own read timeout; together they would pass the budget."""
    arm.hang(1.2)
    pools = DeadlinePools(agent_pools(arm.base_url), budget_s=2.0)
    started = time.monotonic()
    with pytest.raises(ArmUnreachable, match="budget"):
        machine_sync.sync(hook_request(make_machine()), pools)
    assert time.monotonic() - started < 2.0 + 0.5


def test_a_trickling_arm_answer_keeps_the_hook_call_inside_metacontrollers_timeout(arm, client):
    """One byte a second never trips a read timeout; the hook answers 500 once its ARM budget is spent."""
    arm.drip(1.0)
    started = time.monotonic()
    answer = client.post("/sync/machine", json=hook_request(make_machine()))
    elapsed = time.monotonic() - started
    assert answer.status_code == 500 and "budget" in answer.get_json()["error"]
    assert ARM_BUDGET_S <= elapsed < 10.0, elapsed
