"""What the model pods the hook renders may do with the node's weights cache and memory.

- Writers and readers: the `model-weights` init container (our code) mounts the cache read-write and
  names the pod's namespace; the model container, and the tuning Job's trainer, mount only their own
  model's folder, read-only.
- The model server's memory limit follows the preset's footprint.
"""

from __future__ import annotations

import math

import pytest
from workspace_support import NOW, request, workspace

from hooks.settings import Settings
from hooks.workspace import catalog
from hooks.workspace.children import pod_parts, weights
from hooks.workspace.planning import parse_and_plan
from hooks.workspace.sync import sync
from inference.image_weights import cache_repo

CACHE_VOLUME = "weights-cache"


def rendered_pod(ws: dict, settings: Settings | None = None) -> dict:
    response = sync(request(ws), settings or Settings(), NOW)
    workload = next(c for c in response["children"] if c["kind"] in ("Deployment", "StatefulSet"))
    return workload["spec"]["template"]["spec"]


def serving(preset: dict, sku: str = "Standard_NC24ads_A100_v4", count: int = 1) -> dict:
    return workspace(
        resource={"instanceType": sku, "count": count, "labelSelector": {"matchLabels": {"apps": "m"}}},
        inference={"preset": preset},
    )


def cache_mounts(container: dict) -> list[dict]:
    return [m for m in container.get("volumeMounts", []) if m["name"] == CACHE_VOLUME]


def test_the_model_container_mounts_only_its_model_read_only_and_the_writer_names_the_namespace():
    pod = rendered_pod(serving({"name": "phi-3-mini-4k-instruct"}))
    main = pod["containers"][0]
    assert cache_mounts(main) == [
        {
            "name": CACHE_VOLUME,
            "mountPath": "/mnt/weights-cache/models/microsoft--Phi-3-mini-4k-instruct",
            "subPath": "models/microsoft--Phi-3-mini-4k-instruct",
            "readOnly": True,
        }
    ]
    writer = next(c for c in pod["initContainers"] if c["name"] == "model-weights")
    assert cache_mounts(writer) == [{"name": CACHE_VOLUME, "mountPath": "/mnt/weights-cache"}]
    assert writer["command"][-2:] == ["--namespace", "$(POD_NAMESPACE)"]
    assert {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}} in writer["env"]


def tuning_pod(preset: dict) -> dict:
    ws = workspace(
        resource={"instanceType": "Standard_NC24ads_A100_v4", "labelSelector": {"matchLabels": {"apps": "t"}}},
        inference=None,
        tuning={
            "preset": preset,
            "method": "qlora",
            "input": {"urls": ["https://example.com/data.parquet"]},
            "output": {"image": "myacr.azurecr.io/adapters/a:1", "imagePushSecret": "push"},
        },
    )
    job = next(c for c in sync(request(ws), Settings(), NOW)["children"] if c["kind"] == "Job")
    return job["spec"]["template"]["spec"]


def test_the_trainer_reads_its_model_read_only_and_only_the_writer_holds_the_token():
    pod = tuning_pod({"name": "phi-3-mini-4k-instruct", "presetOptions": {"modelAccessSecret": "hf"}})
    init = {c["name"]: c for c in pod["initContainers"]}
    assert list(init)[-3:] == ["weights-cache-owner", "model-weights", "trainer"]
    trainer, writer = init["trainer"], init["model-weights"]
    assert cache_mounts(trainer) == [
        {
            "name": CACHE_VOLUME,
            "mountPath": "/mnt/weights-cache/models/microsoft--Phi-3-mini-4k-instruct",
            "subPath": "models/microsoft--Phi-3-mini-4k-instruct",
            "readOnly": True,
        }
    ]
    assert trainer["command"][trainer["command"].index("--weights-cache") + 1] == "/mnt/weights-cache"
    assert cache_mounts(writer) == [{"name": CACHE_VOLUME, "mountPath": "/mnt/weights-cache"}]
    assert writer["command"][-2:] == ["--namespace", "$(POD_NAMESPACE)"]
    assert any(e["name"] == "HF_TOKEN" for e in writer["env"])
    assert not any(e["name"] == "HF_TOKEN" for e in trainer["env"])  # nothing left for the trainer to fetch


