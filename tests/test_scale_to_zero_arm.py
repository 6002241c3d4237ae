"""The fake ARM's model of how an AKS pool gives its GPU back, which the scale-to-zero benchmark relies on: count 0
is allowed for a User pool (1 for System); scaleDownMode Delete removes the VMs and their disks, Deallocate stops
them and keeps their OS disks (and needs Managed OS disks: ARM refuses it with Ephemeral ones); a scale-up starts
deallocated VMs first. Checked over HTTPS with the REST bodies the Microsoft.ContainerService spec defines."""

from __future__ import annotations

import pytest
import requests
import urllib3
from arm_support.fake_arm import CLUSTER, RESOURCE_GROUP, SUBSCRIPTION, TOKEN, FakeArm

pytestmark = pytest.mark.scale_to_zero
urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)

BASE = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/Microsoft.ContainerService"
    f"/managedClusters/{CLUSTER}/agentPools"
)
GPU = {
    "type": "VirtualMachineScaleSets",
    "vmSize": "Standard_NC24ads_A100_v4",
    "mode": "User",
    "osType": "Linux",
    "osDiskSizeGB": 1024,
}


def put(arm: FakeArm, name: str, **props) -> requests.Response:
    return requests.put(
        f"{arm.base_url}{BASE}/{name}",
        params={"api-version": "2026-08-01"},
        json={"properties": {**GPU, **props}},
        headers={"Authorization": f"Bearer {TOKEN}"},
        verify=False,
        timeout=10,
    )


@pytest.fixture
def arm():
    with FakeArm() as fake:
        yield fake


def test_deallocate_keeps_the_disk_and_a_scale_up_restarts_the_same_vm(arm):
    assert put(arm, "gpu0", count=1, scaleDownMode="Deallocate", osDiskType="Managed").status_code == 201
    arm.write_disk("gpu0", "image:runtime")
    arm.write_disk("gpu0", "weights:phi-3")
    assert put(arm, "gpu0", count=0, scaleDownMode="Deallocate", osDiskType="Managed").status_code == 200
    (node,) = arm.pool_nodes("gpu0")
    assert node["power"] == "Deallocated" and node["disk"] == {"image:runtime": True, "weights:phi-3": True}
    assert put(arm, "gpu0", count=1, scaleDownMode="Deallocate", osDiskType="Managed").status_code == 200
    (again,) = arm.pool_nodes("gpu0")
    assert again["name"] == node["name"] and again["power"] == "Running" and again["starts"] == 2
    assert "weights:phi-3" in again["disk"]  # the node's weights cache survived


def test_delete_mode_and_a_deleted_pool_lose_the_disk(arm):
    assert put(arm, "gpu1", count=1).status_code == 201  # scaleDownMode defaults to Delete
    arm.write_disk("gpu1", "weights:phi-3")
    assert put(arm, "gpu1", count=0).status_code == 200
    assert arm.pool_nodes("gpu1") == []
    assert put(arm, "gpu1", count=1).status_code == 200
    assert arm.pool_nodes("gpu1")[0]["disk"] == {}  # a new VM: image pull and weights again
    arm.finish_delete("gpu1")
    assert arm.pool_nodes("gpu1") == []


@pytest.mark.parametrize(
    ("props", "text"),
    [
        ({"count": 1, "scaleDownMode": "Deallocate", "osDiskType": "Ephemeral"}, "not supported with Ephemeral"),
        ({"count": 1, "scaleDownMode": "Deallocate"}, "set properties.osDiskType to Managed"),
        ({"count": -1}, "must be 0 to 1000 for a User pool"),
        ({"count": 0, "mode": "System"}, "must be 1 to 1000 for a System pool"),
        ({"count": 1, "scaleDownMode": "Stop"}, "scaleDownMode must be one of Delete, Deallocate"),
    ],
)
def test_arm_refuses_what_the_spec_and_aks_refuse(arm, props, text):
    answer = put(arm, "gpu2", **props)
    assert answer.status_code == 400 and text in answer.json()["error"]["message"], answer.text


def test_the_os_disk_type_cannot_change_after_creation(arm):
    assert put(arm, "gpu3", count=1, osDiskType="Ephemeral").status_code == 201
    answer = put(arm, "gpu3", count=0, scaleDownMode="Deallocate", osDiskType="Managed")
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "PropertyChangeNotAllowed"
