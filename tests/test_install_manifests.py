"""The install manifests: `kubectl apply -k metacontroller/` and `kubectl apply -k overlays/byo/`.

Built with kubectl's own kustomize. The one remote resource (Metacontroller's upstream manifests)
cannot be fetched offline, so the builds here run on a copy of metacontroller/ and overlays/ with that
line pointing at the same manifests in Metacontroller's source beside the checkout
(../shared/third_party/metacontroller-v4.17.2/manifests/production); where that is absent, the line and
the install's patches of those upstream objects are removed, and the tests of the patched upstream
objects skip saying so. Everything else is the real files. Built-in objects are validated with
kubernetes-validate (strict, Kubernetes 1.33).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from install_support import METACONTROLLER_URL, UPSTREAM, prepare_offline
from workspace_support import METACONTROLLER_CRDS, REPO, need_shared

from hooks.machine.deadline import ARM_BUDGET_S
from hooks.settings import Settings
from release.images import image_ref, project_version

pytestmark = pytest.mark.integration  # builds the install with kustomize

K8S_VERSION = "1.33.0"
OUR_GROUPS = ("kaito.sh", "metacontroller.k8s.io")
HOOK_NS, HOOK_NAME = "kaito-system", "kaito-hooks"
KUBECTL = shutil.which("kubectl")


def _yaml_files() -> list[Path]:
    roots = [REPO / "metacontroller", REPO / "overlays", REPO / "examples"]
    return sorted(p for root in roots for p in root.rglob("*.yaml"))


@pytest.mark.parametrize("path", _yaml_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_manifest_parses_and_names_its_kind(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs, f"{path} is empty"
    for doc in docs:
        if isinstance(doc, list):  # a JSON6902 patch file
            assert all({"op", "path"} <= set(op) for op in doc), path
            continue
        assert doc.get("kind") or doc.get("resources") or doc.get("patches"), path
        if path.name != "kustomization.yaml" and doc.get("kind") != "Kustomization":
            assert doc.get("apiVersion") and doc.get("metadata", {}).get("name"), path


def test_metacontroller_is_pinned_upstream_by_url_and_not_copied():
    root = yaml.safe_load((REPO / "metacontroller" / "kustomization.yaml").read_text())
    remote = [r for r in root["resources"] if "://" in r]
    assert remote == [METACONTROLLER_URL]
    assert root["resources"][0] == METACONTROLLER_URL, "Metacontroller comes first: everything else needs it"
    for path in (REPO / "metacontroller").rglob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict):
                assert doc.get("metadata", {}).get("namespace") != "metacontroller", f"{path} copies upstream objects"


def _build(tmp_path: Path, target: str, aks_env: str | None = None) -> list[dict]:
    if KUBECTL is None:
        pytest.skip("kubectl is not installed (its built-in kustomize builds the install)")
    work = tmp_path / "repo"
    shutil.copytree(REPO / "metacontroller", work / "metacontroller")
    shutil.copytree(REPO / "overlays", work / "overlays")
    prepare_offline(work)
    if aks_env is not None:
        (work / "metacontroller" / "aks.env").write_text(aks_env)
    out = subprocess.run(
        [KUBECTL, "kustomize", str(work / target)], check=False, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="module")
def install(tmp_path_factory) -> list[dict]:
    return _build(tmp_path_factory.mktemp("aks"), "metacontroller")


@pytest.fixture(scope="module")
def byo(tmp_path_factory) -> list[dict]:
    return _build(tmp_path_factory.mktemp("byo"), "overlays/byo")


def find(objs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(objs: list[dict], kind: str, name: str) -> dict:
    found = find(objs, kind, name)
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def aks_configmap(objs: list[dict]) -> dict:
    found = [o for o in find(objs, "ConfigMap") if o["metadata"]["name"].startswith("kaito-hooks-aks")]
    assert len(found) == 1
    return found[0]


def container(objs: list[dict]) -> dict:
    return one(objs, "Deployment", HOOK_NAME)["spec"]["template"]["spec"]["containers"][0]


def resolved_env(objs: list[dict]) -> dict[str, str]:
    """The hook container's environment as the kubelet would set it (configMapKeyRefs resolved)."""
    configmaps = {o["metadata"]["name"]: o.get("data") or {} for o in find(objs, "ConfigMap")}
    env = {}
    for e in container(objs).get("env") or []:
        if "value" in e:
            env[e["name"]] = e["value"]
            continue
        ref = e["valueFrom"]["configMapKeyRef"]
        assert ref["name"] in configmaps, f"env {e['name']} reads a ConfigMap that is not installed: {ref['name']}"
        data = configmaps[ref["name"]]
        assert ref["key"] in data or ref.get("optional"), f"env {e['name']}: key {ref['key']} missing"
        if ref["key"] in data:
            env[e["name"]] = data[ref["key"]]
    return env


