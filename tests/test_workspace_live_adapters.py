"""Live adapters, the hook's side: the desired set is a ConfigMap child, the adapter files come from
fetch Jobs pinned to the Workspace's nodes, and the model server's pod template never changes with adapters.
Status: status.adapters and AdaptersReady from the fetch Jobs, their pods, and the replicas' reports."""

from __future__ import annotations

import copy
import json

import pytest
from workspace_support import CONFIGMAPS, DEPLOYMENTS, JOBS, NOW, REPO, condition, find, node, request, workspace

from hooks.settings import Settings
from hooks.workspace.children import live_adapters
from hooks.workspace.planning import Adapter
from hooks.workspace.status import adapters as adapter_status
from hooks.workspace.sync import sync

AKS = Settings()
SELECTOR = {"apps": "phi-3"}
A100 = {"node.kubernetes.io/instance-type": "Standard_NC24ads_A100_v4", **SELECTOR}
NODES = [node("aks-gpu-0", A100), node("aks-gpu-1", A100)]
FIN = {"source": {"name": "fin", "image": "reg.example.com/adapters/fin:1", "imagePullSecrets": ["pull-fin"]}}
DOLLY = {"source": {"name": "dolly", "image": "myregistry.azurecr.io/adapters/phi-3-dolly:0.0.1"}, "strength": "0.5"}


def serving(*adapters: dict, count: int = 2) -> dict:
    inference: dict = {"preset": {"name": "phi-3-mini-4k-instruct"}}
    if adapters:
        inference["adapters"] = [copy.deepcopy(a) for a in adapters]
    return workspace(
        resource={
            "instanceType": "Standard_NC24ads_A100_v4",
            "count": count,
            "labelSelector": {"matchLabels": SELECTOR},
        },
        inference=inference,
    )


def run(ws: dict, jobs: list[dict] | None = None, pods: list[dict] | None = None) -> dict:
    children = {JOBS: jobs} if jobs else None
    return sync(request(ws, children=children, nodes=NODES, pods=pods), AKS, NOW)


def pod_template(resp: dict) -> str:
    return json.dumps(find(resp["children"], "Deployment", "ws1")["spec"]["template"], sort_keys=True)


def desired(resp: dict) -> dict:
    return json.loads(find(resp["children"], "ConfigMap", "ws1-adapters")["data"]["adapters.json"])


def jobs_of(resp: dict) -> list[dict]:
    return [c for c in resp["children"] if c["kind"] == "Job"]


# --- the pod template does not change when adapters do ----------------------------------------------


def test_changing_adapters_changes_the_config_map_and_never_the_pod_template():
    steps = {
        "none": serving(),
        "add fin": serving(FIN),
        "add dolly": serving(FIN, DOLLY),
        "re-weight dolly": serving(FIN, {**DOLLY, "strength": "0.25"}),
        "new image for fin": serving({"source": {**FIN["source"], "image": "reg.example.com/adapters/fin:2"}}, DOLLY),
        "remove fin": serving(DOLLY),
        "remove all": serving(),
    }
    responses = {step: run(ws) for step, ws in steps.items()}
    templates = {step: pod_template(r) for step, r in responses.items()}
    assert len(set(templates.values())) == 1, "the model server's pod template changed with the adapters"
    sets = [json.dumps(desired(r), sort_keys=True) for r in responses.values()]
    assert len(set(sets)) == len(sets) - 1  # every step changes the set; "remove all" equals "none"
    assert desired(responses["none"]) == desired(responses["remove all"])
    assert desired(responses["re-weight dolly"])["adapters"][1] == {
        "name": "dolly",
        "key": desired(responses["add dolly"])["adapters"][1]["key"],
        "strength": 0.25,
    }
    fin_keys = {step: desired(responses[step])["adapters"][0]["key"] for step in ("add fin", "new image for fin")}
    assert fin_keys["add fin"] != fin_keys["new image for fin"]


