"""What the Workspace hook renders for model weights: the node-local cache, image volumes, the startup
probe budget, and the cold-start phases it reads back from the pods' status."""

from __future__ import annotations

import math

import jsonschema
import pytest
from crd_support import workspace_schema
from workspace_support import NOW, request, workspace

from hooks.settings import Settings
from hooks.workspace import catalog
from hooks.workspace.planning import parse_and_plan
from hooks.workspace.sync import sync

AKS = Settings()
GIB = 1 << 30


def pod_of(response: dict) -> dict:
    workload = next(c for c in response["children"] if c["kind"] in ("Deployment", "StatefulSet"))
    return workload["spec"]["template"]["spec"]


def render(ws: dict, settings: Settings = AKS, pods: list | None = None) -> dict:
    return sync(request(ws, pods=pods), settings, NOW)


def expected_budget_seconds(preset: catalog.Preset) -> float:
    # The documented formula: min(2 h, max(readiness_timeout_minutes, 10 min + weights / 100 MB/s)).
    return min(7200, max(preset.readiness_timeout_minutes * 60, 600 + preset.weights * GIB / 100e6))


def a_valid_workspace(name: str) -> dict | None:
    """The preset on the largest GPU SKU, with as many nodes as it needs (None when no count fits)."""
    preset = {"name": name, "presetOptions": {"modelAccessSecret": "hf"}}
    if catalog.presets()[name].weights_source == "private":
        preset = {"name": name, "accessMode": "private", "presetOptions": {"image": f"reg.example.com/{name}:1"}}
    for count in (1, 2, 3, 4):
        ws = workspace(
            resource={
                "instanceType": "Standard_ND96isr_H200_v5",
                "count": count,
                "labelSelector": {"matchLabels": {"a": "b"}},
            },
            inference={"preset": preset},
        )
        planned, _ = parse_and_plan(ws)
        if planned is not None:
            return ws
    return None


@pytest.mark.parametrize("name", sorted(catalog.presets()))
def test_startup_probe_budget_follows_the_weights_size(name):
    preset = catalog.presets()[name]
    ws = a_valid_workspace(name)
    assert ws is not None, f"{name} has no valid placement on the largest SKU"
    probe = pod_of(render(ws))["containers"][0]["startupProbe"]
    assert probe["failureThreshold"] * probe["periodSeconds"] >= expected_budget_seconds(preset)
    assert probe["failureThreshold"] == math.ceil(expected_budget_seconds(preset) / probe["periodSeconds"])


def test_a_70b_model_gets_more_than_the_fixed_30_minutes():
    preset = catalog.presets()["llama-3.3-70b-instruct"]
    assert preset.readiness_timeout_minutes * 60 < expected_budget_seconds(preset) < 7200


def test_hf_weights_come_from_the_node_cache_on_nvme():
    pod = pod_of(render(workspace()))  # Standard_NC24ads_A100_v4 has local NVMe
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["weights-cache"]["hostPath"] == {"path": AKS.weights_cache_nvme_path, "type": "DirectoryOrCreate"}
    init = {c["name"]: c for c in pod["initContainers"]}
    assert init["model-weights"]["command"] == [
        "python",
        "-m",
        "inference.weights",
        "--model",
        "microsoft/Phi-3-mini-4k-instruct",
        "--cache",
        "/mnt/weights-cache",
        "--namespace",
        "$(POD_NAMESPACE)",
    ]
    owner = init["weights-cache-owner"]
    assert owner["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}
    assert [c["name"] for c in pod["initContainers"]] == ["weights-cache-owner", "model-weights"]
    args = pod["containers"][0]["args"]
    assert args[args.index("--weights-cache") + 1] == "/mnt/weights-cache"
    folder = "models/microsoft--Phi-3-mini-4k-instruct"  # only its own model, read-only
    assert {
        "name": "weights-cache",
        "mountPath": f"/mnt/weights-cache/{folder}",
        "subPath": folder,
        "readOnly": True,
    } in pod["containers"][0]["volumeMounts"]


def test_without_nvme_the_cache_is_on_the_os_disk_and_can_be_per_pod():
    ws = workspace(resource={"instanceType": "Standard_NV36ads_A10_v5", "labelSelector": {"matchLabels": {"a": "b"}}})
    pod = pod_of(render(ws))
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["weights-cache"]["hostPath"]["path"] == AKS.weights_cache_path
    pod = pod_of(render(ws, Settings(weights_cache="pod")))
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["weights-cache"] == {"name": "weights-cache", "emptyDir": {}}
    assert [c["name"] for c in pod["initContainers"]] == ["model-weights"]  # no hostPath, nothing to chown


def test_gated_weights_get_the_token_in_the_fetching_container():
    ws = workspace(
        inference={"preset": {"name": "llama-3.1-8b-instruct", "presetOptions": {"modelAccessSecret": "hf"}}}
    )
    fetch = next(c for c in pod_of(render(ws))["initContainers"] if c["name"] == "model-weights")
    assert fetch["env"] == [
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "HF_TOKEN"}}},
    ]


