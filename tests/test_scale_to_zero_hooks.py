"""Scale to zero, hook side: spec.replicas 0 wins over resource.count, no model pod and no Machine once the
pods are gone, the front's children and its one permission, and the status (scaled to zero, waking, serving)."""

from __future__ import annotations

import pytest
from workspace_support import DEPLOYMENTS, MACHINES, STATEFULSETS, condition, find, request, workspace

from hooks.settings import Settings
from hooks.workspace.api import Workspace
from hooks.workspace.scale_to_zero import parse, parse_duration
from hooks.workspace.sync import sync

pytestmark = pytest.mark.scale_to_zero

AKS = Settings()
BYO = Settings(node_provisioning="byo")
A100 = {"instanceType": "Standard_NC24ads_A100_v4", "labelSelector": {"matchLabels": {"apps": "phi-3"}}}
WAKE = {
    "name": "ws1",
    "namespace": "team",
    "uid": "u-1",
    "generation": 1,
    "annotations": {"kaito.sh/scale-to-zero-after": "15m"},
}
NOW, LATER = "2026-12-06T05:00:00Z", "2026-12-06T05:10:00Z"


def run(parent, settings=AKS, now=NOW, **kw):
    return sync(request(parent, **kw), settings, now)


def machines(resp) -> list[dict]:
    return [c for c in resp["children"] if c["kind"] == "Machine"]


def names(resp) -> list[tuple[str, str]]:
    return [(c["kind"], c["metadata"]["name"]) for c in resp["children"]]


def ready_machine(m: dict, node_name: str) -> dict:
    return {
        **m,
        "status": {
            "nodeName": node_name,
            "conditions": [{"type": "Ready", "status": "True", "reason": "NodeReady", "message": "ok"}],
        },
    }


