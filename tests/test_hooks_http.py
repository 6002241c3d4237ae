"""The Workspace hooks over HTTP: `python -m hooks serve` (real gunicorn) on a loopback port, with
requests shaped exactly as Metacontroller sends them (its v2 sync request: parent, children keyed by
Kind.apiVersion, related; https://metacontroller.github.io/metacontroller/api/compositecontroller.html)."""

from __future__ import annotations

import json
import time

import pytest
import requests
from hook_server_support import HookServer, hooks_env, serve_argv
from loopback_support import free_port
from workspace_support import PHI3_CHILD_KINDS, by_kind, condition, request, workspace

pytestmark = pytest.mark.integration  # starts the hook server under gunicorn

SERVER_LOG: dict = {}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = free_port()
    log_path = tmp_path_factory.mktemp("hooks") / "server.log"
    hooks = HookServer(serve_argv(port, workers=2), f"http://127.0.0.1:{port}", hooks_env(), log_path=log_path)
    SERVER_LOG["path"] = log_path
    yield hooks.url
    hooks.stop()


def post(base: str, path: str, body) -> requests.Response:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return requests.post(base + path, data=data, headers={"Content-Type": "application/json"}, timeout=10)


def test_sync_answers_200_with_children_and_status(server):
    resp = post(server, "/sync/workspace", request(workspace()))
    assert resp.status_code == 200
    body = resp.json()
    assert [c["kind"] for c in body["children"]] == PHI3_CHILD_KINDS
    assert condition(body, "ResourceReady")["status"] == "False"
    assert set(body) == {"status", "children", "resyncAfterSeconds"}


def test_customize_answers_the_related_rules(server):
    resp = post(server, "/customize/workspace", {"controller": {}, "parent": workspace()})
    assert resp.status_code == 200
    assert [r["resource"] for r in resp.json()["relatedResources"]] == ["nodes", "pods", "pods"]


@pytest.mark.parametrize("body", [b"{nope", b"{}", b"[1,2]", b"", b'{"parent": "x"}', b'{"parent": {"metadata": {}}}'])
def test_non_metacontroller_bodies_are_400_with_a_json_error(server, body):
    resp = post(server, "/sync/workspace", body)
    assert resp.status_code == 400
    assert resp.headers["Content-Type"].startswith("application/json")
    assert resp.json()["error"]


def test_invalid_workspace_with_existing_children_returns_them_unchanged(server):
    first = post(server, "/sync/workspace", request(workspace())).json()
    broken = workspace(
        inference={
            "preset": {"name": "phi-3-mini-4k-instruct"},
            "adapters": [{"source": {"name": "a", "image": "<YOUR_IMAGE>"}}],
        }
    )
    resp = post(server, "/sync/workspace", request(broken, children=by_kind(first["children"])))
    assert resp.status_code == 200
    body = resp.json()
    assert body["children"] == first["children"]
    assert "inference.adapters[0].source.image" in condition(body, "ResourceReady")["message"]


def test_each_request_is_one_json_log_line_naming_the_workspace(server):
    post(server, "/sync/workspace", request(workspace()))
    time.sleep(0.2)
    lines = [json.loads(line) for line in SERVER_LOG["path"].read_text().splitlines() if line.startswith('{"route"')]
    assert {"route": "/sync/workspace", "object": "team/ws1", "status": 200, "outcome": "ok"}.items() <= lines[
        -1
    ].items()


def test_oversized_body_is_refused(server):
    resp = post(server, "/sync/workspace", b'{"x":"' + b"a" * (9 * 1024 * 1024) + b'"}')
    assert resp.status_code == 413
    assert "larger than" in resp.json()["error"]


def test_unknown_route_is_a_json_404(server):
    resp = post(server, "/sync/nothing", {})
    assert resp.status_code == 404 and resp.json()["error"]


def test_metrics_count_requests_by_route_and_outcome(server):
    post(server, "/sync/workspace", request(workspace()))
    post(server, "/sync/workspace", b"{nope")
    # Two workers each count their own requests; ask until the worker that served both answers.
    text = ""
    for _ in range(20):
        text = requests.get(server + "/metrics", timeout=5).text
        if 'outcome="400"' in text and 'outcome="ok"' in text:
            break
    assert 'kaito_hook_requests_total{route="/sync/workspace",outcome="ok"}' in text
    assert "kaito_hook_request_seconds_bucket" in text


def test_internal_error_is_a_500_never_a_200_with_fewer_children():
    """A hook that raises must answer 500 so Metacontroller keeps the children (checked in-process:
    nothing in a valid request makes the real hook raise, so the failure is injected)."""
    from hooks.server import app as app_module
    from hooks.workspace import sync as workspace_sync

    real = workspace_sync.sync
    flask_app = app_module.create_app()
    try:
        workspace_sync.sync = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom"))
        resp = flask_app.test_client().post("/sync/workspace", data=json.dumps(request(workspace())))
    finally:
        workspace_sync.sync = real
    assert resp.status_code == 500
    assert "boom" in resp.get_json()["error"]
