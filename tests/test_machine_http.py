"""The Machine hook over HTTP, served by real gunicorn on a loopback port, plus its manifests.

gunicorn runs tests/arm_support/machine_app.py; ARM is the local fake (tests/arm_support/fake_arm.py) because Azure's
servers cannot be reached from here. The DecoratorController is checked against Metacontroller
v4.17.2's own CRD schema from ../shared, the checkout's sibling folder (skipped when it is absent).
"""

import copy
import sys

import pytest
import yaml

pytest.importorskip("azure.mgmt.containerservice", reason="azure-mgmt-containerservice is not installed")
pytest.importorskip("gunicorn", reason="gunicorn is not installed")

from arm_support.fake_arm import FakeArm
from hook_server_support import REPO, HookServer, hooks_env
from loopback_support import free_port
from machine_support import NAME, hook_request, make_machine, make_node

pytestmark = pytest.mark.integration  # the hook server under gunicorn and a fake ARM

SHARED = REPO.parent / "shared"
METACONTROLLER_CRDS = SHARED / "reference" / "metacontroller" / "metacontroller-crds-v1.yaml"


def machine_hook(env_extra: dict[str, str]) -> HookServer:
    """The Machine hook app under plain gunicorn (one worker, warnings only) on a loopback port."""
    port = free_port()
    argv = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1", "--timeout", "30"]
    argv += ["--log-level", "warning", "arm_support.machine_app:make_app()"]
    return HookServer(argv, f"http://127.0.0.1:{port}", hooks_env(**env_extra), start_within_s=20)


# Module-scoped (conftest's arm is per test): the gunicorn app below is started once with this ARM's URL.
@pytest.fixture(scope="module")
def arm():
    with FakeArm() as server:
        yield server


@pytest.fixture(scope="module")
def hook(arm):
    server = machine_hook({"FAKE_ARM_URL": arm.base_url})
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _fresh_arm(request):
    if "arm" in request.fixturenames:
        arm = request.getfixturevalue("arm")
        arm.state.pools.clear()
        arm.state.requests.clear()
        arm.state.failures.clear()
        arm.state.refused_vm_sizes.clear()


def test_sync_and_finalize_lifecycle_over_http(hook, arm):
    machine = make_machine()
    first = hook.post("/sync/machine", hook_request(machine))
    assert first.status_code == 200, first.text
    assert first.headers["Content-Type"] == "application/json"
    body = first.json()
    assert body["resyncAfterSeconds"] == 15
    assert [c["reason"] for c in body["status"]["conditions"]] == ["Creating", "NotLaunched", "Creating"]
    assert len(arm.calls("PUT", NAME)) == 1

    machine["status"] = body["status"]
    again = hook.post("/sync/machine", hook_request(machine))
    assert again.status_code == 200 and len(arm.calls("PUT")) == 1
    # Byte-identical answer to an identical request.
    assert hook.post("/sync/machine", hook_request(machine)).content == again.content

    arm.set_state(NAME, "Succeeded")
    ready = hook.post("/sync/machine", hook_request(machine, [make_node()])).json()
    assert ready["status"]["conditions"][2]["status"] == "True"
    assert ready["status"]["nodeName"] == f"aks-{NAME}-12345678-vmss000000"

    machine["status"] = ready["status"]
    answers = []
    for step in range(3):
        if step == 2:
            arm.finish_delete(NAME)
        response = hook.post("/finalize/machine", hook_request(machine, finalizing=True))
        assert response.status_code == 200, response.text
        answers.append(response.json()["finalized"])
    assert answers == [False, False, True]
    assert len(arm.calls("DELETE", NAME)) == 1


def test_quota_refusal_is_a_200_with_the_arm_message(hook, arm):
    arm.refuse_vm_size("Standard_NC24ads_A100_v4", "QuotaExceeded", "exceeding approved Total Regional Cores quota")
    response = hook.post("/sync/machine", hook_request(make_machine()))
    assert response.status_code == 200
    ready = response.json()["status"]["conditions"][2]
    assert ready["status"] == "False"
    assert "QuotaExceeded: exceeding approved Total Regional Cores quota" in ready["message"]
    assert response.json()["resyncAfterSeconds"] == 300