def running_pod(node_name: str, ready: bool = True) -> dict:
    return {
        "metadata": {"name": "ws1-abc", "namespace": "team", "labels": {"kaito.sh/workspace": "ws1"}},
        "spec": {"nodeName": node_name},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def test_zero_replicas_win_over_resource_count_no_machine_no_router():
    resp = run(workspace(resource={**A100, "count": 3}, spec={"replicas": 0}))
    assert find(resp["children"], "Deployment", "ws1")["spec"]["replicas"] == 0
    assert machines(resp) == []
    assert not [n for n in names(resp) if n[1] == "ws1-router"]
    assert (resp["status"]["replicas"], resp["status"]["readyReplicas"]) == (0, 0)
    assert condition(resp, "ResourceReady")["reason"] == "ScaledToZero"
    assert condition(resp, "InferenceReady")["status"] == "False"
    assert condition(resp, "WorkspaceReady")["reason"] == "ScaledToZero"
    assert "requests fail until it is scaled up" in condition(resp, "WorkspaceReady")["message"]
    assert resp["status"]["scaleToZero"] == {"state": "ScaledToZero", "since": NOW}
    assert resp["resyncAfterSeconds"] == 0  # nothing held, nothing to wait for


def test_the_machine_is_released_only_once_the_pod_has_left_its_node():
    serving = run(workspace(resource=A100))
    held = [ready_machine(machines(serving)[0], "aks-node-0")]
    at_zero = workspace(resource=A100, spec={"replicas": 0})
    terminating = run(at_zero, children={MACHINES: held}, pods=[running_pod("aks-node-0")])
    assert [m["metadata"]["name"] for m in machines(terminating)] == [held[0]["metadata"]["name"]]
    assert "releasing" in condition(terminating, "ResourceReady")["message"]
    assert terminating["resyncAfterSeconds"] > 0
    gone = run(at_zero, children={MACHINES: held}, pods=[])
    assert machines(gone) == []  # the Machine's finalizer deletes its agent pool


# The same multi-node Workspace as test_workspace_replicas' count test, here at replicas 0.
def test_a_multi_node_preset_scales_to_zero_too():
    ws = workspace(
        resource={"instanceType": "Standard_NC96ads_A100_v4", "labelSelector": {"matchLabels": {"a": "b"}}},
        inference={"preset": {"name": "deepseek-r1-0528"}},
        spec={"replicas": 0},
    )
    resp = run(ws)
    assert find(resp["children"], "StatefulSet", "ws1")["spec"]["replicas"] == 0
    assert machines(resp) == []
    sts = find(resp["children"], "StatefulSet", "ws1")
    again = run(ws, children={STATEFULSETS: [{**sts, "status": {"readyReplicas": 0}}]})
    assert again["status"]["replicas"] == 0 and condition(again, "InferenceReady")["reason"] == "ScaledToZero"


@pytest.mark.parametrize("instance", ["Standard_NC6s_v3", "Standard_NC24ads_A100_v4"])  # transformers, SGLang
def test_both_runtimes_scale_to_zero_with_bring_your_own_nodes(instance):
    resp = run(
        workspace(
            resource={"instanceType": instance, "count": 2, "labelSelector": {"matchLabels": {"a": "b"}}},
            spec={"replicas": 0},
        ),
        settings=BYO,
    )
    assert find(resp["children"], "Deployment", "ws1")["spec"]["replicas"] == 0
    assert resp["status"]["workerNodes"] == []  # the labelled nodes are left free
    assert condition(resp, "ResourceReady")["status"] == "True"


def test_the_front_is_what_the_service_selects_and_it_relays_to_the_backend_service():
    resp = run(workspace(metadata=WAKE, resource={**A100, "count": 2}, spec={"replicas": 0}))
    assert find(resp["children"], "Service", "ws1")["spec"]["selector"] == {"kaito.sh/workspace-front": "ws1"}
    assert find(resp["children"], "Service", "ws1-backend")["spec"]["selector"] == {"kaito.sh/workspace": "ws1"}
    front = find(resp["children"], "Deployment", "ws1-front")
    container = front["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", "inference.wake_front"]
    args = container["args"]
    assert args[args.index("--upstream") + 1] == "http://ws1-backend.team.svc"
    assert args[args.index("--workspace") + 1] == "team/ws1"
    assert args[args.index("--idle-seconds") + 1] == "900"
    assert args[args.index("--queue-size") + 1] == "100" and args[args.index("--max-wait-seconds") + 1] == "1200"
    assert "kaito.sh/workspace" not in front["spec"]["template"]["metadata"]["labels"]  # no replica
    assert "nvidia.com/gpu" not in str(container["resources"])
    assert "the front holds requests" in condition(resp, "WorkspaceReady")["message"]
    # Several SGLang replicas: the backend Service selects their router, the front stays in front.
    up = run(workspace(metadata=WAKE, resource={**A100, "count": 2}, spec={"replicas": 2}))
    assert find(up["children"], "Service", "ws1-backend")["spec"]["selector"] == {"kaito.sh/workspace-router": "ws1"}
    assert find(up["children"], "Service", "ws1")["spec"]["selector"] == {"kaito.sh/workspace-front": "ws1"}


def test_the_front_may_only_patch_its_own_workspaces_scale_subresource():
    resp = run(workspace(metadata=WAKE, resource=A100, spec={"replicas": 0}))
    role = find(resp["children"], "Role", "ws1-front")
    assert role["rules"] == [
        {"apiGroups": ["kaito.sh"], "resources": ["workspaces/scale"], "resourceNames": ["ws1"], "verbs": ["patch"]}
    ]
    binding = find(resp["children"], "RoleBinding", "ws1-front")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "ws1-front", "namespace": "team"}]
    front = find(resp["children"], "Deployment", "ws1-front")
    assert front["spec"]["template"]["spec"]["serviceAccountName"] == "ws1-front"


def test_without_the_annotation_there_is_no_front():
    resp = run(workspace(resource=A100, spec={"replicas": 0}))
    assert not [n for n in names(resp) if n[1] in ("ws1-front", "ws1-backend")]
    assert find(resp["children"], "Service", "ws1")["spec"]["selector"] == {"kaito.sh/workspace": "ws1"}


