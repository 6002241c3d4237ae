"""Replicas (Kaito's resource.count and the scale subresource's spec.replicas), Machines that follow them,
the router in front of several SGLang replicas, and the replica status: the sync hook as a pure function."""

from __future__ import annotations

import json

import pytest
from workspace_support import (
    DEPLOYMENTS,
    MACHINES,
    SERVICES,
    STATEFULSETS,
    by_kind,
    condition,
    find,
    request,
    workspace,
)

from hooks.settings import Settings
from hooks.workspace.sync import sync

AKS = Settings()
A100 = {"instanceType": "Standard_NC24ads_A100_v4", "labelSelector": {"matchLabels": {"apps": "phi-3"}}}


def run(parent, **kw):
    return sync(request(parent, **kw), AKS, "2026-11-26T12:00:00Z")


def kinds(resp) -> list[tuple[str, str]]:
    return [(c["kind"], c["metadata"]["name"]) for c in resp["children"]]


def machines(resp) -> list[dict]:
    return [c for c in resp["children"] if c["kind"] == "Machine"]


def ready_machine(m: dict, node_name: str) -> dict:
    return {
        **m,
        "status": {
            "nodeName": node_name,
            "conditions": [{"type": "Ready", "status": "True", "reason": "NodeReady", "message": "ok"}],
        },
    }


def pod(name: str, node_name: str, ready: bool, terminating: bool = False) -> dict:
    meta = {"name": name, "namespace": "team", "labels": {"kaito.sh/workspace": "ws1"}}
    if terminating:
        meta["deletionTimestamp"] = "2026-11-26T11:59:00Z"
    return {
        "metadata": meta,
        "spec": {"nodeName": node_name},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def test_count_3_on_phi_3_gives_3_replicas_3_machines_and_a_router():
    resp = run(workspace(resource={**A100, "count": 3}))
    assert find(resp["children"], "Deployment", "ws1")["spec"]["replicas"] == 3
    assert len(machines(resp)) == 3
    assert [k for k in kinds(resp) if k[0] != "Machine"] == [
        ("ConfigMap", "ws1-adapters"),
        ("Deployment", "ws1"),
        ("Service", "ws1"),
        ("Service", "ws1-headless"),
        ("ServiceAccount", "kaito-adapter-report-ws1"),
        ("Role", "kaito-adapter-report-ws1"),
        ("RoleBinding", "kaito-adapter-report-ws1"),
        ("ServiceAccount", "ws1-router"),
        ("Role", "ws1-router"),
        ("RoleBinding", "ws1-router"),
        ("Deployment", "ws1-router"),
    ]
    svc = find(resp["children"], "Service", "ws1")
    assert svc["spec"]["selector"] == {"kaito.sh/workspace-router": "ws1"}
    assert resp["status"]["replicas"] == 3 and resp["status"]["readyReplicas"] == 0
    assert resp["status"]["selector"] == "kaito.sh/workspace=ws1"


def test_the_router_pod_is_no_replica_and_may_only_read_pods():
    resp = run(workspace(resource={**A100, "count": 2}))
    router = find(resp["children"], "Deployment", "ws1-router")
    template = router["spec"]["template"]
    assert "kaito.sh/workspace" not in template["metadata"]["labels"]  # not selected as a replica, nor by HPA/KEDA
    assert template["spec"]["serviceAccountName"] == "ws1-router"
    gateway, sglang_router = template["spec"]["containers"]
    assert gateway["image"] == sglang_router["image"] == AKS.router_image
    assert gateway["ports"] == [{"name": "http", "containerPort": 5000, "protocol": "TCP"}]
    args = sglang_router["args"]
    assert args[args.index("--host") + 1] == "127.0.0.1"  # the router's admin API stays inside the pod
    assert args[args.index("--selector") + 1] == "kaito.sh/workspace=ws1"
    assert args[args.index("--service-discovery-namespace") + 1] == "team"
    assert args[args.index("--service-discovery-port") + 1] == "5000"  # each replica's gateway
    role = find(resp["children"], "Role", "ws1-router")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
    binding = find(resp["children"], "RoleBinding", "ws1-router")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "ws1-router", "namespace": "team"}]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "ws1-router"}


