"""resource.partition (Kaito v0.12): MIG slices on AKS from the Workspace to the agent pool body ARM gets.

Workspace side: one slice per replica, replicas packed ceil(replicas / slices per node) onto Machines
carrying the AKS gpuInstanceProfile, the fit check by the slice's memory. Machine side: the profile
reaches the PUT body through the real Azure SDK, and the local fake ARM (Azure's servers are unreachable
here) refuses what ARM refuses.
"""

from __future__ import annotations

import pytest
from machine_support import make_machine
from workspace_support import NOW, find, request, workspace

from hooks.machine.pools import pool_body
from hooks.machine.request import read_machine
from hooks.settings import Settings
from hooks.workspace.planning import parse_and_plan
from hooks.workspace.sync import sync

A100 = "Standard_NC24ads_A100_v4"


def mig_workspace(profile="1g.10gb", replicas=3, instance=A100, preset="phi-3-mini-4k-instruct", **annotations):
    ws = workspace(
        resource={
            "instanceType": instance,
            "labelSelector": {"matchLabels": {"apps": "phi-3"}},
            "partition": {"mode": "mig", "profile": profile},
        },
        inference={"preset": {"name": preset}},
        spec={"replicas": replicas},
    )
    if annotations:
        ws["metadata"]["annotations"] = annotations
    return ws


def gpus(container: dict, kind: str = "limits") -> dict:
    """The GPU part of a container's resources (memory and CPU are decided elsewhere)."""
    return {k: v for k, v in container["resources"][kind].items() if k.startswith("nvidia.com/")}


def children(ws: dict) -> list[dict]:
    return sync(request(ws), Settings(), NOW)["children"]


def problems(ws: dict) -> list[str]:
    _, found = parse_and_plan(ws)
    return [str(p) for p in found]