@pytest.mark.parametrize("build", ["install", "byo"])
def test_every_built_in_object_is_valid_kubernetes_1_33_strict(build, request):
    objs = request.getfixturevalue(build)
    checked = 0
    for obj in objs:
        if obj["apiVersion"].split("/")[0] in OUR_GROUPS:
            continue
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        checked += 1
    assert checked >= 7


@pytest.mark.parametrize("build", ["install", "byo"])
def test_controllers_are_valid_against_metacontrollers_crds(build, request):
    import jsonschema

    crds = {
        d["spec"]["names"]["kind"]: d
        for d in yaml.safe_load_all(need_shared(METACONTROLLER_CRDS).read_text())
        if d and d.get("kind") == "CustomResourceDefinition"
    }
    controllers = [o for o in request.getfixturevalue(build) if o["apiVersion"].startswith("metacontroller.k8s.io/")]
    assert controllers
    for obj in controllers:
        version = next(v for v in crds[obj["kind"]]["spec"]["versions"] if v["name"] == obj["apiVersion"].split("/")[1])
        jsonschema.validate(obj, version["schema"]["openAPIV3Schema"])


def test_install_orders_what_is_needed_first(install):
    kinds = [o["kind"] for o in install]
    assert kinds[0] == "Namespace"
    last_crd = max(i for i, k in enumerate(kinds) if k == "CustomResourceDefinition")
    for kind in ("CompositeController", "DecoratorController", "Deployment"):
        assert kinds.index(kind) > last_crd
    ours = {
        d["metadata"]["name"]
        for path in (REPO / "metacontroller").glob("*crd*.yaml")
        for d in yaml.safe_load_all(path.read_text())
        if d
    }
    assert {"workspaces.kaito.sh", "machines.kaito.sh"} <= ours
    names = {o["metadata"]["name"] for o in find(install, "CustomResourceDefinition")}
    assert ours <= names and all(n.endswith(".metacontroller.k8s.io") for n in names - ours), names
    assert one(install, "DecoratorController", "machine") and one(install, "CompositeController", "workspace")


@pytest.mark.parametrize("build", ["install", "byo"])
def test_hook_deployment_runs_non_root_with_a_read_only_root_filesystem(build, request):
    objs = request.getfixturevalue(build)
    deploy = one(objs, "Deployment", HOOK_NAME)
    assert deploy["metadata"]["namespace"] == HOOK_NS
    assert deploy["spec"]["replicas"] == 2
    pod = deploy["spec"]["template"]["spec"]
    c = container(objs)
    assert c["image"] == image_ref("hooks", project_version())
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sc.get("runAsNonRoot", pod["securityContext"].get("runAsNonRoot")) is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    for kind in ("requests", "limits"):
        assert set(c["resources"][kind]) == {"cpu", "memory"}
    # The only writable path: gunicorn's heartbeat files and control socket under /tmp (HOME).
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    # The server listens where the probes and the Service look.
    assert c["command"][:4] == ["python", "-m", "hooks", "serve"]
    bind = c["command"][c["command"].index("--bind") + 1]
    port = next(p for p in c["ports"] if p["name"] == "https")["containerPort"]
    assert bind == f"0.0.0.0:{port}"
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["path"] == "/healthz"
        assert c[probe]["httpGet"]["port"] in ("https", port)
        assert c[probe]["httpGet"]["scheme"] == "HTTPS"