def test_router_args_are_accepted_by_sglang_routers_own_parser():
    launch_router = pytest.importorskip(
        "sglang_router.launch_router", reason="sglang-router (test extra) is not installed"
    )
    resp = run(workspace(resource={**A100, "count": 2}))
    container = find(resp["children"], "Deployment", "ws1-router")["spec"]["template"]["spec"]["containers"][1]
    assert container["command"] == ["python", "-m", "sglang_router.launch_router"]
    parsed = launch_router.parse_router_args(container["args"])
    assert parsed.service_discovery is True and parsed.selector == {"kaito.sh/workspace": "ws1"}
    assert parsed.service_discovery_port == 5000 and parsed.service_discovery_namespace == "team"
    assert parsed.policy == "cache_aware" and parsed.host == "127.0.0.1"
    assert parsed.health_check_interval_secs == 5 and parsed.health_failure_threshold == 2


def test_spec_replicas_scales_a_single_node_preset_and_count_is_the_floor():
    up = run(workspace(resource=A100, spec={"replicas": 4}))
    assert find(up["children"], "Deployment", "ws1")["spec"]["replicas"] == 4
    assert len(machines(up)) == 4
    floor = run(workspace(resource={**A100, "count": 3}, spec={"replicas": 2}))
    assert find(floor["children"], "Deployment", "ws1")["spec"]["replicas"] == 3
    assert "spec.replicas 2 is below resource.count 3" in condition(floor, "InferenceReady")["message"]


def test_one_replica_has_no_router_and_the_service_selects_the_replica():
    resp = run(workspace(resource=A100, spec={"replicas": 1}))
    assert not [k for k in kinds(resp) if k[1] == "ws1-router"]
    assert find(resp["children"], "Service", "ws1")["spec"]["selector"] == {"kaito.sh/workspace": "ws1"}
    assert resp["status"]["replicas"] == 1


def test_scale_3_to_1_keeps_machines_until_their_pods_are_gone_and_keeps_the_ready_one():
    first = run(workspace(resource=A100, spec={"replicas": 3}))
    observed_machines = [ready_machine(m, f"node-{i}") for i, m in enumerate(machines(first))]
    deployment = {**find(first["children"], "Deployment", "ws1"), "status": {"replicas": 3, "readyReplicas": 1}}
    observed = {
        MACHINES: observed_machines,
        DEPLOYMENTS: [deployment],
        SERVICES: [c for c in first["children"] if c["kind"] == "Service"],
    }
    scaled = workspace(resource=A100, spec={"replicas": 1})
    # The Deployment's ReplicaSet deletes the pods that are not Ready first: while they terminate, their
    # Machines stay.
    pods = [
        pod("ws1-a", "node-1", ready=True),
        pod("ws1-b", "node-0", ready=False, terminating=True),
        pod("ws1-c", "node-2", ready=False, terminating=True),
    ]
    during = run(scaled, children=observed, pods=pods)
    assert find(during["children"], "Deployment", "ws1")["spec"]["replicas"] == 1
    assert sorted(m["metadata"]["name"] for m in machines(during)) == sorted(
        m["metadata"]["name"] for m in observed_machines
    )
    assert during["status"]["replicas"] == 1
    # Once they are gone, only the Machine under the Ready replica remains.
    after = run(scaled, children=observed, pods=pods[:1])
    assert [m["metadata"]["name"] for m in machines(after)] == [observed_machines[1]["metadata"]["name"]]
    assert not [k for k in kinds(after) if k[1] == "ws1-router"]
    assert find(after["children"], "Service", "ws1")["spec"]["selector"] == {"kaito.sh/workspace": "ws1"}


