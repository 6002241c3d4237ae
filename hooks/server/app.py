"""The hook server: a Flask application factory.

Routes: POST /sync/workspace, POST /customize/workspace (and the Machine hooks from
hooks.machine_routes), GET /healthz, GET /metrics. A body that is not a Metacontroller request
is a 400 with a JSON error; an internal error is a 500, never a 200 with fewer children.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone

from flask import Flask, Response, g, request

from hooks import workspace_sync
from hooks.machine_routes import machine_blueprint
from hooks.metrics import Metrics
from hooks.responses import json_error, json_response
from hooks.settings import Settings

MAX_BODY_BYTES = 8 * 1024 * 1024
log = logging.getLogger("kaito.hooks")


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_json_body() -> object:
    """The request body as JSON; raises BadRequest for anything else."""
    try:
        return json.loads(request.get_data(cache=False))
    except (ValueError, UnicodeDecodeError) as err:
        raise workspace_sync.BadRequest(f"body is not JSON: {err}") from None


def _setup_logging() -> None:
    if log.handlers:
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def create_app(settings: Settings | None = None, *, pools_provider: Callable | None = None) -> Flask:
    settings = settings or Settings.from_env()
    app = Flask("kaito-hooks")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    metrics = Metrics()
    app.extensions["kaito_metrics"] = metrics
    _setup_logging()

    @app.before_request
    def _start() -> None:
        g.started = time.perf_counter()
        g.object = ""

    @app.after_request
    def _record(response: Response) -> Response:
        route = request.url_rule.rule if request.url_rule else "unmatched"
        if route not in ("/healthz", "/metrics"):
            seconds = time.perf_counter() - g.get("started", time.perf_counter())
            outcome = "ok" if response.status_code < 400 else str(response.status_code)
            metrics.observe(route, outcome, seconds)
            log.info(
                json.dumps(
                    {
                        "route": route,
                        "object": g.get("object", ""),
                        "status": response.status_code,
                        "outcome": outcome,
                        "ms": round(seconds * 1000, 2),
                    }
                )
            )
        return response

    @app.errorhandler(413)
    def _too_large(_err) -> Response:
        return json_error(413, f"request body larger than {MAX_BODY_BYTES} bytes")

    @app.errorhandler(404)
    def _not_found(_err) -> Response:
        return json_error(404, f"no route {request.path}")

    @app.errorhandler(405)
    def _bad_method(_err) -> Response:
        return json_error(405, f"{request.method} not allowed on {request.path}")

    @app.errorhandler(Exception)
    def _internal(err: Exception) -> Response:
        log.exception("hook failed")
        return json_error(500, f"internal error: {type(err).__name__}: {err}")

    def _hook(fn: Callable[[dict], dict]) -> Response:
        try:
            body = read_json_body()
            if isinstance(body, dict) and isinstance(body.get("parent"), dict):
                meta = body["parent"].get("metadata") or {}
                g.object = f"{meta.get('namespace', '')}/{meta.get('name', '')}"
            return json_response(fn(body))
        except workspace_sync.BadRequest as err:
            return json_error(400, str(err))

    @app.post("/sync/workspace")
    def sync_workspace() -> Response:
        return _hook(lambda body: workspace_sync.sync(body, settings, now_rfc3339()))

    @app.post("/customize/workspace")
    def customize_workspace() -> Response:
        return _hook(workspace_sync.customize)

    @app.get("/healthz")
    def healthz() -> Response:
        return json_response({"status": "ok"})

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(metrics.render(), mimetype="text/plain; version=0.0.4")

    _register_machine_routes(app, pools_provider)
    return app


def _register_machine_routes(app: Flask, pools_provider: Callable | None) -> None:
    if pools_provider is None:
        def pools_provider():
            from hooks.aks import AgentPools

            return AgentPools.from_env()
    app.register_blueprint(machine_blueprint(pools_provider))