def test_the_pod_mounts_the_set_as_a_directory_and_the_node_folder():
    resp = run(serving(FIN))
    spec = find(resp["children"], "Deployment", "ws1")["spec"]["template"]["spec"]
    [main] = spec["containers"]
    mounts = {m["name"]: m for m in main["volumeMounts"]}
    assert mounts["adapters-desired"] == {
        "name": "adapters-desired",
        "mountPath": "/etc/kaito/adapters",
        "readOnly": True,
    }
    assert "subPath" not in mounts["adapters-desired"]  # a subPath mount never sees the kubelet's updates
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["adapters-desired"]["configMap"] == {"name": "ws1-adapters"}
    assert volumes["adapter-files"]["hostPath"] == {
        "path": "/var/lib/kaito/adapters/team/ws1",
        "type": "DirectoryOrCreate",
    }
    args = main["args"]
    assert args[args.index("--live-adapters") + 1] == "/etc/kaito/adapters/adapters.json"
    assert args[args.index("--adapter-files") + 1] == "/var/lib/kaito/adapters"
    assert "--adapter" not in args


def test_the_desired_set_is_deterministic_json_with_numbers():
    a, b = run(serving(FIN, DOLLY)), run(serving(FIN, DOLLY))
    assert find(a["children"], "ConfigMap", "ws1-adapters") == find(b["children"], "ConfigMap", "ws1-adapters")
    doc = desired(a)
    assert [(x["name"], x["strength"]) for x in doc["adapters"]] == [("fin", 1.0), ("dolly", 0.5)]
    assert all(len(x["key"]) == live_adapters.KEY_LENGTH for x in doc["adapters"])


