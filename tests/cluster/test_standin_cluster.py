"""The Metacontroller stand-in against the real kube-apiserver (tests/cluster/controlplane.py).

These tests drive the stand-in with test CRDs (group standin.test) and a scripted hook server on
loopback, and check what Metacontroller's documented semantics promise: the hook requests' shape,
children created by server-side apply with controller ownerReferences and the controller-uid label,
status with observedGeneration, InPlace / Recreate / deletion of unwanted children, no change when
the hook fails (and a SyncError event), 429 Retry-After, resyncAfterSeconds, related objects
re-triggering a sync, the DecoratorController's finalizer / labels / status / finalize loop, Bearer
tokens from a Secret through endpointConfigs, and a clean stop on SIGTERM.

The stand-in started here only runs controller objects labelled ``standin-test=<this run>``
(``--target-label-selector``), so it does not meddle with the operator's controllers.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RUN_ID = uuid.uuid4().hex[:8]
SELECTOR_LABEL = "standin-test"
METACONTROLLER_CRDS = REPO.parent / "shared" / "reference" / "metacontroller" / "metacontroller-crds-v1.yaml"

pytestmark = pytest.mark.cluster


def _crd(kind: str, plural: str) -> dict:
    open_object = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.standin.test"},
        "spec": {
            "group": "standin.test",
            "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": f"{kind}List"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {"spec": open_object, "status": open_object},
                        }
                    },
                }
            ],
        },
    }


# ---------------------------------------------------------------------------------- a scripted hook server

Answer = Callable[[dict], Any]  # body -> dict (200) or (status, headers, payload)


class ScriptedHooks:
    """Loopback hook server: ``answers[path](body)``; every call is recorded as (time, path, headers, body)."""

    def __init__(self):
        self.answers: dict[str, Answer] = {}
        self.calls: list[tuple[float, str, dict, dict]] = []
        self.lock = threading.Lock()
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                with hooks.lock:
                    hooks.calls.append((time.monotonic(), self.path, dict(self.headers), body))
                    answer = hooks.answers.get(self.path)
                if answer is None:
                    status, headers, payload = 404, {}, {"error": f"no route {self.path}"}
                else:
                    result = answer(body)
                    status, headers, payload = result if isinstance(result, tuple) else (200, {}, result)
                data = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def calls_to(self, path: str, namespace: str, name: str) -> list[tuple[float, str, dict, dict]]:
        """Calls about one object (earlier tests' objects may still be synced while their namespace goes)."""
        with self.lock:
            calls = [c for c in self.calls if c[1] == path]
        wanted = {"namespace": namespace, "name": name}
        return [
            c
            for c in calls
            if {k: ((c[3].get("parent") or c[3].get("object") or {}).get("metadata") or {}).get(k) for k in wanted}
            == wanted
        ]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def standin(cluster):
    from controlplane import Process

    if not METACONTROLLER_CRDS.exists():
        pytest.skip(f"{METACONTROLLER_CRDS} is absent (../shared is only beside the checkout in CI and sessions)")
    crds = [_crd("Parent", "parents"), _crd("Target", "targets")]
    cluster.kubectl("apply", "--server-side", "-f", "-", input=METACONTROLLER_CRDS.read_text())
    cluster.kubectl("apply", "--server-side", "-f", "-", input=as_list(*crds))
    cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/parents.standin.test",
        "crd/targets.standin.test",
        "crd/compositecontrollers.metacontroller.k8s.io",
        "crd/decoratorcontrollers.metacontroller.k8s.io",
    )
    process = Process(
        "standin-test",
        [
            sys.executable,
            "-m",
            "standin_metacontroller",
            "--kubeconfig",
            str(cluster.kubeconfig),
            "--target-label-selector",
            f"{SELECTOR_LABEL}={RUN_ID}",
            "--max-backoff",
            "2",
            "--discovery-interval",
            "2s",
        ],
        cluster.logdir / f"standin-test-{RUN_ID}.log",
        env={**os.environ, "PYTHONPATH": str(HERE)},
        cwd=REPO,
    )
    try:
        cluster.wait_for("the stand-in to start", lambda: "started" in process.tail() or process.exited(), timeout=30)
        assert not process.exited(), process.exited()
        yield process
    finally:
        process.stop()