@pytest.mark.parametrize(
    ("annotations", "field", "text"),
    [
        ({"kaito.sh/scale-to-zero-after": "soon"}, "kaito.sh/scale-to-zero-after", "15m"),
        ({"kaito.sh/scale-to-zero-after": "10s"}, "kaito.sh/scale-to-zero-after", "at least 1m"),
        (
            {"kaito.sh/scale-to-zero-after": "15m", "kaito.sh/scale-to-zero-queue-size": "0"},
            "kaito.sh/scale-to-zero-queue-size",
            "whole number",
        ),
        (
            {"kaito.sh/scale-to-zero-after": "15m", "kaito.sh/scale-to-zero-max-wait": "5 minutes"},
            "kaito.sh/scale-to-zero-max-wait",
            "20m",
        ),
        ({"kaito.sh/scale-to-zero-max-wait": "5m"}, "kaito.sh/scale-to-zero-max-wait", "only applies with"),
    ],
)
def test_bad_annotations_name_the_field_and_the_fix(annotations, field, text):
    resp = run(workspace(metadata={**WAKE, "annotations": annotations}, resource=A100))
    message = condition(resp, "ResourceReady")["message"]
    assert condition(resp, "ResourceReady")["reason"] == "InvalidWorkspace"
    assert f"metadata.annotations[{field}]" in message and text in message, message


def test_a_template_workspace_cannot_opt_in_but_can_scale_to_zero():
    template = {"spec": {"containers": [{"name": "c", "image": "r.io/app:1"}]}}
    bad = run(workspace(metadata=WAKE, resource=A100, inference={"template": template}))
    assert "inference.preset" in condition(bad, "ResourceReady")["message"]
    ok = run(workspace(resource={**A100, "count": 2}, inference={"template": template}, spec={"replicas": 0}))
    assert find(ok["children"], "Deployment", "ws1")["spec"]["replicas"] == 0


def test_settings_and_durations():
    assert [parse_duration(t) for t in ("15m", "1h30m", "90s", "2h", "", "m", "1d")] == [
        900,
        5400,
        90,
        7200,
        None,
        None,
        None,
    ]
    ws = Workspace.model_validate(
        workspace(
            metadata={
                **WAKE,
                "annotations": {
                    "kaito.sh/scale-to-zero-after": "1h",
                    "kaito.sh/scale-to-zero-queue-size": "8",
                    "kaito.sh/scale-to-zero-max-wait": "5m",
                },
            },
            resource=A100,
        )
    )
    settings, problems = parse(ws)
    assert problems == [] and settings is not None
    assert (settings.idle_seconds, settings.queue_size, settings.max_wait_seconds) == (3600, 8, 300)