def test_a_family_sglang_cannot_apply_adapters_to_gets_no_live_adapters():
    resp = sync(request(workspace(inference={"preset": {"name": "falcon-7b"}}), nodes=NODES), AKS, NOW)
    assert not [c for c in resp["children"] if c["kind"] in ("ConfigMap", "Job")]
    main = find(resp["children"], "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert "--live-adapters" not in main["args"]
    assert "adapters" not in resp["status"]


def test_templates_and_tuning_get_no_adapter_children():
    template = {"spec": {"containers": [{"name": "c", "image": "r.io/x:1"}]}}
    resp = sync(request(workspace(inference={"template": template}), nodes=NODES), AKS, NOW)
    assert [c["kind"] for c in resp["children"] if c["kind"] in ("ConfigMap", "Job")] == []


# --- fetch Jobs ----------------------------------------------------------------------------------------


def test_one_fetch_job_per_node_and_adapter_pinned_to_the_node():
    resp = run(serving(FIN, DOLLY))
    jobs = jobs_of(resp)
    assert len(jobs) == 4
    assert sorted({live_adapters.pinned_node(j["spec"]["template"]["spec"]) for j in jobs}) == [
        "aks-gpu-0",
        "aks-gpu-1",
    ]
    assert [j["metadata"]["name"] for j in jobs] == sorted(j["metadata"]["name"] for j in jobs)
    fin = next(j for j in jobs if j["metadata"]["annotations"]["kaito.sh/adapter-source"] == FIN["source"]["image"])
    pod = fin["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "pull-fin"}]
    assert {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"} in pod["tolerations"]
    init = {c["name"]: c for c in pod["initContainers"]}
    assert list(init) == ["adapter-files-owner", "install-copier", "copy"]
    key = fin["metadata"]["labels"]["kaito.sh/adapter-key"]
    assert init["copy"]["image"] == FIN["source"]["image"]  # the kubelet pulls it: pull secrets, kubelet identity
    assert init["copy"]["command"] == ["/kaito-tools/kaito-copy", "/data", f"/var/lib/kaito/adapters/{key}"]
    assert init["copy"]["securityContext"]["runAsUser"] == 65532
    [complete] = pod["containers"]
    assert complete["command"][-2] == f"/var/lib/kaito/adapters/{key}/.kaito-complete"
    assert pod["volumes"][1]["hostPath"] == {"path": "/var/lib/kaito/adapters/team/ws1", "type": "DirectoryOrCreate"}
    assert pod["automountServiceAccountToken"] is False
    assert "kaito.sh/workspace" not in fin["spec"]["template"]["metadata"]["labels"]  # not a replica


def test_fetch_jobs_follow_the_adapters_and_keep_their_names():
    both = {j["metadata"]["name"] for j in jobs_of(run(serving(FIN, DOLLY)))}
    reweighted = {j["metadata"]["name"] for j in jobs_of(run(serving(FIN, {**DOLLY, "strength": "0.9"})))}
    only_dolly = {j["metadata"]["name"] for j in jobs_of(run(serving(DOLLY)))}
    assert reweighted == both  # a re-weight needs no new files
    assert only_dolly < both and len(only_dolly) == 2  # fin's Jobs are no longer desired: Metacontroller deletes them


def test_a_long_workspace_name_gives_job_names_within_63_characters():
    name = "w" * 52
    job = live_adapters.fetch_job_name(name, "0123456789ab", "aks-gpu-" + "x" * 200)
    assert len(job) <= 63 and job.startswith("w") and "--" not in job
    assert job == live_adapters.fetch_job_name(name, "0123456789ab", "aks-gpu-" + "x" * 200)
    assert job != live_adapters.fetch_job_name(name, "0123456789ab", "aks-gpu-" + "y" * 200)


def test_fetch_jobs_also_go_where_replicas_run():
    ws = serving(FIN, count=1)
    pod = {
        "metadata": {"name": "ws1-abc", "namespace": "team", "labels": {"kaito.sh/workspace": "ws1"}},
        "spec": {"nodeName": "other-node"},
        "status": {"phase": "Running"},
    }
    nodes = {live_adapters.pinned_node(j["spec"]["template"]["spec"]) for j in jobs_of(run(ws, pods=[pod]))}
    assert "other-node" in nodes


def test_a_volume_adapter_is_copied_from_the_volume_in_the_fetch_job():
    pvc = {"source": {"name": "local", "volumeSource": {"persistentVolumeClaim": {"claimName": "adapters"}}}}
    resp = run(serving(pvc, count=1))
    [job] = jobs_of(resp)
    pod = job["spec"]["template"]["spec"]
    assert {"name": "adapter-source", "persistentVolumeClaim": {"claimName": "adapters"}} in pod["volumes"]
    copy_step = pod["initContainers"][-1]
    assert copy_step["image"] == AKS.runtime_image and copy_step["command"][1] == "/mnt/adapter-source"
    template = find(resp["children"], "Deployment")["spec"]["template"]["spec"]
    assert not [v for v in template["volumes"] if "persistentVolumeClaim" in v]


# --- status ---------------------------------------------------------------------------------------------


def _jobs_with(resp: dict, complete: bool = True, failed_key: str | None = None) -> list[dict]:
    out = []
    for desired_job in jobs_of(resp):
        job = copy.deepcopy(desired_job)
        key = job["metadata"]["labels"]["kaito.sh/adapter-key"]
        if key == failed_key:
            job["status"] = {
                "failed": 4,
                "conditions": [
                    {
                        "type": "Failed",
                        "status": "True",
                        "reason": "BackoffLimitExceeded",
                        "message": "Job has reached the specified backoff limit",
                    }
                ],
            }
        elif complete:
            job["status"] = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
        out.append(job)
    return out


def replica(name: str, report: dict | None) -> dict:
    meta: dict = {"name": name, "namespace": "team", "labels": {"kaito.sh/workspace": "ws1"}}
    if report is not None:
        meta["annotations"] = {adapter_status.REPORT_ANNOTATION: json.dumps(report)}
    return {"metadata": meta, "spec": {"nodeName": "aks-gpu-0"}, "status": {"phase": "Running"}}


def states(resp: dict) -> dict[str, tuple[str, str]]:
    return {a["name"]: (a["state"], a["reason"]) for a in resp["status"]["adapters"]}


def test_adapters_are_pending_while_their_files_are_fetched():
    ws = serving(FIN, DOLLY)
    resp = run(ws, jobs=_jobs_with(run(ws), complete=False))
    assert states(resp) == {"fin": ("Pending", "Fetching"), "dolly": ("Pending", "Fetching")}
    c = condition(resp, "AdaptersReady")
    assert c["status"] == "False" and c["reason"] == "AdaptersPending" and "aks-gpu-0" in c["message"]


def test_a_pull_error_of_a_fetch_pod_fails_that_adapter_with_the_kubelets_message():
    ws = serving(FIN, DOLLY)
    first = run(ws)
    fin_key = planned_adapter(FIN).key
    fetch_pod = {
        "metadata": {
            "name": "ws1-fetch-x",
            "namespace": "team",
            "labels": {"kaito.sh/adapter-fetch": "ws1", "kaito.sh/adapter-key": fin_key},
        },
        "spec": {"nodeName": "aks-gpu-1"},
        "status": {
            "initContainerStatuses": [
                {
                    "name": "copy",
                    "state": {
                        "waiting": {
                            "reason": "ImagePullBackOff",
                            "message": "pull access denied for reg.example.com/adapters/fin",
                        }
                    },
                }
            ]
        },
    }
    resp = run(ws, jobs=_jobs_with(first, complete=False), pods=[fetch_pod])
    [fin] = [a for a in resp["status"]["adapters"] if a["name"] == "fin"]
    assert fin["state"] == "Failed" and fin["reason"] == "ImagePullError"
    assert "aks-gpu-1" in fin["message"] and "pull access denied" in fin["message"]
    assert states(resp)["dolly"] == ("Pending", "Fetching")
    assert condition(resp, "AdaptersReady")["reason"] == "AdapterFailed"
    assert condition(resp, "InferenceReady")["reason"] != "ImagePullError"  # a fetch pod is not a replica


def test_a_failed_fetch_job_fails_the_adapter():
    ws = serving(FIN)
    fin_key = planned_adapter(FIN).key
    resp = run(ws, jobs=_jobs_with(run(ws), failed_key=fin_key))
    assert states(resp) == {"fin": ("Failed", "FetchFailed")}


def test_replica_reports_decide_once_the_files_are_there():
    ws = serving(FIN, DOLLY)
    first = run(ws)
    revision = desired(first)["revision"]
    jobs = _jobs_with(first)
    ready = {
        "adapters": [{"name": "fin", "state": "Ready"}, {"name": "dolly", "state": "Ready"}],
        "synced": True,
        "revision": revision,
    }
    loading = {
        "adapters": [{"name": "fin", "state": "Ready"}, {"name": "dolly", "state": "Loading"}],
        "synced": False,
        "revision": revision,
    }
    refused = {
        "adapters": [
            {"name": "fin", "state": "Ready"},
            {
                "name": "dolly",
                "state": "Failed",
                "reason": "RankTooLarge",
                "message": "rank 128 > --max-lora-rank 64: restart with a larger --max-lora-rank",
            },
        ],
        "revision": revision,
    }

    assert states(run(ws, jobs=jobs, pods=[replica("ws1-a", None)]))["fin"] == ("Pending", "WaitingForReplicas")
    both = run(ws, jobs=jobs, pods=[replica("ws1-a", ready), replica("ws1-b", ready)])
    assert states(both) == {"fin": ("Ready", "Loaded"), "dolly": ("Ready", "Loaded")}
    assert condition(both, "AdaptersReady")["status"] == "True"
    one_loading = run(ws, jobs=jobs, pods=[replica("ws1-a", ready), replica("ws1-b", loading)])
    assert states(one_loading)["dolly"] == ("Loading", "Loading")
    failed = run(ws, jobs=jobs, pods=[replica("ws1-a", ready), replica("ws1-b", refused)])
    [dolly] = [a for a in failed["status"]["adapters"] if a["name"] == "dolly"]
    assert dolly["state"] == "Failed" and dolly["reason"] == "RankTooLarge" and "ws1-b" in dolly["message"]


def test_a_report_for_an_older_set_is_not_taken_for_the_current_one():
    ws = serving(FIN, {**DOLLY, "strength": "0.9"})
    first = run(ws)
    stale = {"adapters": [{"name": "fin", "state": "Ready"}, {"name": "dolly", "state": "Ready"}], "revision": "older"}
    resp = run(ws, jobs=_jobs_with(first), pods=[replica("ws1-a", stale)])
    assert states(resp)["dolly"] == ("Pending", "WaitingForReplicas")


def test_no_adapters_is_adapters_ready():
    resp = run(serving())
    assert resp["status"]["adapters"] == []
    assert condition(resp, "AdaptersReady")["status"] == "True"


@pytest.mark.parametrize("reports", ["loading", "failed"])
def test_workspace_ready_does_not_depend_on_adapters(reports):
    ws = serving(FIN, count=1)
    first = run(ws)
    state = {"loading": "Loading", "failed": "Failed"}[reports]
    report = {"adapters": [{"name": "fin", "state": state}], "revision": desired(first)["revision"]}
    pod = replica("ws1-a", report)
    pod["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    deployment = copy.deepcopy(find(first["children"], "Deployment"))
    deployment["status"] = {"replicas": 1, "readyReplicas": 1}
    children = {JOBS: _jobs_with(first), DEPLOYMENTS: [deployment], CONFIGMAPS: [find(first["children"], "ConfigMap")]}
    resp = sync(request(ws, children=children, nodes=NODES, pods=[pod]), AKS, NOW)
    assert condition(resp, "WorkspaceReady")["status"] == "True"
    assert condition(resp, "AdaptersReady")["status"] == "False"


def planned_adapter(spec: dict) -> Adapter:
    src = spec["source"]
    return Adapter(
        src["name"],
        spec.get("strength", "1.0"),
        src.get("image"),
        src.get("volumeSource"),
        tuple(src.get("imagePullSecrets") or ()),
    )


# --- what needs a restart ---------------------------------------------------------------------------------


def test_the_max_lora_rank_annotation_sets_the_room_for_adapters_and_is_a_restart():
    ws = serving(FIN)
    ws["metadata"]["annotations"] = {"kaito.sh/max-lora-rank": "128"}
    resp = run(ws)
    args = find(resp["children"], "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--max-lora-rank") + 1] == "128"
    assert pod_template(resp) != pod_template(run(serving(FIN)))  # documented: changing it restarts the pods


@pytest.mark.parametrize("value", ["big", "0", "2048", "-1"])
def test_a_bad_max_lora_rank_is_refused_naming_the_annotation(value):
    ws = serving(FIN)
    ws["metadata"]["annotations"] = {"kaito.sh/max-lora-rank": value}
    c = condition(run(ws), "ResourceReady")
    assert c["reason"] == "InvalidWorkspace" and "metadata.annotations[kaito.sh/max-lora-rank]" in c["message"]


# --- the pod's report identity ------------------------------------------------------------------------------


def test_the_replica_reports_with_a_pod_bound_token_mounted_in_the_main_container_only():
    resp = run(serving(FIN))
    spec = find(resp["children"], "Deployment", "ws1")["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "kaito-adapter-report-ws1"
    assert spec["automountServiceAccountToken"] is False  # no default token, in no container
    [volume] = [v for v in spec["volumes"] if v["name"] == "adapter-report-token"]
    [token] = [s["serviceAccountToken"] for s in volume["projected"]["sources"] if "serviceAccountToken" in s]
    assert token["expirationSeconds"] <= 3600
    [main] = spec["containers"]
    assert {
        "name": "adapter-report-token",
        "mountPath": "/var/run/secrets/kaito/adapter-report",
        "readOnly": True,
    } in main["volumeMounts"]
    assert not [
        m for c in spec.get("initContainers", []) for m in c["volumeMounts"] if m["name"] == "adapter-report-token"
    ]
    role = find(resp["children"], "Role", "kaito-adapter-report-ws1")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "patch"]}]
    binding = find(resp["children"], "RoleBinding", "kaito-adapter-report-ws1")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "kaito-adapter-report-ws1", "namespace": "team"}]


def test_the_admission_policy_matches_the_service_accounts_the_hook_names():
    import yaml

    from hooks.workspace.children import adapter_report

    policy, binding = yaml.safe_load_all((REPO / "metacontroller" / "adapter-report-policy.yaml").read_text())
    assert binding["spec"] == {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"]}
    assert adapter_report.NAME_PREFIX in policy["spec"]["matchConditions"][0]["expression"]
    assert "adapter-report-policy.yaml" in (REPO / "metacontroller" / "kustomization.yaml").read_text()