PRIVATE = {
    "preset": {
        "name": "llama-2-7b",
        "accessMode": "private",
        "presetOptions": {"image": "reg.example.com/llama-2-7b:1", "imagePullSecrets": ["llama-pull"]},
    }
}


def test_preset_image_is_mounted_as_an_image_volume_not_copied():
    pod = pod_of(render(workspace(inference=PRIVATE)))
    assert "initContainers" not in pod  # no copier, no copy of the weights
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["model-weights"] == {
        "name": "model-weights",
        "image": {"reference": "reg.example.com/llama-2-7b:1", "pullPolicy": "IfNotPresent"},
    }
    assert {"name": "model-weights", "mountPath": "/workspace/weights", "subPath": "data", "readOnly": True} in pod[
        "containers"
    ][0]["volumeMounts"]
    assert pod["imagePullSecrets"] == [{"name": "llama-pull"}]  # the kubelet pulls image volumes with them
    assert not any("emptyDir" in v and v["name"] == "model-weights" for v in pod["volumes"])


def test_without_image_volumes_the_image_is_streamed_into_the_node_cache_not_copied():
    pod = pod_of(render(workspace(inference=PRIVATE), Settings(image_volumes=False)))
    init = {c["name"]: c for c in pod["initContainers"]}
    assert list(init) == ["weights-cache-owner", "model-weights"]  # no kaito-copy of the weights
    pull = init["model-weights"]
    assert pull["command"] == [
        "python", "-m", "inference.image_weights", "--image", "reg.example.com/llama-2-7b:1",
        "--cache", "/mnt/weights-cache", "--link", "/mnt/weights-link/weights",
        "--docker-config", "/mnt/pull-secrets/0/config.json",
    ]  # fmt: skip
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["pull-secret-0"]["secret"] == {
        "secretName": "llama-pull",
        "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
    }
    assert "hostPath" in volumes["weights-cache"] and "model-weights" not in volumes
    args = pod["containers"][0]["args"]
    assert args[args.index("--weights-dir") + 1] == "/mnt/weights-link/weights"
    link = {"name": "weights-link", "mountPath": "/mnt/weights-link", "readOnly": True}
    assert link in pod["containers"][0]["volumeMounts"]


def test_settings_name_the_variable_on_bad_values():
    with pytest.raises(ValueError, match="KAITO_WEIGHTS_CACHE"):
        Settings.from_env({"KAITO_WEIGHTS_CACHE": "nfs"})
    with pytest.raises(ValueError, match="KAITO_IMAGE_VOLUMES"):
        Settings.from_env({"KAITO_IMAGE_VOLUMES": "maybe"})
    assert not Settings.from_env({"KAITO_IMAGE_VOLUMES": "false"}).image_volumes


def started_pod(ready: bool = True, cached: bool = False) -> dict:
    weights_state = {
        "terminated": {
            "exitCode": 0,
            "startedAt": "2026-11-26T12:08:00Z",
            "finishedAt": "2026-11-26T12:28:00Z",
            "message": f'{{"cached": {str(cached).lower()}, "downloaded_bytes": {0 if cached else 7_700_000_000}, "phase": "weights"}}',
        }
    }
    conditions = [{"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-11-26T12:06:00Z"}]
    if ready:
        conditions.append({"type": "Ready", "status": "True", "lastTransitionTime": "2026-11-26T12:31:30Z"})
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "ws1-abc",
            "namespace": "team",
            "creationTimestamp": "2026-11-26T12:00:00Z",
            "labels": {"kaito.sh/workspace": "ws1"},
        },
        "status": {
            "startTime": "2026-11-26T12:06:00Z",
            "conditions": conditions,
            "initContainerStatuses": [
                {
                    "name": "weights-cache-owner",
                    "state": {
                        "terminated": {
                            "exitCode": 0,
                            "startedAt": "2026-11-26T12:07:35Z",
                            "finishedAt": "2026-11-26T12:07:36Z",
                        }
                    },
                },
                {"name": "model-weights", "state": weights_state},
            ],
            "containerStatuses": [{"name": "ws1", "state": {"running": {"startedAt": "2026-11-26T12:28:30Z"}}}],
        },
    }


def test_cold_start_phases_come_from_the_pod_status():
    status = render(workspace(), pods=[started_pod()])["status"]
    assert status["coldStart"] == {
        "pod": "ws1-abc",
        "nodeSeconds": 360,
        "imagePullSeconds": 95,
        "weightsSeconds": 1200,
        "weightsCached": False,
        "weightsDownloadedBytes": 7_700_000_000,
        "modelLoadSeconds": 180,
        "summary": "node 6m0s, image pull 1m35s, weights 20m0s (downloaded), model load 3m0s",
    }
    jsonschema.validate(
        {"status": status}, {"type": "object", "properties": {"status": workspace_schema()["properties"]["status"]}}
    )  # the CRD accepts it
    loading = render(workspace(), pods=[started_pod(ready=False, cached=True)])["status"]["coldStart"]
    assert "modelLoadSeconds" not in loading and loading["weightsCached"] is True
    assert "coldStart" not in render(workspace())["status"]  # no pod yet
