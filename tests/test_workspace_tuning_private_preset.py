"""Tuning a private preset (presetOptions.image) uses the weights in that image, copied as inference does,
with its pull secrets; it never falls back to HuggingFace."""

from __future__ import annotations

from workspace_support import find, request, workspace

from hooks.settings import Settings
from hooks.workspace.sync import sync

TUNING = {
    "method": "qlora",
    "input": {"urls": ["https://example.com/d.parquet"]},
    "output": {"image": "r.io/out:1", "imagePushSecret": "push"},
}


def job_pod(preset, settings=None):
    response = sync(
        request(workspace(inference=None, tuning={"preset": preset, **TUNING})), settings or Settings(), "x"
    )
    return find(response["children"], "Job")["spec"]["template"]["spec"]


def trainer(pod):
    return next(c for c in [*pod.get("initContainers", []), *pod["containers"]] if c["name"] == "trainer")


def test_a_private_preset_is_tuned_from_its_image_mounted_as_an_image_volume():
    pod = job_pod(
        {
            "name": "phi-3-mini-4k-instruct",
            "presetOptions": {"image": "myacr.azurecr.io/phi-3:1", "imagePullSecrets": ["acr-pull"]},
        }
    )
    command = trainer(pod)["command"]
    assert "--model-repo" not in command and "--weights-cache" not in command
    model_dir = command[command.index("--model") + 1]
    mount = next(m for m in trainer(pod)["volumeMounts"] if m["mountPath"] == model_dir)
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["image"]["reference"] == "myacr.azurecr.io/phi-3:1" and mount["subPath"] == "data"
    assert not any(c["image"] == "myacr.azurecr.io/phi-3:1" for c in pod["initContainers"])  # nothing copied
    assert {"name": "acr-pull"} in pod["imagePullSecrets"]


def test_a_private_preset_is_tuned_from_its_image_copied_without_image_volumes():
    pod = job_pod(
        {
            "name": "phi-3-mini-4k-instruct",
            "presetOptions": {"image": "myacr.azurecr.io/phi-3:1", "imagePullSecrets": ["acr-pull"]},
        },
        Settings(image_volumes=False),
    )
    names = [c["name"] for c in pod["initContainers"]]
    copy = next(c for c in pod["initContainers"] if c["image"] == "myacr.azurecr.io/phi-3:1")
    assert names.index(copy["name"]) < names.index("trainer")
    assert names.index("install-copier") < names.index(copy["name"])
    command = trainer(pod)["command"]
    assert "--model-repo" not in command and "--weights-cache" not in command
    model_dir = command[command.index("--model") + 1]
    weights_mount = next(m for m in trainer(pod)["volumeMounts"] if m["mountPath"] == model_dir)
    copy_mount = next(m for m in copy["volumeMounts"] if m["name"] == weights_mount["name"])
    assert copy["command"][-1] == model_dir and copy_mount["mountPath"] == model_dir
    assert {"name": "acr-pull"} in pod["imagePullSecrets"]


def test_a_huggingface_preset_still_downloads_by_repo():
    pod = job_pod({"name": "phi-3-mini-4k-instruct"})
    command = trainer(pod)["command"]
    assert command[command.index("--model-repo") + 1] == "microsoft/Phi-3-mini-4k-instruct"
    assert not any(c["name"] == "model-weights-copy" for c in pod.get("initContainers", []))
