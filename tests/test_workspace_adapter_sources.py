"""What an adapter's fetch Job may run on and copy from: the Job is scheduled like the model
pod (the Workspace's node affinity and GPU tolerations, narrowed to one node by name; never nodeName, which
bypasses the scheduler and taints), and an adapter volume is only storage the namespace owns."""

from __future__ import annotations

import copy

import pytest
from test_workspace_live_adapters import FIN, jobs_of, run, serving
from workspace_support import condition, find

from hooks.workspace.children import live_adapters


def test_fetch_jobs_are_placed_by_the_scheduler_like_the_model_pod():
    resp = run(serving(FIN))
    model_pod = find(resp["children"], "Deployment", "ws1")["spec"]["template"]["spec"]
    jobs = jobs_of(resp)
    assert jobs
    for job in jobs:
        pod = job["spec"]["template"]["spec"]
        assert "nodeName" not in pod and "nodeSelector" not in pod
        assert pod["tolerations"] == model_pod["tolerations"]
        [term] = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        [model_term] = model_pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
            "nodeSelectorTerms"
        ]
        assert term["matchExpressions"] == model_term["matchExpressions"]  # the Workspace's labelSelector
        assert term["matchFields"] == [
            {"key": "metadata.name", "operator": "In", "values": [live_adapters.pinned_node(pod)]}
        ]
    assert {live_adapters.pinned_node(j["spec"]["template"]["spec"]) for j in jobs} == {"aks-gpu-0", "aks-gpu-1"}


def test_fetch_jobs_tolerate_only_the_gpu_taints():
    [job, *_] = jobs_of(run(serving(FIN)))
    keys = {t["key"] for t in job["spec"]["template"]["spec"]["tolerations"]}
    assert keys == {"nvidia.com/gpu", "sku"}  # not CriticalAddonsOnly: a system node never runs one


def volume_adapter(volume: dict) -> dict:
    return {"source": {"name": "vol", "volumeSource": copy.deepcopy(volume)}}


@pytest.mark.parametrize(
    "volume",
    [
        {"hostPath": {"path": "/etc/kubernetes"}},
        {"secret": {"secretName": "hf-token"}},
        {"projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}},
        {"csi": {"driver": "secrets-store.csi.k8s.io", "volumeAttributes": {"secretProviderClass": "kv"}}},
        {"nfs": {"server": "10.0.0.9", "path": "/"}},
        {"downwardAPI": {"items": []}},
        {"persistentVolumeClaim": {"claimName": "a"}, "hostPath": {"path": "/"}},
        {},
    ],
    ids=["hostPath", "secret", "projected", "csi", "nfs", "downwardAPI", "two-types", "empty"],
)
def test_a_volume_type_that_is_not_adapter_storage_is_refused_naming_the_field(volume):
    resp = run(serving(volume_adapter(volume)))
    ready = condition(resp, "ResourceReady")
    assert ready["status"] == "False"
    assert "inference.adapters[0].source.volumeSource" in ready["message"]
    assert "persistentVolumeClaim, configMap, image" in ready["message"]
    assert not jobs_of(resp)


@pytest.mark.parametrize(
    "volume",
    [
        {"persistentVolumeClaim": {"claimName": "adapters", "readOnly": True}},
        {"configMap": {"name": "small-adapter"}},
        {"image": {"reference": "reg.example.com/adapters/a:1", "pullPolicy": "IfNotPresent"}},
    ],
    ids=["pvc", "configMap", "image"],
)
def test_storage_the_namespace_owns_is_accepted(volume):
    resp = run(serving(volume_adapter(volume)))
    assert condition(resp, "ResourceReady")["reason"] != "InvalidWorkspace"
    [job, *_] = jobs_of(resp)
    [source] = [v for v in job["spec"]["template"]["spec"]["volumes"] if v["name"] == live_adapters.SOURCE_VOLUME]
    assert {k: v for k, v in source.items() if k != "name"} == volume