def test_arm_throttling_becomes_429_with_retry_after(hook, arm):
    arm.throttle(count=1, retry_after=37)
    response = hook.post("/sync/machine", hook_request(make_machine()))
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "37"
    assert "throttled" in response.json()["error"]
    arm.throttle(count=1, retry_after=5)
    final = hook.post("/finalize/machine", hook_request(make_machine(), finalizing=True))
    assert (final.status_code, final.headers["Retry-After"]) == (429, "5")


def test_arm_server_error_becomes_500(hook, arm):
    arm.fail_next(503, "ServiceUnavailable", "try later")
    response = hook.post("/sync/machine", hook_request(make_machine()))
    assert response.status_code == 500
    assert "503" in response.json()["error"]


def test_bad_requests_are_400_with_a_json_error(hook, arm):
    cases = [
        dict(data="{not json", headers={"Content-Type": "application/json"}),
        dict(body={"hello": "world"}),
        dict(body={"object": {"kind": "Pod", "metadata": {"name": "p"}}}),
        dict(body=["object"]),
    ]
    for case in cases:
        response = hook.post("/sync/machine", **case)
        assert response.status_code == 400, (case, response.text)
        assert response.json()["error"]
    assert hook.post("/customize/machine", {"object": make_machine()}).status_code == 400
    assert arm.state.requests == []


def test_customize_over_http(hook):
    response = hook.post("/customize/machine", {"controller": {}, "parent": make_machine()})
    assert response.status_code == 200
    assert response.json()["relatedResources"][0]["labelSelector"] == {"matchLabels": {"agentpool": NAME}}


def test_unreachable_arm_is_500_and_missing_settings_do_not_stop_the_app():
    down = machine_hook({"FAKE_ARM_URL": f"https://127.0.0.1:{free_port()}"})
    try:
        response = down.post("/sync/machine", hook_request(make_machine()))
        assert response.status_code == 500
        assert "unreachable" in response.json()["error"]
    finally:
        down.stop()

    unconfigured = machine_hook({})
    try:
        # The app started without Azure settings; customize needs none.
        assert unconfigured.post("/customize/machine", {"parent": make_machine()}).status_code == 200
        # A Machine never launched says on its status why nothing happens (the Workspace shows it) ...
        response = unconfigured.post("/sync/machine", hook_request(make_machine()))
        assert response.status_code == 200
        ready = {c["type"]: c for c in response.json()["status"]["conditions"]}["Ready"]
        assert (ready["status"], ready["reason"]) == ("False", "ArmSettingsMissing")
        assert "AZURE_SUBSCRIPTION_ID" in ready["message"]
        # ... while one already launched keeps its status: nothing new is known, so the answer is 500.
        launched = make_machine()
        launched["status"] = {
            "conditions": [
                {
                    "type": "Launched",
                    "status": "True",
                    "reason": "Provisioned",
                    "message": "ok",
                    "lastTransitionTime": "2026-11-26T10:00:00Z",
                }
            ]
        }
        response = unconfigured.post("/sync/machine", hook_request(launched))
        assert response.status_code == 500
        assert "AZURE_SUBSCRIPTION_ID" in response.json()["error"]
    finally:
        unconfigured.stop()


# ---- manifests ---------------------------------------------------------------------------


def _unknown_fields(obj, schema, path="$"):
    """Fields a structural schema would prune (jsonschema alone does not report them)."""
    found = []
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return found
    if isinstance(obj, dict) and schema.get("type") == "object":
        props = schema.get("properties")
        if props is None:
            return found
        for key, value in obj.items():
            if key not in props:
                found.append(f"{path}.{key}")
            else:
                found += _unknown_fields(value, props[key], f"{path}.{key}")
    elif isinstance(obj, list) and "items" in schema:
        for i, item in enumerate(obj):
            found += _unknown_fields(item, schema["items"], f"{path}[{i}]")
    return found


def _load(name):
    return yaml.safe_load((REPO / "metacontroller" / name).read_text())