def test_a_failed_pod_does_not_hold_its_machine():
    first = run(workspace(resource=A100, spec={"replicas": 2}))
    observed_machines = [ready_machine(m, f"node-{i}") for i, m in enumerate(machines(first))]
    failed = pod("ws1-x", "node-0", ready=False)
    failed["status"]["phase"] = "Failed"
    resp = run(workspace(resource=A100, spec={"replicas": 1}), children={MACHINES: observed_machines}, pods=[failed])
    assert len(machines(resp)) == 1


def test_a_multi_node_preset_keeps_kaitos_count_and_runs_one_instance():
    ws = workspace(
        resource={"instanceType": "Standard_NC96ads_A100_v4", "labelSelector": {"matchLabels": {"apps": "ds"}}},
        inference={"preset": {"name": "deepseek-r1-0528"}},
        spec={"replicas": 2},
    )
    resp = run(ws)
    sts = find(resp["children"], "StatefulSet", "ws1")
    assert sts["spec"]["replicas"] == 3 and len(machines(resp)) == 3  # one instance on 3 nodes
    assert not [k for k in kinds(resp) if k[0] == "Deployment"]
    assert find(resp["children"], "Service", "ws1")["spec"]["selector"]["statefulset.kubernetes.io/pod-name"] == "ws1-0"
    assert "spec.replicas 2 is not applied" in condition(resp, "InferenceReady")["message"]
    assert resp["status"]["replicas"] == 1
    ready = run(ws, children={STATEFULSETS: [{**sts, "status": {"readyReplicas": 3}}]})
    assert ready["status"]["readyReplicas"] == 1


def test_the_transformers_runtime_gets_replicas_without_a_router():
    ws = workspace(
        resource={"instanceType": "Standard_NC6s_v3", "count": 2, "labelSelector": {"matchLabels": {"a": "b"}}}
    )
    resp = run(ws)
    assert find(resp["children"], "Deployment", "ws1")["spec"]["replicas"] == 2
    assert not [k for k in kinds(resp) if k[1] == "ws1-router"]
    assert find(resp["children"], "Service", "ws1")["spec"]["selector"] == {"kaito.sh/workspace": "ws1"}


def test_a_template_workspace_runs_count_replicas():
    template = {"spec": {"containers": [{"name": "c", "image": "r.io/app:1"}]}}
    resp = run(workspace(resource={**A100, "count": 2}, inference={"template": template}))
    assert find(resp["children"], "Deployment", "ws1")["spec"]["replicas"] == 2
    assert len(machines(resp)) == 2


def test_ready_replicas_come_from_the_deployment():
    first = run(workspace(resource=A100, spec={"replicas": 2}))
    dep = {**find(first["children"], "Deployment", "ws1"), "status": {"replicas": 2, "readyReplicas": 1}}
    resp = run(workspace(resource=A100, spec={"replicas": 2}), children={DEPLOYMENTS: [dep]})
    assert (resp["status"]["replicas"], resp["status"]["readyReplicas"]) == (2, 1)


def test_an_invalid_workspace_keeps_its_replica_status():
    broken = workspace(resource=A100, inference={"preset": {"name": "no-such-preset"}})
    broken["status"] = {"replicas": 2, "readyReplicas": 2, "selector": "kaito.sh/workspace=ws1"}
    resp = run(broken)
    assert {k: resp["status"][k] for k in ("replicas", "readyReplicas", "selector")} == broken["status"]


def test_replicas_are_a_fixpoint():
    ws = workspace(resource={**A100, "count": 3})
    first = run(ws)
    again = run(ws, children=by_kind(first["children"]))
    assert json.dumps(again["children"], sort_keys=True) == json.dumps(first["children"], sort_keys=True)


def test_the_router_pods_gateway_runs_several_processes():
    resp = run(workspace(resource={**A100, "count": 2}))
    gateway = find(resp["children"], "Deployment", "ws1-router")["spec"]["template"]["spec"]["containers"][0]
    args = gateway["args"]
    assert int(args[args.index("--workers") + 1]) > 1
    assert args[args.index("--upstream-health-path") + 1] == "/readiness"
