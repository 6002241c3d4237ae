"""The hook server: a Flask application factory.

Routes: the Workspace hooks (hooks/server/workspace_routes.py), the InferenceSet hook
(hooks/server/inferenceset_routes.py), the Machine hooks
(hooks/server/machine_routes.py), GET /healthz, GET /metrics. Every route answers JSON; errors are
{"error": message} (hooks/server/handling.py). With allowed client names (KAITO_HOOKS_CLIENT_NAMES, set by
`python -m hooks serve --tls-dir`), hook routes answer 401 to callers without Metacontroller's client
certificate (hooks/server/caller_auth.py); they count as outcome "401" in kaito_hook_requests_total.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable

from flask import Flask, Response, g, request

from hooks import kube
from hooks.machine.pools import PoolsAPI
from hooks.server import caller_auth
from hooks.server.handling import log
from hooks.server.inferenceset_routes import inferenceset_blueprint
from hooks.server.machine_routes import machine_blueprint
from hooks.server.metrics import Metrics
from hooks.server.responses import json_error, json_response
from hooks.server.workspace_routes import workspace_blueprint
from hooks.settings import Settings

MAX_BODY_BYTES = 8 * 1024 * 1024


def _setup_logging() -> None:
    if log.handlers:
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def _production_pools() -> PoolsAPI:
    from hooks.machine.arm_client import AgentPools

    return AgentPools.from_env()


def create_app(
    settings: Settings | None = None,
    *,
    pools_provider: Callable[[], PoolsAPI] | None = None,
    now: Callable[[], str] = kube.now,
    client_names: tuple[str, ...] | None = None,
) -> Flask:
    settings = settings or Settings.from_env()
    if client_names is None:
        client_names = tuple(n for n in os.environ.get("KAITO_HOOKS_CLIENT_NAMES", "").split(",") if n.strip())
    app = Flask("kaito-hooks")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    metrics = Metrics()
    app.extensions["kaito_metrics"] = metrics
    _setup_logging()

    @app.before_request
    def _start() -> Response | None:
        g.started = time.perf_counter()
        g.object = ""
        if client_names and caller_auth.is_hook_path(request.path):
            certificate = caller_auth.peer_certificate(request.environ)
            problem = caller_auth.caller_problem(certificate, client_names)
            if problem:
                g.object = f"refused caller {request.remote_addr}"
                return json_error(401, problem)
        return None

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
    def _too_large(_err: Exception) -> Response:
        return json_error(413, f"request body larger than {MAX_BODY_BYTES} bytes")

    @app.errorhandler(404)
    def _not_found(_err: Exception) -> Response:
        return json_error(404, f"no route {request.path}")

    @app.errorhandler(405)
    def _bad_method(_err: Exception) -> Response:
        return json_error(405, f"{request.method} not allowed on {request.path}")

    @app.errorhandler(Exception)
    def _internal(err: Exception) -> Response:
        log.exception("hook failed")
        return json_error(500, f"internal error: {type(err).__name__}: {err}")

    @app.get("/healthz")
    def healthz() -> Response:
        return json_response({"status": "ok"})

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(metrics.render(), mimetype="text/plain; version=0.0.4")

    app.register_blueprint(workspace_blueprint(settings, now))
    app.register_blueprint(inferenceset_blueprint(now))
    app.register_blueprint(machine_blueprint(pools_provider or _production_pools))
    return app