def test_three_replicas_on_1g_slices_share_one_machine_whose_pool_is_mig1g():
    out = children(mig_workspace())
    machines = [c for c in out if c["kind"] == "Machine"]
    assert len(machines) == 1
    assert machines[0]["spec"]["gpuInstanceProfile"] == "MIG1g"
    deployment = find(out, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    main = deployment["spec"]["template"]["spec"]["containers"][0]
    assert gpus(main) == {"nvidia.com/mig-1g.10gb": "1"}
    assert gpus(main, "requests") == {"nvidia.com/mig-1g.10gb": "1"}
    args = main["args"]
    assert args[args.index("--gpus-per-node") + 1] == "1"


@pytest.mark.parametrize("replicas, machines", [(1, 1), (7, 1), (8, 2), (15, 3)])
def test_machines_are_replicas_over_slices_per_node_rounded_up(replicas, machines):
    out = children(mig_workspace(replicas=replicas))
    assert len([c for c in out if c["kind"] == "Machine"]) == machines


def test_the_single_strategy_asks_for_plain_gpus():
    out = children(mig_workspace(**{"kaito.sh/mig-strategy": "single"}))
    main = find(out, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert gpus(main) == {"nvidia.com/gpu": "1"}


def test_an_unknown_strategy_is_refused_naming_the_annotation():
    found = problems(mig_workspace(**{"kaito.sh/mig-strategy": "shared"}))
    assert found and found[0].startswith("metadata.annotations[kaito.sh/mig-strategy]: ") and "single" in found[0]


def test_a_model_larger_than_the_slice_is_refused_naming_a_profile_that_fits():
    found = problems(mig_workspace(preset="llama-3.1-8b-instruct"))  # 22 GiB, gated: give it a token
    found = [p for p in found if "modelAccessSecret" not in p]
    assert found == [
        "resource.partition.profile: llama-3.1-8b-instruct needs 22 GiB of GPU memory, but one 1g.10gb slice of "
        "Standard_NC24ads_A100_v4 has 10 GiB; use profile: 3g.40gb (a slice of 40 GiB)"
    ]


def test_a_profile_the_size_does_not_offer_is_refused_with_the_ones_it_does():
    found = problems(mig_workspace(profile="2g.24gb"))
    assert found == [
        "resource.partition.profile: '2g.24gb' is not a MIG profile AKS offers on Standard_NC24ads_A100_v4; "
        "use one of 1g.10gb, 2g.20gb, 3g.40gb, 4g.40gb, 7g.80gb, or a size that offers it: resource.instanceType "
        "Standard_NC40ads_H100_v5 or Standard_NC80adis_H100_v5"
    ]
    assert problems(mig_workspace(profile="2g.24gb", instance="Standard_NC40ads_H100_v5")) == []


def test_a_size_without_mig_is_refused():
    found = problems(mig_workspace(instance="Standard_NV36ads_A10_v5"))
    assert len(found) == 1 and found[0].startswith("resource.instanceType: Standard_NV36ads_A10_v5 cannot be split")


def test_accelerator_partitions_are_refused_naming_what_is_supported():
    ws = workspace(
        resource={"labelSelector": {"matchLabels": {"apps": "x"}}, "partition": {"mode": "accelerator", "count": 2}}
    )
    found = problems(ws)
    assert len(found) == 1 and found[0].startswith("resource.partition.mode: accelerator partitions")
    assert "mode: mig" in found[0] and "remove resource.partition" in found[0]


def test_a_workspace_without_partition_still_gets_whole_gpus():
    main = find(children(workspace()), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert gpus(main) == {"nvidia.com/gpu": "1"}
    assert "gpuInstanceProfile" not in find(children(workspace()), "Machine")["spec"]


# ---- Machine -> agent pool body -------------------------------------------------------------------


def mig_machine(vm=A100, profile="MIG1g") -> dict:
    machine = make_machine(vm=vm)
    machine["spec"]["gpuInstanceProfile"] = profile
    return machine


def test_the_pool_body_carries_the_profile_as_the_sdk_models_it():
    models = pytest.importorskip("azure.mgmt.containerservice.models", reason="azure-mgmt-containerservice absent")
    body = pool_body(read_machine(mig_machine()), "install-under-test")
    assert body["properties"]["gpuInstanceProfile"] == "MIG1g"
    # The SDK's AgentPool model (generated from the Microsoft.ContainerService REST specification, whose
    # GPUInstanceProfile enum is MIG1g, MIG2g, MIG3g, MIG4g, MIG7g) reads the same field back.
    pool = models.AgentPool(body)
    assert pool.properties.gpu_instance_profile == models.GPUInstanceProfile.MIG1_G
    assert {p.value for p in models.GPUInstanceProfile} == {"MIG1g", "MIG2g", "MIG3g", "MIG4g", "MIG7g"}
    assert "gpuInstanceProfile" not in pool_body(read_machine(make_machine()), "install-under-test")["properties"]


def _create(arm, machine: dict):
    pytest.importorskip("azure.mgmt.containerservice", reason="azure-mgmt-containerservice is not installed")
    from arm_support.fake_arm import INSTALL_ID
    from arm_support.pools import agent_pools

    pools = agent_pools(arm.base_url)
    name = machine["metadata"]["name"]
    pools.create(name, pool_body(read_machine(machine), INSTALL_ID))
    return arm.state.pools[name]["properties"]


@pytest.mark.integration
def test_arm_gets_the_profile_through_the_sdk(arm):
    assert _create(arm, mig_machine())["gpuInstanceProfile"] == "MIG1g"


@pytest.mark.integration
@pytest.mark.parametrize(
    "vm, profile, message",
    [
        ("Standard_NV36ads_A10_v5", "MIG1g", "not supported on VM size Standard_NV36ads_A10_v5"),
        (A100, "MIG5g", "gpuInstanceProfile is invalid"),
    ],
)
def test_fake_arm_refuses_a_profile_on_a_non_mig_size_or_an_unknown_profile(arm, vm, profile, message):
    from hooks.machine.pools import ArmRefused

    with pytest.raises(ArmRefused) as refused:
        _create(arm, mig_machine(vm=vm, profile=profile))
    assert refused.value.code == "InvalidParameter" and message in str(refused.value)
