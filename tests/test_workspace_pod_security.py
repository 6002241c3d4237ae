"""Pods the Workspace hook builds run restricted: no service account token, seccomp
RuntimeDefault, no privilege escalation, no capabilities (the one root chown step keeps only CHOWN); the
client Service exposes the API port only, port 29500 stays on the headless Service."""

from __future__ import annotations

import pytest
from workspace_support import find, request, workspace

from hooks.settings import Settings
from hooks.workspace.sync import sync

NOW = "2026-11-26T12:00:00Z"
CASES = {
    "sglang": workspace(),
    "transformers on V100": workspace(
        resource={"instanceType": "Standard_NC6s_v3", "labelSelector": {"matchLabels": {"a": "b"}}}
    ),
    "multi-node": workspace(
        resource={"instanceType": "Standard_NC96ads_A100_v4", "labelSelector": {"matchLabels": {"a": "b"}}},
        inference={"preset": {"name": "deepseek-r1-0528"}},
    ),
    "adapters from images": workspace(
        inference={
            "preset": {"name": "phi-3-mini-4k-instruct"},
            "adapters": [{"source": {"name": "a", "image": "r.io/a:1"}}],
        }
    ),
    "tuning": workspace(
        inference=None,
        tuning={
            "preset": {"name": "phi-3-mini-4k-instruct"},
            "method": "qlora",
            "input": {"urls": ["https://example.com/d.parquet"]},
            "output": {"image": "r.io/out:1", "imagePushSecret": "push"},
        },
    ),
}


def pods(response):
    for child in response["children"]:
        # the Workspace's own workload (a router Deployment in front of replicas needs its token: not ours here)
        if child["kind"] in ("Deployment", "StatefulSet", "Job") and child["metadata"]["name"] == "ws1":
            yield child["kind"], child["spec"]["template"]["spec"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_workload_pods_run_restricted(case):
    response = sync(request(CASES[case]), Settings(), NOW)
    found = list(pods(response))
    assert found, [c["kind"] for c in response["children"]]
    for kind, spec in found:
        assert spec["automountServiceAccountToken"] is False, kind
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, container["name"]
            assert security["capabilities"]["drop"] == ["ALL"], container["name"]
            assert security["capabilities"].get("add", []) in ([], ["CHOWN"]), container["name"]
            assert not security.get("privileged"), container["name"]


def test_the_client_service_has_no_distributed_port():
    children = sync(request(CASES["multi-node"]), Settings(), NOW)["children"]
    main = find(children, "Service", "ws1")
    assert [p["port"] for p in main["spec"]["ports"]] == [80]
    headless = find(children, "Service", "ws1-headless")
    assert [p["port"] for p in headless["spec"]["ports"]] == [29500]
