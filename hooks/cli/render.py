"""`python -m hooks render FILE.yaml`: the children the hooks would ask Metacontroller to create.

They go to stdout as a YAML stream, the status to stderr; exit 2 with one line per problem (field
path first) on an invalid Workspace or InferenceSet. An InferenceSet renders its Workspace (and
ScaledObject, as with KEDA installed), then that Workspace's children.
"""

from __future__ import annotations

import sys
from typing import IO, Any

import yaml

from hooks import kube
from hooks import metacontroller as mc
from hooks.inferenceset import autoscaling
from hooks.inferenceset import sync as inferenceset_sync
from hooks.inferenceset.workspace import check
from hooks.settings import Settings
from hooks.workspace import sync as workspace_sync
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
    # A Workspace's inference.config ConfigMap, when the same file holds it, is checked as the hook checks
    # the related ConfigMap on a cluster.
    configmaps = {
        (d.get("metadata") or {}).get("name"): d for d in docs if isinstance(d, dict) and d.get("kind") == "ConfigMap"
    }
    for doc in docs:
        kind = doc.get("kind") if isinstance(doc, dict) else None
        if kind == "InferenceSet":
            name = (doc.get("metadata") or {}).get("name", "?")
            _, problems = check(doc)
            response = inferenceset_sync.sync(_inferenceset_request(doc), kube.now())
            if problems or response["status"]["conditions"][0]["reason"] == "InvalidInferenceSet":
                for c in response["status"]["conditions"]:
                    print(f"{name}: {c['message']}", file=err)
                code = EXIT_INVALID
                continue
            stream += response["children"]
            workspace = next(c for c in response["children"] if c["kind"] == "Workspace")
        elif kind == "Workspace":
            workspace = doc
        else:
            print(f"{path}: skipping a document that is not a Workspace or InferenceSet", file=err)
            continue
        name = (workspace.get("metadata") or {}).get("name", "?")
        _, problems = parse_and_plan(workspace)
        if problems:
            for p in problems:
                print(f"{name}: {p}", file=err)
            code = EXIT_INVALID
            continue
        request = new_workspace_request(workspace)
        config = (workspace.get("inference") or {}).get("config")
        if config in configmaps:
            request["related"][mc.CONFIGMAPS] = {config: configmaps[config]}
        response = workspace_sync.sync(request, settings, kube.now())
        refused = [c for c in response["status"]["conditions"] if c["reason"] == "InvalidWorkspace"]
        if refused:
            print(f"{name}: {refused[0]['message']}", file=err)
            code = EXIT_INVALID
            continue
        stream += response["children"]
        for c in response["status"]["conditions"]:
            print(f"{name}: {c['type']}={c['status']} {c['reason']}: {c['message']}", file=err)
    if stream:
        yaml.dump_all(stream, out, Dumper=_NoAliasDumper, sort_keys=False)
    return code


def _inferenceset_request(doc: dict) -> dict:
    """A sync request for a new InferenceSet, on an install with KEDA (so its ScaledObject shows too)."""
    parent = {**doc, "metadata": {"namespace": "default", **(doc.get("metadata") or {})}}
    return {
        "controller": {"metadata": {"name": "inferenceset"}},
        "parent": parent,
        "children": {inferenceset_sync.WORKSPACES: {}, autoscaling.SCALEDOBJECTS: {}},
        "related": {},
        "finalizing": False,
    }