@pytest.fixture
def hooks():
    server = ScriptedHooks()
    yield server
    server.stop()


def kubectl_json(cluster, *args) -> dict | None:
    out = cluster.kubectl(*args, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else None


def as_list(*docs: dict) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": list(docs)})


def apply(cluster, *docs: dict) -> None:
    cluster.kubectl(
        "apply", "--server-side", "--force-conflicts", "--field-manager=test", "-f", "-", input=as_list(*docs)
    )


def controller_doc(kind: str, name: str, spec: dict) -> dict:
    return {
        "apiVersion": "metacontroller.k8s.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "labels": {SELECTOR_LABEL: RUN_ID}},
        "spec": spec,
    }


def hook(url: str, version: str = "v2", timeout: str = "5s") -> dict:
    return {"version": version, "webhook": {"url": url, "timeout": timeout}}


def composite(
    cluster, server: ScriptedHooks, name: str, *, customize: bool = True, finalize: bool = False, **extra
) -> dict:
    hooks = {"sync": hook(f"{server.url}/sync")}
    if customize:
        hooks["customize"] = hook(f"{server.url}/customize")
    if finalize:
        hooks["finalize"] = hook(f"{server.url}/finalize")
    spec = {
        "generateSelector": True,
        "parentResource": {"apiVersion": "standin.test/v1", "resource": "parents"},
        "childResources": [
            {"apiVersion": "v1", "resource": "configmaps", "updateStrategy": {"method": "InPlace"}},
            {"apiVersion": "v1", "resource": "secrets", "updateStrategy": {"method": "Recreate"}},
        ],
        "hooks": hooks,
        **extra,
    }
    doc = controller_doc("CompositeController", name, spec)
    apply(cluster, doc)
    _created.append(doc)
    return doc


_created: list[dict] = []  # controller objects to delete after the test (the cluster lives for the session)


@pytest.fixture(autouse=True)
def _delete_controllers(cluster):
    yield
    while _created:
        doc = _created.pop()
        cluster.kubectl("delete", doc["kind"].lower(), doc["metadata"]["name"], "--ignore-not-found", "--wait=false")


def parent_children(body: dict) -> list[dict]:
    """The scripted composite sync: one ConfigMap and one Secret from the parent's spec."""
    parent = body["parent"]
    spec = parent.get("spec") or {}
    name = parent["metadata"]["name"]
    children = []
    if not spec.get("dropConfigMap"):
        children.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"{name}-cm"},
                "data": {"value": str(spec.get("value", ""))},
            }
        )
    children.append(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"{name}-secret"},
            "stringData": {"value": str(spec.get("secret", "s"))},
        }
    )
    return children


def sync_answer(body: dict, **extra) -> dict:
    observed = {group: sorted(objs) for group, objs in body["children"].items()}
    related = {group: sorted(objs) for group, objs in body["related"].items()}
    return {"status": {"observed": observed, "related": related}, "children": parent_children(body), **extra}


def customize_nodes(body: dict) -> dict:
    return {
        "relatedResources": [
            {
                "apiVersion": "v1",
                "resource": "nodes",
                "labelSelector": {"matchLabels": {"standin-pool": body["parent"]["metadata"]["name"]}},
            }
        ]
    }


