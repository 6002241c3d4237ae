"""Unit tests of the Metacontroller stand-in's pure parts (no cluster needed).

The stand-in (standin_metacontroller/) replaces Metacontroller v4.17.2 in the cluster tests because
the Go module proxy does not serve Metacontroller's module; these tests pin the wire format and
the decisions it shares with Metacontroller (object map keys, strict answers, related rules,
claiming, update strategies, webhook errors). Its behaviour against the real apiserver is covered
by test_standin_cluster.py.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from typing import ClassVar

import pytest
from standin_metacontroller import children as kids  # tests/cluster is on sys.path (its conftest)
from standin_metacontroller import hookwire, lifecycle, objectmaps, related, webhook
from standin_metacontroller import labelselectors as selectors
from standin_metacontroller.workqueue import WorkQueue


def obj(kind, name, namespace=None, api_version="v1", labels=None, uid=None, owner=None, **extra):
    meta = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    if labels:
        meta["labels"] = labels
    if uid:
        meta["uid"] = uid
        meta["resourceVersion"] = "1"
    if owner:
        meta["ownerReferences"] = [owner]
    return {"apiVersion": api_version, "kind": kind, "metadata": meta, **extra}


WORKSPACE = obj("Workspace", "ws", "team", api_version="kaito.sh/v1alpha1", uid="u-ws")


# ---------------------------------------------------------------------------------- object maps


def test_group_keys_are_kind_dot_apiversion():
    assert objectmaps.group_key("v1", "ConfigMap") == "ConfigMap.v1"
    assert objectmaps.group_key("apps/v1", "StatefulSet") == "StatefulSet.apps/v1"


@pytest.mark.parametrize(
    "version,parent_namespaced,namespace,expected",
    [
        ("v2", True, "team", "team/a"),
        ("v2", True, None, "a"),  # cluster-scoped object (a Node)
        ("v1", True, "team", "a"),
        ("v1", False, "team", "team/a"),
        ("v1", False, None, "a"),
    ],
)
def test_object_keys_per_hook_version(version, parent_namespaced, namespace, expected):
    assert objectmaps.object_key(obj("X", "a", namespace), version, parent_namespaced) == expected


def test_object_map_keeps_empty_groups():
    groups = {"Pod.v1": [obj("Pod", "p", "team")], "Service.v1": []}
    assert objectmaps.object_map(groups, "v2", True) == {"Pod.v1": {"team/p": groups["Pod.v1"][0]}, "Service.v1": {}}


# ---------------------------------------------------------------------------------- selectors


def test_label_selector_semantics():
    labels = {"app": "x", "tier": "gpu"}
    assert selectors.matches(None, labels) and selectors.matches({}, labels)
    assert selectors.matches({"matchLabels": {"app": "x"}}, labels)
    assert not selectors.matches({"matchLabels": {"app": "y"}}, labels)
    assert selectors.matches({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["gpu"]}]}, labels)
    assert not selectors.matches(
        {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["gpu"]}]}, labels
    )
    assert selectors.matches({"matchExpressions": [{"key": "zone", "operator": "DoesNotExist"}]}, labels)
    assert not selectors.matches({"matchExpressions": [{"key": "zone", "operator": "Exists"}]}, labels)
    with pytest.raises(selectors.SelectorError, match="unknown operator"):
        selectors.matches({"matchExpressions": [{"key": "a", "operator": "Equals"}]}, labels)


def test_annotation_selector_uses_match_annotations():
    sel = {"matchAnnotations": {"a": "1"}}
    assert selectors.matches(sel, {"a": "1"}, match_key="matchAnnotations")
    assert not selectors.matches(sel, {"a": "2"}, match_key="matchAnnotations")


# ---------------------------------------------------------------------------------- hook answers


def test_v2_hooks_are_strict_by_default_v1_loose():
    assert hookwire.unmarshal_mode({"version": "v2"}) == "strict"
    assert hookwire.unmarshal_mode({}) == "loose"
    assert hookwire.unmarshal_mode({"version": "v2", "webhook": {"responseUnMarshallMode": "loose"}}) == "loose"


def test_strict_mode_refuses_unknown_and_duplicate_fields():
    with pytest.raises(hookwire.HookAnswerError, match="unknown field"):
        hookwire.parse_composite('{"status": {}, "children": [], "extra": 1}', "strict")
    with pytest.raises(hookwire.HookAnswerError, match="duplicate field 'status'"):
        hookwire.parse_composite('{"status": {}, "status": {}}', "strict")
    answer = hookwire.parse_composite('{"status": {"a": 1}, "children": [], "extra": 1}', "loose")
    assert answer.status == {"a": 1} and answer.children == []


def test_answer_field_types_are_checked():
    with pytest.raises(hookwire.HookAnswerError, match="resyncAfterSeconds"):
        hookwire.parse_composite('{"resyncAfterSeconds": "5"}', "strict")
    with pytest.raises(hookwire.HookAnswerError, match="Object 'kind' is missing"):
        hookwire.parse_composite('{"children": [{"apiVersion": "v1", "metadata": {"name": "a"}}]}', "strict")
    with pytest.raises(hookwire.HookAnswerError, match="not JSON"):
        hookwire.parse_composite("<html>", "strict")
    with pytest.raises(hookwire.HookAnswerError, match="labels"):
        hookwire.parse_decorator('{"labels": {"a": 1}}', "strict")


def test_absent_children_mean_no_children_and_status_null_is_kept_as_none():
    answer = hookwire.parse_composite("{}", "strict")
    assert answer.children == [] and answer.status is None and answer.resync_after_seconds == 0
    decorator = hookwire.parse_decorator('{"labels": {"gone": null}, "status": null, "finalized": true}', "strict")
    assert decorator.labels == {"gone": None} and decorator.status is None and decorator.finalized


def test_customize_rules_are_checked_strictly():
    rules = hookwire.parse_customize(
        '{"relatedResources": [{"apiVersion": "v1", "resource": "nodes", "labelSelector": {"matchLabels": {"a": "b"}}}]}',
        "strict",
    )
    assert rules[0]["resource"] == "nodes"
    with pytest.raises(hookwire.HookAnswerError, match="unknown field"):
        hookwire.parse_customize('{"relatedResources": [{"apiVersion": "v1", "resource": "nodes", "x": 1}]}', "strict")
    with pytest.raises(hookwire.HookAnswerError, match="resource is missing"):
        hookwire.parse_customize('{"relatedResources": [{"apiVersion": "v1"}]}', "strict")


def test_requests_have_metacontroller_keys():
    assert set(hookwire.composite_request({}, {}, {}, {}, False)) == {
        "controller",
        "parent",
        "children",
        "related",
        "finalizing",
    }
    assert set(hookwire.decorator_request({}, {}, {}, {}, True)) == {
        "controller",
        "object",
        "attachments",
        "related",
        "finalizing",
    }
    assert set(hookwire.customize_request({}, {})) == {"controller", "parent"}


# ---------------------------------------------------------------------------------- related rules

NODE = obj("Node", "n1", labels={"agentpool": "ws0"})
POD_TEAM = obj("Pod", "p", "team", labels={"kaito.sh/workspace": "ws"})
POD_OTHER = obj("Pod", "p", "other", labels={"kaito.sh/workspace": "ws"})


def test_selection_kinds_and_conflicts():
    assert related.selection({"labelSelector": {}}) == related.BY_LABELS
    assert related.selection({"namespace": "a", "labelSelector": {}}) == related.BY_NAMESPACE_AND_LABELS
    assert related.selection({"names": ["a"]}) == related.BY_NAMES
    assert related.selection({"namespaceSelector": {}}) == related.BY_NAMESPACE_SELECTOR
    with pytest.raises(related.RuleError):
        related.selection({"names": ["a"], "labelSelector": {}})
    with pytest.raises(related.RuleError):
        related.selection({"namespace": "a", "namespaceSelector": {}})


def test_v2_sees_cluster_scoped_and_other_namespaces_v1_does_not():
    nodes = {"apiVersion": "v1", "resource": "nodes", "labelSelector": {"matchLabels": {"agentpool": "ws0"}}}
    assert related.matches(nodes, "v2", WORKSPACE, True, NODE)
    pods = {"apiVersion": "v1", "resource": "pods", "labelSelector": {"matchLabels": {"kaito.sh/workspace": "ws"}}}
    assert related.matches(pods, "v2", WORKSPACE, True, POD_OTHER)
    assert not related.matches(pods, "v1", WORKSPACE, True, POD_OTHER)
    assert related.list_namespace(pods, "v1", WORKSPACE, True, True) == "team"
    assert related.list_namespace(pods, "v2", WORKSPACE, True, True) == ""


def test_namespace_plus_labels_and_names():
    rule = {
        "apiVersion": "v1",
        "resource": "pods",
        "namespace": "team",
        "labelSelector": {"matchLabels": {"kaito.sh/workspace": "ws"}},
    }
    assert related.matches(rule, "v2", WORKSPACE, True, POD_TEAM)
    assert not related.matches(rule, "v2", WORKSPACE, True, POD_OTHER)
    assert related.list_namespace(rule, "v2", WORKSPACE, True, True) == "team"
    names = {"apiVersion": "v1", "resource": "pods", "namespace": "other", "names": ["p"]}
    assert related.matches(names, "v2", WORKSPACE, True, POD_OTHER)
    with pytest.raises(related.RuleError, match="differs from parent object namespace"):
        related.list_namespace(names, "v1", WORKSPACE, True, True)


# ---------------------------------------------------------------------------------- children


def test_claim_adopts_matching_orphans_and_releases_unmatched_own_children():
    selected = kids.composite_selector({"generateSelector": True}, WORKSPACE)
    ours = obj(
        "ConfigMap", "a", "team", labels={"controller-uid": "u-ws"}, uid="1", owner={"uid": "u-ws", "controller": True}
    )
    orphan = obj("ConfigMap", "b", "team", labels={"controller-uid": "u-ws"}, uid="2")
    stray = obj("ConfigMap", "c", "team", labels={}, uid="3", owner={"uid": "u-ws", "controller": True})
    foreign = obj(
        "ConfigMap",
        "d",
        "team",
        labels={"controller-uid": "u-ws"},
        uid="4",
        owner={"uid": "someone", "controller": True},
    )
    claim = kids.claim_children(WORKSPACE, [ours, orphan, stray, foreign], selected)
    assert claim.owned == [ours] and claim.adopt == [orphan] and claim.release == [stray]


def test_without_generate_selector_the_parent_needs_spec_selector():
    with pytest.raises(kids.DesiredChildError, match=r"spec\.selector"):
        kids.composite_selector({}, WORKSPACE)


def test_shape_desired_child():
    desired = kids.shape_desired(
        WORKSPACE,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "c", "uid": "x", "resourceVersion": "9"},
            "status": {"a": 1},
            "data": {"k": "v"},
        },
        namespaced=True,
        generate_selector=True,
    )
    meta = desired["metadata"]
    assert meta["namespace"] == "team" and meta["labels"] == {"controller-uid": "u-ws"}
    assert "uid" not in meta and "resourceVersion" not in meta and "status" not in desired
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "kaito.sh/v1alpha1",
            "kind": "Workspace",
            "name": "ws",
            "uid": "u-ws",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    with pytest.raises(kids.DesiredChildError, match=r"metadata\.name"):
        kids.shape_desired(WORKSPACE, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}, namespaced=True)
    with pytest.raises(kids.DesiredChildError, match="don't match parent selector"):
        kids.shape_desired(
            WORKSPACE,
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}},
            namespaced=True,
            selected=lambda o: False,
        )


def test_attachments_carry_the_decorator_annotation():
    machine = obj("Machine", "m", "team", api_version="kaito.sh/v1alpha1", uid="u-m")
    desired = kids.shape_desired(
        machine,
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}},
        namespaced=True,
        decorator_name="machine",
    )
    assert desired["metadata"]["annotations"] == {kids.DECORATOR_ANNOTATION: "machine"}
    assert kids.attachment_selector("machine", machine)(desired | {"metadata": desired["metadata"]})


def test_plan_follows_update_strategies():
    observed = {
        ("ConfigMap.v1", "team", "keep"): obj("ConfigMap", "keep", "team", uid="1"),
        ("ConfigMap.v1", "team", "gone"): obj("ConfigMap", "gone", "team", uid="2"),
        ("Job.batch/v1", "team", "job"): obj("Job", "job", "team", uid="3"),
        ("Service.v1", "team", "svc"): obj("Service", "svc", "team", uid="4"),
    }
    desired = {
        ("ConfigMap.v1", "team", "keep"): {"x": 1},
        ("ConfigMap.v1", "team", "new"): {"x": 2},
        ("Job.batch/v1", "team", "job"): {"x": 3},
        ("Service.v1", "team", "svc"): {"x": 4},
    }
    methods = {"ConfigMap.v1": "InPlace", "Job.batch/v1": "Recreate"}  # Service: default OnDelete
    verbs = {(a.verb, a.ident[2]) for a in kids.plan(observed, desired, methods)}
    assert verbs == {("delete", "gone"), ("apply", "keep"), ("create", "new"), ("recreate", "job")}


def test_plan_leaves_children_being_deleted_alone():
    dying = obj("ConfigMap", "a", "team", uid="1")
    dying["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert kids.plan({("ConfigMap.v1", "team", "a"): dying}, {}, {}) == []
    assert (
        kids.plan(
            {("ConfigMap.v1", "team", "a"): dying}, {("ConfigMap.v1", "team", "a"): {}}, {"ConfigMap.v1": "InPlace"}
        )
        == []
    )


def test_differs_ignores_bookkeeping():
    live = obj("Job", "j", "team", uid="1", spec={"a": 1})
    live["metadata"]["managedFields"] = [{"time": "t1"}]
    same = json.loads(json.dumps(live))
    same["metadata"].update(resourceVersion="2", managedFields=[{"time": "t2"}])
    assert not kids.differs(live, same)
    assert kids.differs(live, dict(same, spec={"a": 2}))


# ---------------------------------------------------------------------------------- webhook


def test_go_durations():
    assert webhook.parse_duration("10s") == 10
    assert webhook.parse_duration("1m30s") == 90
    assert webhook.parse_duration("500ms") == 0.5
    with pytest.raises(webhook.WebhookConfigError, match="Go duration"):
        webhook.parse_duration("10 seconds")


def test_url_wins_over_service():
    assert (
        webhook.hook_url({"url": "http://127.0.0.1:1/x", "service": {"name": "a", "namespace": "b"}})
        == "http://127.0.0.1:1/x"
    )
    assert (
        webhook.hook_url(
            {"service": {"name": "kaito-hooks", "namespace": "kaito-system", "port": 80}, "path": "/sync/workspace"}
        )
        == "http://kaito-hooks.kaito-system:80/sync/workspace"
    )
    with pytest.raises(webhook.WebhookConfigError):
        webhook.hook_url({})


def test_retry_after_seconds_or_date():
    assert webhook.retry_after_seconds("7") == 7
    assert (
        59
        <= webhook.retry_after_seconds(
            "Thu, 01 Jan 2026 00:01:00 GMT", now=time.mktime((2026, 1, 1, 0, 0, 0, 0, 0, 0)) - time.timezone
        )
        <= 60
    )
    assert webhook.retry_after_seconds(None) == 0


SECRETS = {
    ("kaito-system", "hook-token"): {"token": b"s3cret\n"},
    ("kaito-system", "basic"): {"username": b"u", "password": b"p"},
}


def read_secret(namespace, name):
    try:
        return SECRETS[(namespace, name)]
    except KeyError:
        raise LookupError(f"Secret {namespace}/{name} not found") from None


def test_bearer_token_from_secret_and_endpoint_configs():
    bearer = {"authorization": {"secretRef": {"name": "hook-token", "namespace": "kaito-system", "key": "token"}}}
    assert webhook.auth_headers(bearer, read_secret) == {"Authorization": "Bearer s3cret"}
    endpoints = [{"host": "127.0.0.1:8080", **bearer}]
    conn = webhook.resolve({"url": "http://127.0.0.1:8080/sync"}, endpoints, read_secret, lambda n, m: {})
    assert conn.headers == {"Authorization": "Bearer s3cret"} and conn.timeout_s == 10
    other = webhook.resolve(
        {"url": "http://127.0.0.1:9999/sync", "timeout": "2s"}, endpoints, read_secret, lambda n, m: {}
    )
    assert other.headers == {} and other.timeout_s == 2
    own = webhook.resolve(
        {
            "url": "http://127.0.0.1:8080/sync",
            "basicAuth": {"secretRef": {"name": "basic", "namespace": "kaito-system"}},
        },
        endpoints,
        read_secret,
        lambda n, m: {},
    )
    assert own.headers == {"Authorization": "Basic dTpw"}  # the hook's own setting wins


def test_missing_secret_is_a_config_error():
    with pytest.raises(webhook.WebhookConfigError, match="not found"):
        webhook.auth_headers({"authorization": {"secretRef": {"name": "x", "namespace": "y", "key": "k"}}}, read_secret)
    with pytest.raises(webhook.WebhookConfigError, match="mutually exclusive"):
        webhook.auth_headers({"authorization": {}, "basicAuth": {}}, read_secret)


class _Hook(http.server.BaseHTTPRequestHandler):
    replies: ClassVar[list] = []
    seen: ClassVar[list] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).seen.append((self.path, dict(self.headers), json.loads(body)))
        status, headers, payload, delay = type(self).replies.pop(0)
        time.sleep(delay)
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(payload.encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def hook_server():
    _Hook.replies, _Hook.seen = [], []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


def test_post_success_429_error_and_timeout(hook_server):
    url = f"http://127.0.0.1:{hook_server.server_port}/sync"
    conn = webhook.Connection(url=url, timeout_s=0.5, headers={"Authorization": "Bearer t"})
    _Hook.replies = [
        (200, {}, '{"status": {}}', 0),
        (429, {"Retry-After": "3"}, "slow down", 0),
        (500, {}, '{"error": "boom"}', 0),
        (200, {}, "{}", 1.5),
    ]
    assert json.loads(webhook.post(conn, {"parent": {}})) == {"status": {}}
    path, headers, _ = _Hook.seen[0]
    assert path == "/sync" and headers["Authorization"] == "Bearer t" and headers["Content-Type"] == "application/json"
    with pytest.raises(webhook.HookRetryLater) as later:
        webhook.post(conn, {})
    assert later.value.delay_s == 3
    with pytest.raises(webhook.HookCallError, match=r"unsupported status code: 500 body: .*boom"):
        webhook.post(conn, {})
    with pytest.raises(webhook.HookCallError, match=r"Client\.Timeout exceeded"):
        webhook.post(conn, {})


def test_connection_refused_is_a_call_error():
    with pytest.raises(webhook.HookCallError):
        webhook.post(webhook.Connection(url="http://127.0.0.1:9/x", timeout_s=1), {})


# ---------------------------------------------------------------------------------- work queue


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_queue_deduplicates_and_requeues_keys_changed_while_processing():
    queue = WorkQueue()
    queue.add("a")
    queue.add("a")
    queue.add("b")
    assert len(queue) == 2
    key = queue.get(timeout_s=0)
    assert key == "a"
    queue.add("a")  # changed while being processed
    assert queue.get(timeout_s=0) == "b"
    assert queue.get(timeout_s=0) is None  # "a" is not handed out twice at once
    queue.done("a")
    assert queue.get(timeout_s=0) == "a"


def test_queue_delays_and_backoff():
    clock = Clock()
    queue = WorkQueue(max_backoff_s=1.0, clock=clock)
    queue.add_after("x", 5)
    assert queue.get(timeout_s=0) is None
    clock.now = 5
    assert queue.get(timeout_s=0) == "x"
    queue.done("x")
    delays = [queue.add_rate_limited("y") for _ in range(12)]
    assert delays[0] == 0.005 and delays[1] == 0.01 and delays[-1] == 1.0
    queue.forget("y")
    assert queue.failures("y") == 0


def test_target_label_selector_strings():
    sel = selectors.parse("a=b, c!=d, e, !f, g in (x, y), h notin (z)")
    assert selectors.matches(sel, {"a": "b", "e": "", "g": "x"})
    assert not selectors.matches(sel, {"a": "b", "e": "", "g": "x", "f": "1"})
    assert not selectors.matches(sel, {"a": "b", "e": "", "g": "w"})
    assert not selectors.matches(sel, {"a": "b", "e": "", "g": "x", "c": "d"})
    assert selectors.matches(selectors.parse("!standin-test"), {})
    assert not selectors.matches(selectors.parse("!standin-test"), {"standin-test": "1"})
    with pytest.raises(selectors.SelectorError):
        selectors.parse("a b")


# ---------------------------------------------------------------------------------- lifecycle

OURS = "metacontroller.io/decoratorcontroller-machine"


def step(selected=True, finalizers=(), deleting=False, finalize_hook=True):
    return lifecycle.decide(
        selected=selected, finalizers=finalizers, our_finalizer=OURS, deleting=deleting, has_finalize_hook=finalize_hook
    )


def test_a_finalize_hook_adds_our_finalizer_first_then_syncs():
    assert step() == lifecycle.Step(add_finalizer=True, hook="sync", manage_children=True)
    assert step(finalizers=[OURS]) == lifecycle.Step(hook="sync", manage_children=True)
    assert step(finalize_hook=False) == lifecycle.Step(hook="sync", manage_children=True)


def test_deleting_calls_finalize_while_we_hold_the_finalizer():
    assert step(finalizers=[OURS], deleting=True) == lifecycle.Step(hook="finalize", manage_children=True)
    assert step(finalizers=["other"], deleting=True) == lifecycle.Step()  # ours already removed: nothing
    assert step(finalizers=[OURS, "foregroundDeletion"], deleting=True).manage_children is False


def test_without_a_finalize_hook_a_deleted_object_is_left_to_the_garbage_collector():
    assert step(deleting=True, finalize_hook=False) == lifecycle.Step()


def test_an_object_that_stops_matching_is_finalized_then_ignored():
    assert step(selected=False, finalizers=[OURS]) == lifecycle.Step(hook="finalize", manage_children=True)
    assert step(selected=False) == lifecycle.Step()


def test_ignore_status_changes_lets_only_spec_metadata_and_deletion_through():
    from standin_metacontroller.manager import _meaningful_change

    old = {"metadata": {"generation": 1, "labels": {"a": "1"}}, "status": {"x": 1}}
    assert not _meaningful_change(old, {**old, "status": {"x": 2}})
    assert _meaningful_change(old, {"metadata": {"generation": 2, "labels": {"a": "1"}}})
    assert _meaningful_change(old, {"metadata": {"generation": 1, "labels": {"a": "2"}}})
    assert _meaningful_change(old, {"metadata": {"generation": 1, "labels": {"a": "1"}, "deletionTimestamp": "t"}})


def test_loopback_hooks_bypass_proxies_from_the_environment(hook_server, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://192.0.2.1:9")  # TEST-NET: would hang or fail if used
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    _Hook.replies = [(200, {}, "{}", 0)]
    url = f"http://127.0.0.1:{hook_server.server_port}/sync"
    assert webhook.post(webhook.Connection(url=url, timeout_s=2), {}) == b"{}"
    assert webhook.proxies_for("http://hooks.example:80/x") == {}