def test_status_says_scaled_to_zero_then_waking_with_its_phase_then_serving():
    zero = workspace(metadata=WAKE, resource=A100, spec={"replicas": 0})
    at_zero = run(zero)
    assert at_zero["status"]["scaleToZero"] == {"state": "ScaledToZero", "since": NOW}
    kept = run({**zero, "status": at_zero["status"]}, now=LATER)
    assert kept["status"]["scaleToZero"]["since"] == NOW  # since when, not since the last sync

    one = {**workspace(metadata=WAKE, resource=A100, spec={"replicas": 1}), "status": at_zero["status"]}
    dep = {**find(run(one)["children"], "Deployment", "ws1"), "status": {"replicas": 1, "readyReplicas": 0}}
    pending = {
        "metadata": {
            "name": "ws1-p",
            "namespace": "team",
            "labels": {"kaito.sh/workspace": "ws1"},
            "creationTimestamp": "2026-12-06T05:09:00Z",
        },
        "spec": {},
        "status": {"phase": "Pending"},
    }
    waking = run(one, now=LATER, children={DEPLOYMENTS: [dep]}, pods=[pending])
    assert waking["status"]["scaleToZero"] == {"state": "Waking", "phase": "node", "since": LATER}
    scheduled = {
        **pending,
        "spec": {"nodeName": "aks-n"},
        "status": {
            "phase": "Pending",
            "startTime": "2026-12-06T05:14:00Z",
            "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-12-06T05:14:00Z"}],
            "initContainerStatuses": [{"name": "model-weights", "state": {"waiting": {"reason": "PodInitializing"}}}],
        },
    }
    pulling = run({**one, "status": waking["status"]}, now=LATER, children={DEPLOYMENTS: [dep]}, pods=[scheduled])
    assert pulling["status"]["scaleToZero"] == {"state": "Waking", "phase": "image", "since": LATER}
    loading = {
        **scheduled,
        "status": {
            **scheduled["status"],
            "initContainerStatuses": [
                {
                    "name": "model-weights",
                    "state": {
                        "terminated": {
                            "exitCode": 0,
                            "startedAt": "2026-12-06T05:15:00Z",
                            "finishedAt": "2026-12-06T05:16:00Z",
                        }
                    },
                }
            ],
            "containerStatuses": [{"name": "ws1", "state": {"running": {"startedAt": "2026-12-06T05:16:00Z"}}}],
        },
    }
    load = run({**one, "status": waking["status"]}, now=LATER, children={DEPLOYMENTS: [dep]}, pods=[loading])
    assert load["status"]["scaleToZero"]["phase"] == "load"
    ready_dep = {**dep, "status": {"replicas": 1, "readyReplicas": 1}}
    serving = run({**one, "status": load["status"]}, now="2026-12-06T05:20:00Z", children={DEPLOYMENTS: [ready_dep]})
    assert serving["status"]["scaleToZero"] == {"state": "Serving", "since": "2026-12-06T05:20:00Z"}


def test_the_crd_takes_the_status_and_kubectl_get_shows_it():
    import jsonschema
    from crd_support import load_yaml, workspace_schema

    resp = run(workspace(metadata=WAKE, resource=A100, spec={"replicas": 0}))
    jsonschema.validate(
        {**workspace(metadata=WAKE, resource=A100, spec={"replicas": 0}), "status": resp["status"]}, workspace_schema()
    )
    for version in load_yaml("workspace-crd.yaml")["spec"]["versions"]:
        columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
        assert columns["Scale"]["jsonPath"] == ".status.scaleToZero.state" and "priority" not in columns["Scale"]
        assert columns["Waking"]["jsonPath"] == ".status.scaleToZero.phase"


def test_metacontroller_holds_every_permission_the_workspaces_roles_grant():
    """The apiserver lets Metacontroller create a Role only with permissions it holds itself (RBAC's
    escalation check): a front whose Role it cannot create would leave the Workspace without its front."""
    from crd_support import load_yaml

    granted = set()
    for rule in load_yaml("metacontroller-rbac.yaml")["rules"]:
        granted |= {(g, r, v) for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    resp = run(workspace(metadata=WAKE, resource={**A100, "count": 2}, spec={"replicas": 2}))
    roles = [c for c in resp["children"] if c["kind"] == "Role"]
    assert {r["metadata"]["name"] for r in roles} >= {"ws1-front", "ws1-router"}
    for role in roles:
        for rule in role["rules"]:
            for need in ((g, r, v) for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]):
                assert need in granted, f"{role['metadata']['name']} grants {need}, which Metacontroller lacks"


def test_at_zero_the_status_names_the_idle_node_kept_for_the_scale_in_grace_period():
    graced = Settings(scale_in_grace_seconds=600)
    serving = run(workspace(resource=A100), settings=graced)
    held = [ready_machine(machines(serving)[0], "aks-node-0")]
    resp = run(workspace(resource=A100, spec={"replicas": 0}), settings=graced, now=LATER, children={MACHINES: held})
    assert [m["metadata"]["name"] for m in machines(resp)] == [held[0]["metadata"]["name"]]  # kept, idle
    message = condition(resp, "ResourceReady")["message"]
    assert "no GPU node is held" not in message and "1 idle GPU node(s) kept" in message, message
    assert "released in 600 s" in message