def parent_doc(namespace: str, name: str, **spec) -> dict:
    return {
        "apiVersion": "standin.test/v1",
        "kind": "Parent",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


# ---------------------------------------------------------------------------------- CompositeController


def test_composite_children_owner_refs_status_and_request_shape(cluster, standin, hooks, namespace):
    hooks.answers = {"/sync": sync_answer, "/customize": customize_nodes}
    composite(cluster, hooks, f"parents-{RUN_ID}")
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": f"standin-{RUN_ID}-a", "labels": {"standin-pool": "p1"}},
    }
    apply(cluster, node)
    try:
        apply(cluster, parent_doc(namespace, "p1", value="one"))
        parent = cluster.wait_for(
            "the parent's status to list its observed children",
            lambda: (
                (p := kubectl_json(cluster, "get", "parents.standin.test", "p1", "-n", namespace))
                and (p.get("status") or {}).get("observed", {}).get("ConfigMap.v1")
                and p
            ),
        )
        status = parent["status"]
        assert status["observedGeneration"] == parent["metadata"]["generation"]
        assert status["observed"] == {"ConfigMap.v1": [f"{namespace}/p1-cm"], "Secret.v1": [f"{namespace}/p1-secret"]}
        assert status["related"] == {"Node.v1": [node["metadata"]["name"]]}  # cluster-scoped: key is the name

        first = hooks.calls_to("/sync", namespace, "p1")[0][3]
        assert set(first) == {"controller", "parent", "children", "related", "finalizing"}
        assert first["children"] == {"ConfigMap.v1": {}, "Secret.v1": {}} and first["finalizing"] is False
        assert first["controller"]["kind"] == "CompositeController"
        customize = hooks.calls_to("/customize", namespace, "p1")[0][3]
        assert set(customize) == {"controller", "parent"}

        cm = kubectl_json(cluster, "get", "configmap", "p1-cm", "-n", namespace, "--show-managed-fields")
        uid = parent["metadata"]["uid"]
        assert cm["metadata"]["labels"]["controller-uid"] == uid
        assert cm["metadata"]["ownerReferences"] == [
            {
                "apiVersion": "standin.test/v1",
                "kind": "Parent",
                "name": "p1",
                "uid": uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        managers = {(m["manager"], m["operation"]) for m in cm["metadata"]["managedFields"]}
        assert ("metacontroller", "Apply") in managers
    finally:
        cluster.kubectl("delete", "node", node["metadata"]["name"], "--ignore-not-found")


def test_composite_in_place_recreate_delete_and_external_deletion(cluster, standin, hooks, namespace):
    hooks.answers = {"/sync": sync_answer}
    composite(cluster, hooks, f"parents-{RUN_ID}", customize=False)
    apply(cluster, parent_doc(namespace, "p2", value="one", secret="a"))

    def get_cm():
        return kubectl_json(cluster, "get", "configmap", "p2-cm", "-n", namespace)

    def get_secret():
        return kubectl_json(cluster, "get", "secret", "p2-secret", "-n", namespace)

    cm = cluster.wait_for("the ConfigMap child", get_cm)
    secret = cluster.wait_for("the Secret child", get_secret)

    apply(cluster, parent_doc(namespace, "p2", value="two", secret="b"))
    updated = cluster.wait_for(
        "the ConfigMap updated in place", lambda: (c := get_cm()) and c["data"]["value"] == "two" and c
    )
    assert updated["metadata"]["uid"] == cm["metadata"]["uid"]  # InPlace: same object
    recreated = cluster.wait_for(
        "the Secret recreated", lambda: (s := get_secret()) and s["metadata"]["uid"] != secret["metadata"]["uid"] and s
    )
    assert recreated["data"]["value"] == "Yg=="  # base64 of "b"

    cluster.kubectl("delete", "configmap", "p2-cm", "-n", namespace)  # someone deletes a child: it comes back
    cluster.wait_for(
        "the deleted ConfigMap recreated", lambda: (c := get_cm()) and c["metadata"]["uid"] != cm["metadata"]["uid"]
    )

    apply(cluster, parent_doc(namespace, "p2", value="two", secret="b", dropConfigMap=True))
    cluster.wait_for("the ConfigMap no longer desired to be deleted", lambda: get_cm() is None)
    assert get_secret() is not None


def test_an_orphan_matching_the_selector_is_adopted_then_deleted_if_not_desired(cluster, standin, hooks, namespace):
    hooks.answers = {"/sync": sync_answer}
    composite(cluster, hooks, f"parents-{RUN_ID}", customize=False)
    apply(cluster, parent_doc(namespace, "p8", value="one"))
    parent = cluster.wait_for(
        "the parent synced",
        lambda: (
            (p := kubectl_json(cluster, "get", "parents.standin.test", "p8", "-n", namespace)) and p.get("status") and p
        ),
    )
    uid = parent["metadata"]["uid"]
    orphan = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "stray", "namespace": namespace, "labels": {"controller-uid": uid}},
    }
    apply(cluster, orphan)
    cluster.wait_for(
        "the adopted orphan (not desired) to be deleted",
        lambda: kubectl_json(cluster, "get", "configmap", "stray", "-n", namespace) is None,
        timeout=30,
    )
    assert any(
        "ConfigMap.v1" in c[3]["children"] and f"{namespace}/stray" in c[3]["children"]["ConfigMap.v1"]
        for c in hooks.calls_to("/sync", namespace, "p8")
    ), "the adopted orphan was never reported to the hook"


