"""`python -m hooks render FILE.yaml`, `python -m hooks serve` and `python -m hooks docs`."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from hooks.settings import Settings


def serve(bind: str, workers: int) -> None:
    """Replace this process with gunicorn serving the app factory."""
    argv = [
        sys.executable, "-m", "gunicorn",
        "--bind", bind,
        "--workers", str(workers),
        "--timeout", "30",
        "--graceful-timeout", "10",
        "--access-logfile", "-",
        "--error-logfile", "-",
        "hooks.server.app:create_app()",
    ]
    os.execv(sys.executable, argv)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hooks", description="Render Workspaces, serve the hooks, regenerate README tables.")
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("render", help="print the children a Workspace file would get")
    r.add_argument("file")
    r.add_argument(
        "--node-provisioning",
        choices=("aks", "byo"),
        help="aks: Machines for missing nodes (default); byo: bring your own nodes, no Machines",
    )
    s = sub.add_parser("serve", help="run the hook server under gunicorn")
    s.add_argument("--bind", default=os.environ.get("KAITO_HOOKS_BIND", "0.0.0.0:8080"))
    s.add_argument("--workers", type=int, default=int(os.environ.get("KAITO_HOOKS_WORKERS", "2")))
    d = sub.add_parser("docs", help="regenerate README.md's generated sections (--check: only compare)")
    d.add_argument("--check", action="store_true", help="exit 1 if README.md is out of date, change nothing")
    d.add_argument("--readme", default="README.md")
    d.add_argument("--crd", default="metacontroller/workspace-crd.yaml")
    args = parser.parse_args(argv)

    if args.command == "docs":
        from hooks.cli.docs import run

        return run(args.readme, args.crd, check=args.check)

    if args.command == "render":
        from hooks.cli.render import render

        settings = Settings.from_env()
        if args.node_provisioning:
            settings = dataclasses.replace(settings, node_provisioning=args.node_provisioning)
        return render(args.file, settings)
    serve(args.bind, args.workers)
    return 0
