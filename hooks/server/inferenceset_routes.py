"""HTTP route of the InferenceSet CompositeController hook (a Flask blueprint)."""

from __future__ import annotations

from collections.abc import Callable

from flask import Blueprint, Response

from hooks.inferenceset import sync as inferenceset_sync
from hooks.server.handling import run_hook


def inferenceset_blueprint(now: Callable[[], str]) -> Blueprint:
    blueprint = Blueprint("inferenceset", __name__)

    @blueprint.post("/sync/inferenceset")
    def sync_inferenceset() -> Response:
        return run_hook(lambda body: inferenceset_sync.sync(body, now()))

    return blueprint
