"""The Workspace sync hook as a pure function: planning, children, status, and the hook rules."""

from __future__ import annotations

import json

import pytest
from workspace_support import (
    DEPLOYMENTS,
    LATER,
    MACHINES,
    NOW,
    SERVICES,
    by_kind,
    condition,
    find,
    llama_70b_on_two_nodes,
    node,
    request,
    workspace,
)

from hooks import naming
from hooks.settings import Settings
from hooks.workspace.sync import customize, sync

AKS = Settings()
BYO = Settings(node_provisioning="byo")


def run(parent, settings=AKS, now=NOW, **kw):
    return sync(request(parent, **kw), settings, now)


def args_of(sts: dict) -> list[str]:
    return sts["spec"]["template"]["spec"]["containers"][0]["args"]


def arg(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


# --- children for the quick starts -------------------------------------------------------------


def test_new_workspace_gets_a_machine_deployment_and_two_services():
    resp = run(workspace())
    kinds = [(c["kind"], c["metadata"]["name"]) for c in resp["children"]]
    machine = naming.machine_name("team", "ws1", 0)
    report = "kaito-adapter-report-ws1"  # the identity its pods report adapter states with
    assert kinds == [
        ("Machine", machine),
        ("ConfigMap", "ws1-adapters"),
        ("Deployment", "ws1"),
        ("Service", "ws1"),
        ("Service", "ws1-headless"),
        ("ServiceAccount", report),
        ("Role", report),
        ("RoleBinding", report),
    ]
    assert set(resp) == {"status", "children", "resyncAfterSeconds"}
    assert resp["resyncAfterSeconds"] == AKS.resync_seconds


def test_machine_carries_sku_labels_taint_and_disk():
    m = find(run(workspace())["children"], "Machine")
    assert naming.MACHINE_NAME.match(m["metadata"]["name"])
    assert m["metadata"]["labels"] == {
        "apps": "phi-3",
        "kaito.sh/machine-type": "gpu",
        "kaito.sh/workspace": "ws1",
        "kaito.sh/workspacenamespace": "team",
    }
    assert m["spec"]["requirements"][0] == {
        "key": "node.kubernetes.io/instance-type",
        "operator": "In",
        "values": ["Standard_NC24ads_A100_v4"],
    }
    assert m["spec"]["taints"] == [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}]
    assert m["spec"]["resources"]["requests"]["storage"] == "80Gi"


def test_deployment_follows_the_pod_contract():
    sts = find(run(workspace())["children"], "Deployment")
    pod = sts["spec"]["template"]["spec"]
    main = pod["containers"][0]
    assert sts["spec"]["replicas"] == 1
    assert sts["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
    assert sts["spec"]["template"]["metadata"]["labels"] == {"kaito.sh/workspace": "ws1"}
    assert main["resources"]["limits"] == {"nvidia.com/gpu": "1", "memory": "20Gi"}  # phi-3-mini's footprint
    assert {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"} in pod["tolerations"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchExpressions": [{"key": "apps", "operator": "In", "values": ["phi-3"]}]}]
    assert {"name": "dshm", "emptyDir": {"medium": "Memory"}} in pod["volumes"]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in main["volumeMounts"]
    assert main["readinessProbe"]["httpGet"] == {"path": "/health", "port": 5000}
    assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 5000}
    assert main["startupProbe"]["failureThreshold"] * main["startupProbe"]["periodSeconds"] == 30 * 60
    args = args_of(sts)
    assert arg(args, "--runtime") == "sglang"
    assert arg(args, "--served-model-name") == "phi-3-mini-4k-instruct"
    assert arg(args, "--model") == "microsoft/Phi-3-mini-4k-instruct"
    assert "--dist-init-addr" not in args
    assert (arg(args, "--nnodes"), arg(args, "--node-rank")) == ("1", "0")


