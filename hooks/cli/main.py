"""`python -m hooks render FILE.yaml` and `python -m hooks serve`.

render: the children the hook would ask Metacontroller to create, as a YAML stream on stdout, and
the status on stderr; exit 2 with one line per problem (field path first) on an invalid Workspace.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime, timezone

import yaml

from hooks.settings import Settings

EXIT_INVALID = 2


class _NoAliasDumper(yaml.SafeDumper):
    """Children may share small dicts (labels); print them in full rather than as YAML anchors."""

    def ignore_aliases(self, data) -> bool:
        return True


def metacontroller_request(workspace: dict) -> dict:
    """A sync request as Metacontroller sends it for a new Workspace: no children, nothing related yet."""
    from hooks.workspace_sync import CHILD_TYPES

    parent = dict(workspace)
    meta = dict(parent.get("metadata") or {})
    meta.setdefault("namespace", "default")
    parent["metadata"] = meta
    return {
        "controller": {"metadata": {"name": "workspace"}},
        "parent": parent,
        "children": {kind: {} for kind in CHILD_TYPES},
        "related": {"Node.v1": {}, "Pod.v1": {}},
        "finalizing": False,
    }


def render(path: str, settings: Settings, out=sys.stdout, err=sys.stderr) -> int:
    from hooks.workspace_sync import parse_workspace, sync
    from hooks.planning import plan

    try:
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
    except (OSError, yaml.YAMLError) as e:
        print(f"{path}: {e}", file=err)
        return EXIT_INVALID
    code = 0
    stream = []
    for doc in docs:
        if not isinstance(doc, dict) or doc.get("kind") != "Workspace":
            print(f"{path}: skipping a document that is not a Workspace", file=err)
            continue
        name = (doc.get("metadata") or {}).get("name", "?")
        ws, problems = parse_workspace(doc)
        if ws is not None:
            _, problems = plan(ws)
        if problems:
            for p in problems:
                print(f"{name}: {p}", file=err)
            code = EXIT_INVALID
            continue
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        response = sync(metacontroller_request(doc), settings, now)
        stream += response["children"]
        for c in response["status"]["conditions"]:
            print(f"{name}: {c['type']}={c['status']} {c['reason']}: {c['message']}", file=err)
    if stream:
        yaml.dump_all(stream, out, Dumper=_NoAliasDumper, sort_keys=False)
    return code


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
        "hooks.app:create_app()",
    ]
    os.execv(sys.executable, argv)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hooks", description=__doc__.splitlines()[0])
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
        from hooks.docs import run

        return run(args.readme, args.crd, check=args.check)

    if args.command == "render":
        settings = Settings.from_env()
        if args.node_provisioning:
            settings = Settings(**{**settings.__dict__, "node_provisioning": args.node_provisioning})
        return render(args.file, settings)
    serve(args.bind, args.workers)
    return 0