def test_hook_errors_change_nothing_record_an_event_and_are_retried(cluster, standin, hooks, namespace):
    hooks.answers = {"/sync": sync_answer}
    composite(cluster, hooks, f"parents-{RUN_ID}", customize=False)
    apply(cluster, parent_doc(namespace, "p3", value="one"))
    cluster.wait_for("the children", lambda: kubectl_json(cluster, "get", "configmap", "p3-cm", "-n", namespace))

    hooks.answers["/sync"] = lambda body: (500, {}, {"error": "hook broken on purpose"})
    failing_since = len(hooks.calls_to("/sync", namespace, "p3"))
    apply(cluster, parent_doc(namespace, "p3", value="two", dropConfigMap=True))
    cluster.wait_for(
        "two failed calls (retried with backoff)",
        lambda: len(hooks.calls_to("/sync", namespace, "p3")) >= failing_since + 2,
        timeout=30,
    )
    cm = kubectl_json(cluster, "get", "configmap", "p3-cm", "-n", namespace)
    assert cm is not None and cm["data"]["value"] == "one"  # nothing applied, nothing deleted
    events = cluster.wait_for(
        "a SyncError event on the parent",
        lambda: [
            e
            for e in (kubectl_json(cluster, "get", "events", "-n", namespace) or {}).get("items", [])
            if e["involvedObject"].get("name") == "p3" and e["reason"] == "SyncError"
        ],
    )
    assert "unsupported status code: 500" in events[0]["message"] and "hook broken on purpose" in events[0]["message"]
    assert events[0]["type"] == "Warning"

    hooks.answers["/sync"] = sync_answer
    cluster.wait_for(
        "the retried sync to apply the change",
        lambda: kubectl_json(cluster, "get", "configmap", "p3-cm", "-n", namespace) is None,
        timeout=30,
    )


def test_429_retry_after_and_resync_after_seconds(cluster, standin, hooks, namespace):
    answered_429 = []

    def answer(body):
        if (
            body["parent"]["metadata"] | {"name": "p4", "namespace": namespace} == body["parent"]["metadata"]
            and not answered_429
        ):
            answered_429.append(time.monotonic())
            return 429, {"Retry-After": "3"}, {"error": "throttled"}
        return sync_answer(body, resyncAfterSeconds=0.5)

    hooks.answers = {"/sync": answer}
    composite(cluster, hooks, f"parents-{RUN_ID}", customize=False)
    apply(cluster, parent_doc(namespace, "p4", value="one"))
    calls = cluster.wait_for(
        "repeated syncs (resyncAfterSeconds 0.5)",
        lambda: (c := hooks.calls_to("/sync", namespace, "p4")) and len(c) >= 5 and c,
        timeout=30,
    )
    assert calls[1][0] - calls[0][0] >= 2.8, "the 429's Retry-After (3 s) was not honoured"
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(calls[1:])]
    assert all(gap < 2.5 for gap in gaps), f"resyncAfterSeconds 0.5 not honoured: {gaps}"


def test_related_object_change_requeues_the_parent(cluster, standin, hooks, namespace):
    hooks.answers = {"/sync": sync_answer, "/customize": customize_nodes}
    composite(cluster, hooks, f"parents-{RUN_ID}")
    apply(cluster, parent_doc(namespace, "p5", value="one"))
    cluster.wait_for("a first sync", lambda: hooks.calls_to("/sync", namespace, "p5"))
    node_name = f"standin-{RUN_ID}-p5"
    apply(
        cluster, {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node_name, "labels": {"standin-pool": "p5"}}}
    )
    try:
        cluster.wait_for(
            "a sync that sees the new Node",
            lambda: any(
                node_name in (c[3]["related"].get("Node.v1") or {}) for c in hooks.calls_to("/sync", namespace, "p5")
            ),
            timeout=20,
        )
    finally:
        cluster.kubectl("delete", "node", node_name, "--ignore-not-found")


