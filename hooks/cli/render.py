"""`python -m hooks render FILE.yaml`: the children the hook would ask Metacontroller to create.

They go to stdout as a YAML stream, the status to stderr; exit 2 with one line per problem (field
path first) on an invalid Workspace.
"""

from __future__ import annotations

import sys
from typing import IO, Any

import yaml

from hooks import kube, workspace_sync
from hooks.settings import Settings
from hooks.workspace.planning import parse_and_plan
from hooks.workspace.request import new_workspace_request

EXIT_INVALID = 2


class _NoAliasDumper(yaml.SafeDumper):
    """Children may share small dicts (labels); print them in full rather than as YAML anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def render(path: str, settings: Settings, out: IO[str] = sys.stdout, err: IO[str] = sys.stderr) -> int:
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
        _, problems = parse_and_plan(doc)
        if problems:
            for p in problems:
                print(f"{name}: {p}", file=err)
            code = EXIT_INVALID
            continue
        response = workspace_sync.sync(new_workspace_request(doc), settings, kube.now())
        stream += response["children"]
        for c in response["status"]["conditions"]:
            print(f"{name}: {c['type']}={c['status']} {c['reason']}: {c['message']}", file=err)
    if stream:
        yaml.dump_all(stream, out, Dumper=_NoAliasDumper, sort_keys=False)
    return code