def test_hook_image_runs_as_a_numeric_non_root_user():
    text = (REPO / "hooks" / "Dockerfile").read_text()
    users = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert users and users[-1].split(":")[0].isdigit() and users[-1].split(":")[0] != "0"
    assert 'pip install ".[azure]"' in text
    # The build context is an allow-list (hooks/Dockerfile.dockerignore): every COPY source is on it.
    ignore = [line.strip() for line in (REPO / "hooks" / "Dockerfile.dockerignore").read_text().splitlines()]
    assert "*" in ignore
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for line in text.splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            for src in line.split()[1:-1]:
                assert src in allowed, f"{src} is copied but not in the build context"
                assert (REPO / src).exists(), src


def _selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("build", ["install", "byo"])
def test_service_selects_the_hook_pods_and_controllers_call_it(build, request):
    objs = request.getfixturevalue(build)
    pod_labels = one(objs, "Deployment", HOOK_NAME)["spec"]["template"]["metadata"]["labels"]
    svc = one(objs, "Service", HOOK_NAME)
    assert svc["metadata"]["namespace"] == HOOK_NS
    assert svc["spec"]["selector"] and _selects(svc["spec"]["selector"], pod_labels)
    ports = {p["port"]: p for p in svc["spec"]["ports"]}
    assert ports[443]["targetPort"] in ("https", 8443)
    assert _selects(one(objs, "PodDisruptionBudget", HOOK_NAME)["spec"]["selector"]["matchLabels"], pod_labels)

    from hooks.server.app import create_app

    routes = {rule.rule for rule in create_app(Settings()).url_map.iter_rules() if "POST" in rule.methods}
    hooks = [
        h for o in objs if o["apiVersion"].startswith("metacontroller.k8s.io/") for h in o["spec"]["hooks"].values()
    ]
    assert hooks
    for hook in hooks:
        webhook = hook["webhook"]
        assert "url" not in webhook
        assert webhook["service"] == {"name": HOOK_NAME, "namespace": HOOK_NS, "port": 443, "protocol": "https"}
        assert webhook["path"] in routes
        # mutual TLS: the CA and client certificate `python -m hooks certs` puts in Secret kaito-hooks-client
        client_secret = {"name": "kaito-hooks-client", "namespace": HOOK_NS}
        assert webhook["caBundle"] == {"secretRef": {**client_secret, "key": "ca.crt"}}
        assert webhook["clientTLS"] == {"secretRef": client_secret}
        assert "authorization" not in webhook and "basicAuth" not in webhook


def policy_admits(policy: dict, namespace_labels: dict, pod_labels: dict, port: int, named_ports: dict) -> bool:
    """Whether an ingress NetworkPolicy lets a pod (by its namespace and pod labels) reach `port`."""
    for rule in policy["spec"].get("ingress") or []:
        ports = rule.get("ports")
        if ports and not any(named_ports.get(p["port"], p["port"]) == port for p in ports):
            continue
        for peer in rule.get("from") or []:
            ns_ok = "namespaceSelector" not in peer or _selects(
                peer["namespaceSelector"].get("matchLabels") or {}, namespace_labels
            )
            # Without a namespaceSelector, a podSelector only looks in the policy's own namespace.
            if "namespaceSelector" not in peer:
                ns_ok = namespace_labels.get("kubernetes.io/metadata.name") == policy["metadata"]["namespace"]
            pod_ok = "podSelector" not in peer or _selects(peer["podSelector"].get("matchLabels") or {}, pod_labels)
            if ns_ok and pod_ok:
                return True
    return False


