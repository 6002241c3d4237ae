"""The Machine hook refuses Machines it must never turn into agent pools, whoever wrote them:
sizes that are not NVIDIA GPU sizes of hooks/data/skus.yaml, and OS disks outside AKS's bounds.
Nothing reaches ARM (the local fake, tests/arm_support/fake_arm.py) for them."""

import pytest

pytest.importorskip("azure.mgmt.containerservice", reason="azure-mgmt-containerservice is not installed")

from arm_support.pools import agent_pools
from machine_support import conditions, hook_request, make_machine

from hooks.machine import sync as machine_sync

pytestmark = pytest.mark.integration


def sync(arm, machine):
    pools = agent_pools(arm.base_url)
    return machine_sync.sync(hook_request(machine), pools)


@pytest.mark.parametrize(
    "vm, storage, why",
    [
        ("Standard_D96s_v5", "120Gi", "not an NVIDIA GPU size"),  # a CPU size
        ("Standard_NG32ads_V620_v1", "120Gi", "not an NVIDIA GPU size"),  # an AMD GPU: no driver support
        ("Standard_ND96isr_H100_v5", "4Ti", "between 30Gi and 2048Gi"),
        ("Standard_ND96isr_H100_v5", "1Gi", "between 30Gi and 2048Gi"),
    ],
)
def test_a_machine_outside_the_catalog_or_disk_bounds_never_reaches_arm(arm, vm, storage, why):
    response = sync(arm, make_machine(vm=vm, storage=storage))
    ready = conditions(response)["Ready"]
    assert ready["reason"] == "InvalidMachine" and why in ready["message"], ready
    assert arm.state.requests == []


@pytest.mark.parametrize("vm, storage", [("standard_nc24ads_a100_v4", "30Gi"), ("Standard_ND96isr_H100_v5", "2Ti")])
def test_gpu_sizes_and_disks_within_bounds_are_provisioned(arm, vm, storage):
    response = sync(arm, make_machine(vm=vm, storage=storage))
    assert conditions(response)["Ready"]["reason"] == "Creating"
    assert len(arm.calls("PUT")) == 1
