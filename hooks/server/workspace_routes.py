"""HTTP routes of the Workspace CompositeController hooks (a Flask blueprint)."""

from __future__ import annotations

from collections.abc import Callable

from flask import Blueprint, Response

from hooks.server.handling import run_hook
from hooks.settings import Settings
from hooks.workspace import sync as workspace_sync


def workspace_blueprint(settings: Settings, now: Callable[[], str]) -> Blueprint:
    blueprint = Blueprint("workspace", __name__)

    @blueprint.post("/sync/workspace")
    def sync_workspace() -> Response:
        return run_hook(lambda body: workspace_sync.sync(body, settings, now()))

    @blueprint.post("/customize/workspace")
    def customize_workspace() -> Response:
        return run_hook(workspace_sync.customize)

    return blueprint