@pytest.mark.parametrize("build", ["install", "byo"])
def test_network_policy_admits_only_metacontroller_to_the_hook_pods(build, request):
    objs = request.getfixturevalue(build)
    policy = one(objs, "NetworkPolicy", HOOK_NAME)
    assert policy["metadata"]["namespace"] == HOOK_NS
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    pod_labels = one(objs, "Deployment", HOOK_NAME)["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"] and _selects(
        policy["spec"]["podSelector"]["matchLabels"], pod_labels
    )
    named = {p["name"]: p["containerPort"] for p in container(objs)["ports"]}
    port = named["https"]

    def ns(name):
        return {"kubernetes.io/metadata.name": name}

    # Metacontroller's upstream production manifests: namespace metacontroller, pod label
    # app.kubernetes.io/name=metacontroller.
    metacontroller = {"app.kubernetes.io/name": "metacontroller"}
    assert policy_admits(policy, ns("metacontroller"), metacontroller, port, named)
    assert not policy_admits(policy, ns("metacontroller"), metacontroller, port + 1, named)
    assert not policy_admits(policy, ns("default"), metacontroller, port, named)
    assert not policy_admits(policy, ns("metacontroller"), {"app": "other"}, port, named)
    assert not policy_admits(policy, ns(HOOK_NS), pod_labels, port, named)


def test_aks_install_wires_workload_identity_and_arm_settings(tmp_path, monkeypatch):
    objs = _build(
        tmp_path,
        "metacontroller",
        aks_env=(
            "AZURE_SUBSCRIPTION_ID=00000000-0000-0000-0000-000000000001\nAZURE_RESOURCE_GROUP=rg\n"
            "AZURE_CLUSTER_NAME=aks\nAZURE_CLIENT_ID=11111111-2222-3333-4444-555555555555\n"
            "KAITO_INSTALL_ID=5f1d6a2e-0000-4000-8000-00000000c1a5\n"
            "AZURE_TOKEN_CREDENTIALS=WorkloadIdentityCredential\nARM_ENDPOINT=\n"
        ),
    )
    sa = one(objs, "ServiceAccount", HOOK_NAME)
    assert sa["metadata"]["annotations"]["azure.workload.identity/client-id"] == "11111111-2222-3333-4444-555555555555"
    deploy = one(objs, "Deployment", HOOK_NAME)
    assert deploy["spec"]["template"]["spec"]["serviceAccountName"] == HOOK_NAME
    assert deploy["spec"]["template"]["metadata"]["labels"]["azure.workload.identity/use"] == "true"

    env = resolved_env(objs)
    assert Settings.from_env(env).node_provisioning == "aks"
    assert "AZURE_CLIENT_ID" not in env, "the workload identity webhook injects it from the ServiceAccount"
    # The hook's own reader accepts the resolved environment (no network: nothing is called).
    from hooks.machine.arm_client import AgentPools

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    pools = AgentPools.from_env(env)  # DefaultAzureCredential rejects an unknown AZURE_TOKEN_CREDENTIALS here
    pools.close()


def test_default_aks_env_has_every_setting_the_hook_reads(install):
    data = aks_configmap(install)["data"]
    assert {
        "AZURE_SUBSCRIPTION_ID",
        "AZURE_RESOURCE_GROUP",
        "AZURE_CLUSTER_NAME",
        "AZURE_CLIENT_ID",
        "KAITO_INSTALL_ID",
    } <= set(data)
    assert data["AZURE_TOKEN_CREDENTIALS"] == "WorkloadIdentityCredential"
    assert set(resolved_env(install)) >= {"AZURE_SUBSCRIPTION_ID", "AZURE_RESOURCE_GROUP", "AZURE_CLUSTER_NAME"}