def test_decorator_controller_matches_metacontroller_schema():
    if not METACONTROLLER_CRDS.exists():
        pytest.skip(f"{METACONTROLLER_CRDS} is absent (needs the shared reference checkout)")
    import jsonschema

    crds = [d for d in yaml.safe_load_all(METACONTROLLER_CRDS.read_text()) if d]
    crd = next(d for d in crds if d["spec"]["names"]["kind"] == "DecoratorController")
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1")
    schema = version["schema"]["openAPIV3Schema"]
    controller = _load("machine-controller.yaml")
    assert controller["apiVersion"] == f"{crd['spec']['group']}/v1alpha1"
    assert controller["kind"] == "DecoratorController"
    jsonschema.validate(controller, schema)
    assert _unknown_fields(controller, schema) == []

    spec = controller["spec"]
    assert spec["resources"] == [{"apiVersion": "kaito.sh/v1alpha1", "resource": "machines"}]
    assert spec["resyncPeriodSeconds"] > 0
    served = {"sync": "/sync/machine", "finalize": "/finalize/machine", "customize": "/customize/machine"}
    for hook_name, path in served.items():
        hook_spec = spec["hooks"][hook_name]
        assert hook_spec["version"] == "v2"
        assert hook_spec["webhook"]["path"] == path
        assert hook_spec["webhook"]["service"] == {
            "name": "kaito-hooks",
            "namespace": "kaito-system",
            "port": 443,
            "protocol": "https",
        }

    broken = copy.deepcopy(controller)
    broken["spec"]["hooks"]["sync"]["version"] = "v3"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_routes_named_by_the_controller_are_served():
    from flask import Flask

    from hooks.server.machine_routes import machine_blueprint

    app = Flask("routes")
    app.register_blueprint(machine_blueprint(lambda: None))
    rules = {rule.rule: rule.methods for rule in app.url_map.iter_rules()}
    for hook_spec in _load("machine-controller.yaml")["spec"]["hooks"].values():
        assert "POST" in rules[hook_spec["webhook"]["path"]]


def test_machine_crd_is_a_valid_structural_crd():
    import kubernetes_validate

    crd = _load("machine-crd.yaml")
    kubernetes_validate.validate(crd, kubernetes_validate.latest_version(), strict=True)
    version = crd["spec"]["versions"][0]
    assert crd["spec"]["scope"] == "Namespaced" and crd["spec"]["names"]["plural"] == "machines"
    assert version["subresources"] == {"status": {}}
    columns = [c["name"].upper() for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert columns == ["INSTANCE", "READY", "NODE", "AGE"]

    def untyped(schema, path):
        # Structural: every node states its type (int-or-string is the one sanctioned exception).
        if schema.get("x-kubernetes-int-or-string") or schema.get("x-kubernetes-preserve-unknown-fields"):
            return []
        missing = [] if "type" in schema else [path]
        for key, sub in (schema.get("properties") or {}).items():
            missing += untyped(sub, f"{path}.{key}")
        if "items" in schema:
            missing += untyped(schema["items"], f"{path}[]")
        return missing

    assert untyped(version["schema"]["openAPIV3Schema"], "$") == []


def test_machine_crd_cel_rules():
    celpy = pytest.importorskip("celpy", reason="cel-python is not installed")
    schema = _load("machine-crd.yaml")["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    env = celpy.Environment()

    def holds(rule, value, old=None):
        activation = {"self": celpy.json_to_cel(value)}
        if old is not None:
            activation["oldSelf"] = celpy.json_to_cel(old)
        return bool(env.program(env.compile(rule)).evaluate(activation))

    (name_rule,) = schema["x-kubernetes-validations"]
    assert holds(name_rule["rule"], make_machine())
    assert not holds(name_rule["rule"], make_machine(name="workspace-phi-3-0"))
    immutable, instance_type = schema["properties"]["spec"]["x-kubernetes-validations"]
    spec = make_machine()["spec"]
    assert holds(immutable["rule"], spec, spec)
    changed = copy.deepcopy(spec)
    changed["requirements"][0]["values"] = ["Standard_NC6s_v3"]
    assert not holds(immutable["rule"], changed, spec)
    assert holds(instance_type["rule"], spec)
    assert not holds(instance_type["rule"], {**spec, "requirements": spec["requirements"][1:]})