def test_services_route_port_80_to_the_replicas_and_headless_publishes_not_ready():
    children = run(workspace())["children"]
    svc = find(children, "Service", "ws1")
    assert svc["spec"]["type"] == "ClusterIP"
    assert {"name": "http", "port": 80, "targetPort": 5000, "protocol": "TCP"} in svc["spec"]["ports"]
    assert svc["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": 5000, "protocol": "TCP"}]  # no 29500
    assert svc["spec"]["selector"] == {"kaito.sh/workspace": "ws1"}
    headless = find(children, "Service", "ws1-headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True


def test_enablelb_annotation_makes_a_load_balancer():
    ws = workspace()
    ws["metadata"]["annotations"] = {"kaito.sh/enablelb": "True"}
    assert find(run(ws)["children"], "Service", "ws1")["spec"]["type"] == "LoadBalancer"


def test_adapters_are_a_desired_set_and_fetch_jobs_not_init_containers():
    ws = workspace(
        inference={
            "preset": {"name": "phi-3-mini-128k-instruct"},
            "adapters": [
                {
                    "source": {"name": "a1", "image": "reg.example.com/a1:1", "imagePullSecrets": ["pull-a"]},
                    "strength": "0.3",
                },
                {"source": {"name": "a2", "image": "reg.example.com/a2:1"}},
            ],
        }
    )
    children = run(ws)["children"]
    sts = find(children, "Deployment")
    pod = sts["spec"]["template"]["spec"]
    assert not [c for c in pod["initContainers"] if "adapter" in c["name"] or c["name"] == "install-copier"]
    assert "imagePullSecrets" not in pod  # the fetch Jobs pull the adapter images
    args = args_of(sts)
    assert "--adapter" not in args
    assert args[args.index("--live-adapters") + 1] == "/etc/kaito/adapters/adapters.json"
    desired = json.loads(find(children, "ConfigMap", "ws1-adapters")["data"]["adapters.json"])
    assert [(a["name"], a["strength"]) for a in desired["adapters"]] == [("a1", 0.3), ("a2", 1.0)]


def test_private_preset_image_is_streamed_into_the_node_cache_without_image_volumes():
    ws = workspace(
        inference={
            "preset": {
                "name": "llama-2-7b",
                "accessMode": "private",
                "presetOptions": {"image": "reg.example.com/llama-2-7b:1", "imagePullSecrets": ["llama-pull"]},
            }
        }
    )
    sts = find(run(ws, settings=Settings(image_volumes=False))["children"], "Deployment")
    init = sts["spec"]["template"]["spec"]["initContainers"]
    assert [c["name"] for c in init] == ["weights-cache-owner", "model-weights"]
    assert init[1]["command"][:5] == [
        "python",
        "-m",
        "inference.image_weights",
        "--image",
        "reg.example.com/llama-2-7b:1",
    ]
    assert "--model" not in args_of(sts)


def test_gated_model_reads_hf_token_from_the_model_access_secret():
    ws = workspace(
        resource={"instanceType": "Standard_NC24ads_A100_v4", "labelSelector": {"matchLabels": {"a": "b"}}},
        inference={"preset": {"name": "llama-3.1-8b-instruct", "presetOptions": {"modelAccessSecret": "hf-token"}}},
    )
    main = find(run(ws)["children"], "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "HF_TOKEN"}}} in main["env"]


def test_pre_ampere_sku_is_served_by_the_transformers_runtime_and_says_why():
    ws = workspace(resource={"instanceType": "Standard_NC6s_v3", "labelSelector": {"matchLabels": {"apps": "phi-3"}}})
    resp = run(ws)
    assert arg(args_of(find(resp["children"], "Deployment")), "--runtime") == "transformers"
    assert resp["status"]["runtime"] == "transformers"
    assert "V100" in condition(resp, "InferenceReady")["message"]
    assert "transformers" in condition(resp, "InferenceReady")["message"]


def test_forcing_sglang_on_a_v100_is_refused_with_a_sku_that_works():
    ws = workspace(resource={"instanceType": "Standard_NC6s_v3", "labelSelector": {"matchLabels": {"apps": "phi-3"}}})
    ws["metadata"]["annotations"] = {"kaito.sh/runtime": "sglang"}
    msg = condition(run(ws), "ResourceReady")["message"]
    assert "resource.instanceType" in msg and "Ampere" in msg and "Standard_" in msg


def test_model_too_big_for_one_node_runs_multi_node_with_ranks():
    ws = workspace(
        resource={"instanceType": "Standard_NC96ads_A100_v4", "labelSelector": {"matchLabels": {"apps": "ds"}}},
        inference={"preset": {"name": "deepseek-r1-0528"}},
    )
    resp = run(ws)
    sts = find(resp["children"], "StatefulSet")
    assert sts["spec"]["replicas"] == 3  # 960 GiB on 4 x 80 GiB nodes
    args = args_of(sts)
    assert arg(args, "--nnodes") == "3" and arg(args, "--gpus-per-node") == "4"
    assert arg(args, "--node-rank") == "$(POD_INDEX)"
    assert arg(args, "--dist-init-addr") == "ws1-0.ws1-headless.team.svc:29500"
    assert len([c for c in resp["children"] if c["kind"] == "Machine"]) == 3
    assert "3 nodes" in condition(resp, "InferenceReady")["message"]


# --- refusals name the field and the fix ------------------------------------------------------


def refusal(ws) -> str:
    resp = run(ws)
    assert resp["children"] == []
    c = condition(resp, "ResourceReady")
    assert (c["status"], c["reason"]) == ("False", "InvalidWorkspace")
    return c["message"]


def test_preset_too_big_for_the_sku_names_instance_type_and_a_sku_that_fits():
    ws = workspace(
        resource={"instanceType": "Standard_NC6s_v3", "labelSelector": {"matchLabels": {"a": "b"}}},
        inference={"preset": {"name": "phi-3-medium-4k-instruct"}},
    )
    msg = refusal(ws)
    assert "resource.instanceType" in msg
    assert "28 GiB" in msg and "16 GiB" in msg and "Standard_NC6s_v3" in msg
    assert "would fit" in msg


def test_count_above_one_for_a_single_node_preset_means_replicas():
    ws = workspace(
        resource={"instanceType": "Standard_NC24ads_A100_v4", "count": 2, "labelSelector": {"matchLabels": {"a": "b"}}}
    )
    resp = run(ws)
    assert find(resp["children"], "Deployment")["spec"]["replicas"] == 2
    assert len([c for c in resp["children"] if c["kind"] == "Machine"]) == 2


def test_unknown_preset_lists_close_matches():
    msg = refusal(workspace(inference={"preset": {"name": "phi-3-mini-4k"}}))
    assert "inference.preset.name" in msg and "phi-3-mini-4k-instruct" in msg


def with_adapter_image(image: str) -> dict:
    """phi-3 with one adapter named x from `image`."""
    return workspace(
        inference={
            "preset": {"name": "phi-3-mini-4k-instruct"},
            "adapters": [{"source": {"name": "x", "image": image}}],
        }
    )


def test_kaito_placeholder_image_is_refused_naming_the_adapter_field():
    msg = refusal(with_adapter_image("<YOUR_IMAGE>"))
    assert "inference.adapters[0].source.image" in msg and "placeholder" in msg


def test_uppercase_repository_is_not_an_image_reference():
    assert "inference.adapters[0].source.image" in refusal(with_adapter_image("ACR.azurecr.io/Adapter:1"))


def test_non_azure_instance_type_is_refused():
    ws = workspace(resource={"instanceType": "g5.4xlarge", "labelSelector": {"matchLabels": {"a": "b"}}})
    msg = refusal(ws)
    assert "resource.instanceType" in msg and "Azure" in msg


def test_misspelt_azure_sku_gets_suggestions():
    ws = workspace(resource={"instanceType": "Standard_NC24ads_A100", "labelSelector": {"matchLabels": {"a": "b"}}})
    assert "Standard_NC24ads_A100_v4" in refusal(ws)


@pytest.mark.parametrize(
    "inference, field",
    [
        (
            {"preset": {"name": "phi-3-mini-4k-instruct", "presetOptions": {"imagePullSecrets": ["Bad_Name"]}}},
            "inference.preset.presetOptions.imagePullSecrets[0]",
        ),
        (
            {
                "preset": {"name": "phi-3-mini-4k-instruct"},
                "adapters": [{"source": {"name": "a", "image": "r.io/a:1"}, "strength": "2"}],
            },
            "inference.adapters[0].strength",
        ),
        (
            {
                "preset": {"name": "phi-3-mini-4k-instruct"},
                "adapters": [
                    {"source": {"name": "a", "image": "r.io/a:1"}},
                    {"source": {"name": "a", "image": "r.io/b:1"}},
                ],
            },
            "inference.adapters[1].source.name",
        ),
        (
            {
                "preset": {"name": "phi-3-mini-4k-instruct"},
                "adapters": [{"source": {"name": "a", "urls": ["https://x.io/a"]}}],
            },
            "inference.adapters[0].source.urls",
        ),
        (
            {"preset": {"name": "phi-3-mini-4k-instruct"}, "template": {"spec": {"containers": [{"name": "c"}]}}},
            "inference.preset",
        ),
        ({"preset": {"name": "llama-3.1-8b-instruct"}}, "inference.preset.presetOptions.modelAccessSecret"),
        ({"preset": {"name": "llama-2-7b"}}, "inference.preset.presetOptions.image"),
        ({"preset": {"name": "phi-3-mini-4k-instruct", "acessMode": "public"}}, "inference.preset.acessMode"),
    ],
)
def test_field_named_refusals(inference, field):
    assert field in refusal(workspace(inference=inference))


def test_neither_inference_nor_tuning_is_refused():
    assert "exactly one of inference or tuning" in refusal(workspace(inference=None))


def test_long_workspace_name_is_refused_with_the_limit():
    ws = workspace()
    ws["metadata"]["name"] = "w" * 60
    msg = refusal(ws)
    assert "metadata.name" in msg and "52" in msg


# --- the hook rules -----------------------------------------------------------------------------


def test_invalid_workspace_returns_the_children_it_already_had():
    first = run(workspace())
    broken = workspace(inference={"preset": {"name": "no-such-model"}})
    observed = {}
    for kind, objs in by_kind(first["children"]).items():
        observed[kind] = [
            {**o, "status": {"observed": True}, "metadata": {**o["metadata"], "uid": "x", "resourceVersion": "7"}}
            for o in objs
        ]
    resp = run(broken, children=observed)
    assert resp["children"] == first["children"]
    assert condition(resp, "ResourceReady")["status"] == "False"


def test_identical_requests_give_byte_identical_responses():
    req = request(
        workspace(),
        nodes=[node("n1", {"apps": "phi-3", "node.kubernetes.io/instance-type": "Standard_NC24ads_A100_v4"})],
    )
    a = json.dumps(sync(req, AKS, NOW), sort_keys=False)
    b = json.dumps(sync(json.loads(json.dumps(req)), AKS, NOW), sort_keys=False)
    assert a == b


def test_feeding_desired_children_back_reproduces_them():
    first = run(workspace())
    second = run(workspace(), children=by_kind(first["children"]))
    assert second["children"] == first["children"]


def test_last_transition_time_is_kept_while_the_status_holds():
    first = run(workspace(), now=NOW)
    parent = workspace()
    parent["status"] = first["status"]
    second = run(parent, now=LATER, children=by_kind(first["children"]))
    assert condition(second, "ResourceReady")["lastTransitionTime"] == NOW


# --- nodes: existing first, Machines for the shortfall ------------------------------------------

A100 = {"node.kubernetes.io/instance-type": "Standard_NC24ads_A100_v4"}


def test_existing_matching_ready_node_means_no_machine():
    n = node("gpu-1", {"apps": "phi-3", **A100})
    resp = run(workspace(), nodes=[n])
    assert [c for c in resp["children"] if c["kind"] == "Machine"] == []
    assert condition(resp, "ResourceReady")["status"] == "True"
    assert resp["status"]["workerNodes"] == ["gpu-1"]


@pytest.mark.parametrize(
    "n",
    [
        node("gpu-1", {"apps": "phi-3", **A100}, ready=False),
        node("gpu-1", {"apps": "other", **A100}),
        node("gpu-1", {"apps": "phi-3", "node.kubernetes.io/instance-type": "Standard_NC6s_v3"}),
        node("gpu-1", {"apps": "phi-3", "kaito.sh/machine": "wsabc", **A100}),
    ],
    ids=["not-ready", "other-labels", "other-sku", "our-own-machine-node"],
)
def test_nodes_that_do_not_count(n):
    resp = run(workspace(), nodes=[n])
    assert len([c for c in resp["children"] if c["kind"] == "Machine"]) == 1


def test_preferred_nodes_come_first_and_may_be_of_any_sku():
    ws = workspace(
        resource={
            "instanceType": "Standard_NC24ads_A100_v4",
            "labelSelector": {"matchLabels": {"apps": "phi-3"}},
            "preferredNodes": ["zz-pref"],
        }
    )
    nodes = [node("aa-gpu", {"apps": "phi-3", **A100}), node("zz-pref", {"apps": "phi-3"})]
    assert run(ws, nodes=nodes)["status"]["workerNodes"] == ["zz-pref"]


def test_observed_machine_still_needed_is_kept_and_no_second_one_created():
    ws = llama_70b_on_two_nodes()
    odd = {
        "apiVersion": "kaito.sh/v1alpha1",
        "kind": "Machine",
        "metadata": {"name": "wsfeedbeef01", "namespace": "team"},
        "status": {"nodeName": "aks-x", "conditions": [{"type": "Ready", "status": "True"}]},
    }
    resp = run(ws, children={MACHINES: [odd]})
    names = [c["metadata"]["name"] for c in resp["children"] if c["kind"] == "Machine"]
    assert "wsfeedbeef01" in names and len(names) == 2


def test_ready_existing_node_covers_part_of_the_count():
    ws = llama_70b_on_two_nodes()
    resp = run(
        ws, nodes=[node("n1", {"apps": "ll", "node.kubernetes.io/instance-type": "Standard_NC96ads_A100_v4"}, gpus=4)]
    )
    assert len([c for c in resp["children"] if c["kind"] == "Machine"]) == 1
    assert "1 of 2" in condition(resp, "ResourceReady")["message"]


def test_failed_machine_message_reaches_resource_ready():
    first = run(workspace())
    machine = find(first["children"], "Machine")
    arm = "QuotaExceeded: Operation could not be completed as it results in exceeding approved standardNCADSA100v4Family Cores quota"
    machine = {
        **machine,
        "status": {
            "conditions": [
                {"type": "Launched", "status": "False", "reason": "QuotaExceeded", "message": arm},
                {"type": "Ready", "status": "False", "reason": "QuotaExceeded", "message": arm},
            ]
        },
    }
    resp = run(workspace(), children={MACHINES: [machine]})
    c = condition(resp, "ResourceReady")
    assert c["status"] == "False" and c["reason"] == "MachineFailed"
    assert arm in c["message"] and machine["metadata"]["name"] in c["message"]


def test_ready_machine_node_makes_resources_ready_and_deployment_readiness_makes_inference_ready():
    first = run(workspace())
    machine = find(first["children"], "Machine")
    machine = {
        **machine,
        "status": {
            "nodeName": "aks-ws-0",
            "conditions": [{"type": "Ready", "status": "True", "reason": "NodeReady", "message": "ok"}],
        },
    }
    sts = {**find(first["children"], "Deployment"), "status": {"replicas": 1, "readyReplicas": 1}}
    resp = run(
        workspace(),
        children={
            MACHINES: [machine],
            DEPLOYMENTS: [sts],
            SERVICES: [c for c in first["children"] if c["kind"] == "Service"],
        },
    )
    assert condition(resp, "ResourceReady")["status"] == "True"
    assert condition(resp, "InferenceReady")["status"] == "True"
    assert condition(resp, "WorkspaceReady")["status"] == "True"
    assert resp["status"]["workerNodes"] == ["aks-ws-0"]
    assert resp["resyncAfterSeconds"] == 0


def test_adapter_pull_error_is_reported_on_inference_ready():
    pod = {
        "metadata": {"name": "ws1-0", "namespace": "team"},
        "status": {
            "initContainerStatuses": [
                {
                    "name": "adapter-a",
                    "state": {"waiting": {"reason": "ImagePullBackOff", "message": "pull access denied for r.io/a"}},
                }
            ]
        },
    }
    c = condition(run(workspace(), pods=[pod]), "InferenceReady")
    assert c["reason"] == "ImagePullError" and "adapter-a" in c["message"] and "pull access denied" in c["message"]


# --- bring your own nodes -----------------------------------------------------------------------


def test_byo_never_creates_machines_and_says_how_many_nodes_it_found():
    resp = run(workspace(), settings=BYO)
    assert not [c for c in resp["children"] if c["kind"] == "Machine"]
    c = condition(resp, "ResourceReady")
    assert c["reason"] == "NotEnoughNodes" and "found 0" in c["message"] and "need 1" in c["message"]


def test_byo_uses_labelled_nodes_of_any_instance_type():
    resp = run(workspace(), settings=BYO, nodes=[node("kind-worker", {"apps": "phi-3"})])
    assert condition(resp, "ResourceReady")["status"] == "True"
    assert resp["status"]["workerNodes"] == ["kind-worker"]


# --- customize ----------------------------------------------------------------------------------


def test_customize_relates_selected_nodes_and_the_workspace_pods():
    out = customize({"controller": {}, "parent": workspace()})
    assert out == {
        "relatedResources": [
            {"apiVersion": "v1", "resource": "nodes", "labelSelector": {"matchLabels": {"apps": "phi-3"}}},
            {
                "apiVersion": "v1",
                "resource": "pods",
                "namespace": "team",
                "labelSelector": {"matchLabels": {"kaito.sh/workspace": "ws1"}},
            },
            {
                "apiVersion": "v1",
                "resource": "pods",
                "namespace": "team",
                "labelSelector": {"matchLabels": {"kaito.sh/adapter-fetch": "ws1"}},
            },
        ]
    }


# --- tuning -------------------------------------------------------------------------------------

TUNING = {
    "preset": {"name": "phi-3-mini-128k-instruct"},
    "method": "qlora",
    "input": {"urls": ["https://example.com/data/train.parquet?download=true"]},
    "output": {"image": "myregistry.azurecr.io/adapters/phi-3:0.0.1", "imagePushSecret": "push-secret"},
}


def tuning_ws(**tuning):
    return workspace(
        resource={"instanceType": "Standard_NC6s_v3", "labelSelector": {"matchLabels": {"app": "tune"}}},
        inference=None,
        tuning={**TUNING, **tuning},
    )


def test_tuning_builds_config_map_and_job_with_download_train_push():
    resp = run(tuning_ws())
    assert [(c["kind"], c["metadata"]["name"]) for c in resp["children"]][1:] == [
        ("ConfigMap", "ws1-tuning-config"),
        ("Job", "ws1"),
    ]
    cm = find(resp["children"], "ConfigMap")
    assert "load_in_4bit: true" in cm["data"]["training_config.yaml"]
    job = find(resp["children"], "Job")
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert [c["name"] for c in pod["initContainers"]] == [
        "data-download",
        "weights-cache-owner",
        "model-weights",
        "trainer",
    ]
    assert pod["initContainers"][0]["command"][-1] == "https://example.com/data/train.parquet?download=true"
    trainer = pod["initContainers"][-1]
    assert trainer["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    assert "--model-repo" in trainer["command"] and "microsoft/Phi-3-mini-128k-instruct" in trainer["command"]
    pusher = pod["containers"][0]
    assert pusher["name"] == "pusher"
    assert pusher["command"][pusher["command"].index("--image") + 1] == "myregistry.azurecr.io/adapters/phi-3:0.0.1"
    # The push secret is mounted into the pusher alone, as a docker config.
    secret_volume = next(v for v in pod["volumes"] if v["name"] == "docker-config")
    assert secret_volume["secret"] == {
        "secretName": "push-secret",
        "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
    }
    assert not any(m["name"] == "docker-config" for c in pod["initContainers"] for m in c.get("volumeMounts", []))
    assert {"name": "dshm", "mountPath": "/dev/shm"} in trainer["volumeMounts"]


def test_tuning_from_an_image_copies_its_data_with_the_static_copier():
    job = find(
        run(tuning_ws(input={"image": "r.example.com/data:1", "imagePullSecrets": ["data-pull"]}))["children"], "Job"
    )
    pod = job["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == [
        "install-copier",
        "data-input",
        "weights-cache-owner",
        "model-weights",
        "trainer",
    ]
    assert pod["initContainers"][1]["command"] == ["/kaito-tools/kaito-copy", "/data", "/mnt/data"]
    assert pod["imagePullSecrets"] == [{"name": "data-pull"}]


def test_user_training_config_is_mounted_instead_of_the_template():
    resp = run(tuning_ws(config="my-training-config"))
    assert not [c for c in resp["children"] if c["kind"] == "ConfigMap"]
    pod = find(resp["children"], "Job")["spec"]["template"]["spec"]
    assert {"name": "config", "configMap": {"name": "my-training-config"}} in pod["volumes"]


def test_dollar_in_a_url_is_escaped_for_the_kubelet():
    # The kubelet expands $(VAR) and turns $$ into $ in container commands: escaping every $ hands
    # the downloader the URL verbatim.
    url = "https://example.com/data/$latest.parquet"
    pod = find(run(tuning_ws(input={"urls": [url]}))["children"], "Job")["spec"]["template"]["spec"]
    assert pod["initContainers"][0]["command"][-1] == "https://example.com/data/$$latest.parquet"


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/iam",
        "https://127.0.0.1/x",
        "https://10.1.2.3/data.parquet",
        "file:///etc/passwd",
        "https://example.com/`reboot`",
        "https://example.com/x;rm -rf /",
    ],
)
def test_unsafe_input_urls_are_refused_without_a_job(url):
    msg = refusal(tuning_ws(input={"urls": [url]}))
    assert "tuning.input.urls[0]" in msg


def test_tuning_status_follows_the_job():
    first = run(tuning_ws())
    job = find(first["children"], "Job")
    machine = {
        **find(first["children"], "Machine"),
        "status": {"nodeName": "n", "conditions": [{"type": "Ready", "status": "True"}]},
    }
    base = {MACHINES: [machine]}

    def with_job(status, pods=None):
        return run(tuning_ws(), children={**base, "Job.batch/v1": [{**job, "status": status}]}, pods=pods)

    running = with_job({"active": 1})
    assert condition(running, "JobStarted")["status"] == "True"
    assert condition(running, "WorkspaceReady")["status"] == "False"
    done = with_job({"succeeded": 1})
    assert condition(done, "WorkspaceReady")["status"] == "True"
    assert done["resyncAfterSeconds"] == 0
    oom = {
        "metadata": {"name": "ws1-abcde", "namespace": "team"},
        "status": {
            "initContainerStatuses": [
                {"name": "trainer", "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}
            ]
        },
    }
    failed = with_job(
        {"failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]},
        pods=[oom],
    )
    c = condition(failed, "WorkspaceReady")
    assert c["status"] == "False" and "trainer" in c["message"] and "OOMKilled" in c["message"]


def test_tuning_on_more_than_one_node_is_refused():
    ws = tuning_ws()
    ws["resource"]["count"] = 2
    assert "resource.count" in refusal(ws)


def test_tuning_a_preset_without_tuning_support_lists_those_with_it():
    msg = refusal(tuning_ws(preset={"name": "falcon-7b-instruct"}))
    assert "tuning.preset.name" in msg and "phi-3-mini-4k-instruct" in msg


def test_transformers_runtime_pods_use_the_cuda12_image():
    ws = workspace(
        resource={"instanceType": "Standard_NC6s_v3", "labelSelector": {"matchLabels": {"apps": "phi-3"}}},
        inference={
            "preset": {"name": "phi-3-mini-4k-instruct"},
            "adapters": [{"source": {"name": "a", "image": "r.io/a:1"}}],
        },
    )
    pod = find(run(ws)["children"], "Deployment")["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == AKS.transformers_runtime_image
    assert pod["initContainers"][0]["image"] == AKS.transformers_runtime_image
    a100 = find(run(workspace())["children"], "Deployment")["spec"]["template"]["spec"]
    assert a100["containers"][0]["image"] == AKS.runtime_image


def test_falcon_adapters_on_sglang_are_refused_with_the_runtime_that_serves_them():
    inference = {"preset": {"name": "falcon-7b"}, "adapters": [{"source": {"name": "a", "image": "r.io/a:1"}}]}
    msg = refusal(workspace(inference=inference))
    assert "inference.adapters" in msg and "kaito.sh/runtime: transformers" in msg
    ws = workspace(inference=inference)
    ws["metadata"]["annotations"] = {"kaito.sh/runtime": "transformers"}
    assert arg(args_of(find(run(ws)["children"], "Deployment")), "--runtime") == "transformers"