def test_composite_finalize_hook_cleans_up_before_the_parent_goes(cluster, standin, hooks, namespace):
    def finalize(body):
        remaining = sum(len(objs) for objs in body["children"].values())
        return {"children": [], "finalized": remaining == 0, "resyncAfterSeconds": 0.3}

    hooks.answers = {"/sync": sync_answer, "/finalize": finalize}
    name = f"parents-{RUN_ID}"
    composite(cluster, hooks, name, customize=False, finalize=True)
    apply(cluster, parent_doc(namespace, "p7", value="one"))

    def parent():
        return kubectl_json(cluster, "get", "parents.standin.test", "p7", "-n", namespace)

    def children():
        found = kubectl_json(cluster, "get", "configmaps,secrets", "-n", namespace, "-l", "controller-uid")
        return [c["metadata"]["name"] for c in (found or {}).get("items", [])]

    cluster.wait_for("the children", lambda: len(children()) == 2)
    assert f"metacontroller.io/compositecontroller-{name}" in parent()["metadata"]["finalizers"]
    cluster.kubectl("delete", "parents.standin.test", "p7", "-n", namespace, "--wait=false")
    cluster.wait_for("the parent gone after finalized: true", lambda: parent() is None, timeout=30)
    finals = hooks.calls_to("/finalize", namespace, "p7")
    assert finals and all(c[3]["finalizing"] is True for c in finals)
    assert sum(len(o) for o in finals[0][3]["children"].values()) == 2, "finalize did not see the children"
    assert finals[-1][3]["children"] == {"ConfigMap.v1": {}, "Secret.v1": {}}  # deleted by the stand-in first
    assert children() == []


# ---------------------------------------------------------------------------------- DecoratorController


def test_decorator_finalizer_labels_status_and_finalize_loop(cluster, standin, hooks, namespace):
    finalize_answers = iter([{"finalized": False, "resyncAfterSeconds": 0.3}] * 2)

    def finalize(body):
        return next(finalize_answers, {"finalized": True, "status": {"phase": "Gone"}})

    hooks.answers = {
        "/dsync": lambda body: {
            "labels": {"decorated": "yes", "remove-me": None},
            "annotations": {"standin.test/seen": body["object"]["metadata"]["name"]},
            "status": {"phase": "Synced", "attachments": sorted(body["attachments"])},
        },
        "/dfinalize": finalize,
    }
    name = f"targets-{RUN_ID}"
    doc = controller_doc(
        "DecoratorController",
        name,
        {
            "resources": [
                {
                    "apiVersion": "standin.test/v1",
                    "resource": "targets",
                    "labelSelector": {"matchLabels": {"decorate": "yes"}},
                }
            ],
            "hooks": {"sync": hook(f"{hooks.url}/dsync"), "finalize": hook(f"{hooks.url}/dfinalize")},
        },
    )
    apply(cluster, doc)
    _created.append(doc)
    target = {
        "apiVersion": "standin.test/v1",
        "kind": "Target",
        "metadata": {"name": "t1", "namespace": namespace, "labels": {"decorate": "yes", "remove-me": "x"}},
    }
    ignored = {"apiVersion": "standin.test/v1", "kind": "Target", "metadata": {"name": "t2", "namespace": namespace}}
    apply(cluster, target, ignored)

    def get(name):
        return kubectl_json(cluster, "get", "targets.standin.test", name, "-n", namespace)

    decorated = cluster.wait_for("the target decorated", lambda: (t := get("t1")) and t.get("status") and t)
    meta = decorated["metadata"]
    assert f"metacontroller.io/decoratorcontroller-{name}" in meta["finalizers"]
    assert meta["labels"] == {"decorate": "yes", "decorated": "yes"}
    assert meta["annotations"]["standin.test/seen"] == "t1"
    assert decorated["status"] == {"phase": "Synced", "attachments": []}
    request = hooks.calls_to("/dsync", namespace, "t1")[0][3]
    assert set(request) == {"controller", "object", "attachments", "related", "finalizing"}
    assert not hooks.calls_to("/dsync", namespace, "t2") and "finalizers" not in get("t2")["metadata"]

    cluster.kubectl("delete", "targets.standin.test", "t1", "-n", namespace, "--wait=false")
    cluster.wait_for("the target gone after finalized: true", lambda: get("t1") is None, timeout=30)
    finals = hooks.calls_to("/dfinalize", namespace, "t1")
    assert len(finals) >= 3 and all(c[3]["finalizing"] is True for c in finals)