def test_byo_overlay_drops_machines_and_azure(byo):
    assert not find(byo, "CustomResourceDefinition", "machines.kaito.sh")
    assert one(byo, "CustomResourceDefinition", "workspaces.kaito.sh")
    assert not find(byo, "DecoratorController")
    children = [c["resource"] for c in one(byo, "CompositeController", "workspace")["spec"]["childResources"]]
    assert "machines" not in children and {"statefulsets", "services", "jobs", "configmaps"} <= set(children)
    assert not [o for o in find(byo, "ConfigMap") if o["metadata"]["name"].startswith("kaito-hooks-aks")]

    env = resolved_env(byo)
    assert Settings.from_env(env).node_provisioning == "byo"
    assert not [k for k in env if k.startswith(("AZURE_", "ARM_"))]
    deploy = one(byo, "Deployment", HOOK_NAME)
    assert "azure.workload.identity/use" not in deploy["spec"]["template"]["metadata"]["labels"]
    annotations = one(byo, "ServiceAccount", HOOK_NAME)["metadata"].get("annotations") or {}
    assert not [k for k in annotations if k.startswith("azure.workload.identity")]
    # The rest of the hook server is the same as on AKS.
    assert one(byo, "NetworkPolicy", HOOK_NAME) and one(byo, "Service", HOOK_NAME)


def test_examples_are_workspaces_the_install_serves(install):
    crd = one(install, "CustomResourceDefinition", "workspaces.kaito.sh")
    for path in sorted((REPO / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc["apiVersion"] == f"{crd['spec']['group']}/{crd['spec']['versions'][0]['name']}"
            assert doc["kind"] == crd["spec"]["names"]["kind"]


def test_the_orphaned_pool_sweep_is_installed_only_with_aks(install, byo):
    def sweeps(objs):
        return [o for o in objs if o["kind"] == "DecoratorController" and o["metadata"]["name"] == "pool-sweep"]

    assert len(sweeps(install)) == 1 and sweeps(byo) == []


def test_metacontroller_gets_a_least_privilege_role_covering_every_kind_our_controllers_name(install):
    need_shared(UPSTREAM)
    role = one(install, "ClusterRole", "metacontroller")
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "*" not in rule["apiGroups"] + rule["resources"] + rule["verbs"], rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    full = {"get", "list", "watch", "create", "update", "patch", "delete"}
    for controller in find(install, "CompositeController"):
        spec = controller["spec"]
        parent = (spec["parentResource"]["apiVersion"].rpartition("/")[0], spec["parentResource"]["resource"])
        assert {"get", "list", "watch", "update", "patch"} <= granted.get(parent, set()), parent
        assert {"update", "patch"} <= granted.get((parent[0], parent[1] + "/status"), set()), parent
        for child in spec["childResources"]:
            key = (child["apiVersion"].rpartition("/")[0], child["resource"])
            assert full <= granted.get(key, set()), f"{controller['metadata']['name']} child {key}: {granted.get(key)}"
    for controller in find(install, "DecoratorController"):
        for resource in controller["spec"]["resources"]:
            key = (resource["apiVersion"].rpartition("/")[0], resource["resource"])
            assert {"get", "list", "watch", "update", "patch"} <= granted.get(key, set()), key
    binding = one(install, "ClusterRoleBinding", "metacontroller")
    assert binding["roleRef"]["name"] == "metacontroller"


def test_metacontroller_runs_with_the_tuned_rate_limit_and_workers(install):
    need_shared(UPSTREAM)
    args = one(install, "StatefulSet", "metacontroller")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--discovery-interval=20s" in args, "upstream's own args are kept"
    values = dict(a.removeprefix("--").split("=", 1) for a in args)
    assert float(values["client-go-qps"]) > 5 and int(values["client-go-burst"]) > 10 and int(values["workers"]) > 5
    assert "apply-strategy" not in values, "the install keeps the default dynamic-apply"


def test_every_webhook_has_an_explicit_timeout_above_the_arm_budget(install):
    def seconds(duration: str) -> float:
        assert duration.endswith("s") and duration[:-1].isdigit(), duration
        return float(duration[:-1])

    webhooks = [
        hook["webhook"]
        for kind in ("CompositeController", "DecoratorController")
        for c in find(install, kind)
        for hook in c["spec"]["hooks"].values()
    ]
    assert webhooks
    for webhook in webhooks:
        assert seconds(webhook["timeout"]) > ARM_BUDGET_S, webhook