def test_a_private_preset_is_tuned_without_the_node_cache():
    pod = tuning_pod({"name": "phi-3-mini-4k-instruct", "presetOptions": {"image": "myacr.azurecr.io/m:1"}})
    assert not any(v["name"] == CACHE_VOLUME for v in pod["volumes"])
    assert not any(c["name"] in ("weights-cache-owner", "model-weights") for c in pod["initContainers"])


@pytest.mark.parametrize("cache", ["node", "pod"])
def test_an_image_without_image_volumes_is_mounted_where_the_image_puller_puts_it(cache):
    image = "myacr.azurecr.io/models/llama:1"
    ws = serving({"name": "phi-3-mini-4k-instruct", "presetOptions": {"image": image}})
    pod = rendered_pod(ws, Settings(image_volumes=False, weights_cache=cache))
    main = pod["containers"][0]
    folder = "models/" + cache_repo(image).replace("/", "--")  # the folder inference.image_weights fills
    assert cache_mounts(main) == [
        {"name": CACHE_VOLUME, "mountPath": f"/mnt/weights-cache/{folder}", "subPath": folder, "readOnly": True}
    ]
    link = next(m for m in main["volumeMounts"] if m["name"] == weights.LINK_VOLUME)
    assert link.get("readOnly") is True


def test_every_mount_of_the_cache_in_a_model_container_is_read_only():
    for name, preset in sorted(catalog.presets().items()):
        spec: dict = {"name": name, "presetOptions": {"modelAccessSecret": "hf"}}
        if preset.weights_source == "private":
            spec = {"name": name, "accessMode": "private", "presetOptions": {"image": f"reg.example.com/{name}:1"}}
        ws = next(
            (w for n in (1, 2, 3, 4) if parse_and_plan(w := serving(spec, "Standard_ND96isr_H200_v5", n))[0]), None
        )
        if ws is None:
            continue
        for container in rendered_pod(ws, Settings(image_volumes=False))["containers"]:
            for mount in cache_mounts(container):
                assert mount.get("readOnly") is True and mount["subPath"].startswith("models/"), (name, mount)


@pytest.mark.parametrize(
    ("preset", "sku", "count"),
    [
        ("phi-3-mini-4k-instruct", "Standard_NC24ads_A100_v4", 1),
        ("llama-3.3-70b-instruct", "Standard_ND96isr_H200_v5", 1),
    ],
)
def test_the_model_server_has_a_memory_limit_from_the_presets_footprint(preset, sku, count):
    p = catalog.presets()[preset]
    ws = serving({"name": preset, "presetOptions": {"modelAccessSecret": "hf"}}, sku, count)
    planned, problems = parse_and_plan(ws)
    assert planned is not None, f"{preset} must fit {count} x {sku}: {problems}"
    main = rendered_pod(ws)["containers"][0]
    limit = main["resources"]["limits"]["memory"]
    assert limit.endswith("Gi")
    gpus = int(next(v for k, v in main["resources"]["limits"].items() if k != "memory"))
    # The documented footprint: the node's share of the weights + 8 GiB + 4 GiB per GPU, rounded up.
    assert int(limit[:-2]) == math.ceil(p.weights + 8 + 4 * gpus)
    assert int(limit[:-2]) >= p.weights  # the weights pass through host memory on their way to the GPUs
    assert "memory" not in main["resources"].get("requests", {})  # the request defaults to the limit


def test_a_multi_node_preset_limits_each_node_to_its_share():
    assert pod_parts.model_server_memory_gib(131.0, 2, 8) == math.ceil(65.5 + 8 + 32)
    assert pod_parts.model_server_memory_gib(131.0, 1, 8) == math.ceil(131 + 8 + 32)