def test_decorator_over_a_cluster_scoped_kind_with_a_resync_period(cluster, standin, hooks, namespace):
    """Like the pool-sweep DecoratorController: one Namespace, annotated, re-synced every period."""
    hooks.answers = {"/nsync": lambda body: {"annotations": {"standin.test/synced": "yes"}}}
    doc = controller_doc(
        "DecoratorController",
        f"namespaces-{RUN_ID}",
        {
            "resources": [
                {
                    "apiVersion": "v1",
                    "resource": "namespaces",
                    "labelSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                }
            ],
            "resyncPeriodSeconds": 1,
            "hooks": {"sync": hook(f"{hooks.url}/nsync")},
        },
    )
    apply(cluster, doc)
    _created.append(doc)

    def calls():
        with hooks.lock:
            return [c for c in hooks.calls if c[1] == "/nsync" and c[3]["object"]["metadata"]["name"] == namespace]

    cluster.wait_for(
        "the Namespace annotated",
        lambda: (
            (kubectl_json(cluster, "get", "namespace", namespace)["metadata"].get("annotations") or {}).get(
                "standin.test/synced"
            )
            == "yes"
        ),
    )
    first = len(calls())
    time.sleep(3.5)
    assert len(calls()) >= first + 2, "resyncPeriodSeconds: 1 did not re-sync the Namespace"
    assert calls()[0][3]["object"]["kind"] == "Namespace" and calls()[0][3]["attachments"] == {}


# ---------------------------------------------------------------------------------- webhook authentication


def test_bearer_token_from_a_secret_through_endpoint_configs(cluster, standin, hooks, namespace):
    token = f"token-{RUN_ID}"
    apply(
        cluster,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "hook-token", "namespace": namespace},
            "stringData": {"token": token},
        },
    )
    hooks.answers = {"/sync": sync_answer}
    host = hooks.url.removeprefix("http://")
    composite(
        cluster,
        hooks,
        f"parents-{RUN_ID}",
        customize=False,
        endpointConfigs=[
            {
                "host": host,
                "authorization": {"secretRef": {"name": "hook-token", "namespace": namespace, "key": "token"}},
            }
        ],
    )
    apply(cluster, parent_doc(namespace, "p6", value="one"))
    call = cluster.wait_for("an authenticated sync", lambda: hooks.calls_to("/sync", namespace, "p6"))[0]
    assert call[2].get("Authorization") == f"Bearer {token}"


# ---------------------------------------------------------------------------------- process


def test_sigterm_stops_the_standin_cleanly(cluster):
    from controlplane import Process

    process = Process(
        "standin-sigterm",
        [
            sys.executable,
            "-m",
            "standin_metacontroller",
            "--kubeconfig",
            str(cluster.kubeconfig),
            "--target-label-selector",
            f"{SELECTOR_LABEL}=nothing-{RUN_ID}",
        ],
        cluster.logdir / f"standin-sigterm-{RUN_ID}.log",
        env={**os.environ, "PYTHONPATH": str(HERE)},
        cwd=REPO,
    )
    try:
        cluster.wait_for("the stand-in to start", lambda: "started" in process.tail() or process.exited(), timeout=30)
        started = time.monotonic()
        os.killpg(process.proc.pid, signal.SIGTERM)
        code = process.proc.wait(10)
        assert code == 0 and time.monotonic() - started < 5
        assert "stopped" in process.tail()
    finally:
        process.stop()
