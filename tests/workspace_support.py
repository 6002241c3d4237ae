"""Shared helpers for the Workspace hook tests: requests shaped as Metacontroller sends them."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
KAITO_EXAMPLES = SHARED / "reference" / "kaito-v0.4.4-examples"
METACONTROLLER_CRDS = SHARED / "reference" / "metacontroller" / "metacontroller-crds-v1.yaml"
NOW = "2026-11-26T12:00:00Z"
LATER = "2026-11-26T12:05:00Z"

MACHINES = "Machine.kaito.sh/v1alpha1"
STATEFULSETS = "StatefulSet.apps/v1"
DEPLOYMENTS = "Deployment.apps/v1"
SERVICES = "Service.v1"
JOBS = "Job.batch/v1"
CONFIGMAPS = "ConfigMap.v1"


KAITO_V012_EXAMPLES = SHARED / "reference" / "kaito-v0.12.0-examples"


def kaito_v012_documents(*kinds: str) -> list[tuple[str, dict]]:
    """(file#index, doc) of every object of `kinds` in Kaito v0.12.0's examples, as written (none without them)."""
    if not KAITO_V012_EXAMPLES.exists():
        return []
    out = []
    for path in sorted(KAITO_V012_EXAMPLES.rglob("*.yaml")):
        for i, doc in enumerate(d for d in yaml.safe_load_all(path.read_text()) if d):
            if doc.get("kind") in kinds:
                out.append((f"{path.name}#{i}", doc))
    return out


def need_shared(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared, the reference folder beside the checkout, is not there)")
    return path


def load(path: Path | str) -> dict:
    return yaml.safe_load(Path(path).read_text())


def workspace(**overrides) -> dict:
    """A valid inference Workspace (phi-3 on one A100), with top-level fields replaced by `overrides`."""
    ws = {
        "apiVersion": "kaito.sh/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": "ws1", "namespace": "team", "uid": "u-1", "generation": 1},
        "resource": {"instanceType": "Standard_NC24ads_A100_v4", "labelSelector": {"matchLabels": {"apps": "phi-3"}}},
        "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}},
    }
    ws.update(copy.deepcopy(overrides))
    return {k: v for k, v in ws.items() if v is not None}


def llama_70b_on_two_nodes(**overrides) -> dict:
    """A Workspace that needs two 4-GPU A100 nodes (llama-3.3-70b with its model access Secret)."""
    return workspace(
        resource={
            "instanceType": "Standard_NC96ads_A100_v4",
            "count": 2,
            "labelSelector": {"matchLabels": {"apps": "ll"}},
        },
        inference={"preset": {"name": "llama-3.3-70b-instruct", "presetOptions": {"modelAccessSecret": "hf"}}},
        **overrides,
    )


# The children of a one-node phi-3 Workspace, in the order the hook returns them.
PHI3_CHILD_KINDS = ["Machine", "ConfigMap", "Deployment", "Service", "Service", "ServiceAccount", "Role", "RoleBinding"]


def render_cli(*args: str) -> subprocess.CompletedProcess:
    """`python -m hooks render ARGS` as a user runs it, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "hooks", "render", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def request(parent: dict, children: dict | None = None, nodes: dict | None = None, pods: dict | None = None) -> dict:
    observed: dict[str, dict] = {k: {} for k in (MACHINES, CONFIGMAPS, STATEFULSETS, DEPLOYMENTS, JOBS, SERVICES)}
    for kind, objs in (children or {}).items():
        observed[kind] = {f"{o['metadata'].get('namespace', 'team')}/{o['metadata']['name']}": o for o in objs}
    return {
        "controller": {
            "apiVersion": "metacontroller.k8s.io/v1alpha1",
            "kind": "CompositeController",
            "metadata": {"name": "workspace"},
        },
        "parent": parent,
        "children": observed,
        "related": {
            "Node.v1": {n["metadata"]["name"]: n for n in (nodes or [])},
            "Pod.v1": {f"{p['metadata']['namespace']}/{p['metadata']['name']}": p for p in (pods or [])},
        },
        "finalizing": False,
    }


def node(name: str, labels: dict, ready: bool = True, gpus: int = 1) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "status": {
            "allocatable": {"nvidia.com/gpu": str(gpus)},
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def by_kind(children: list[dict]) -> dict[str, list[dict]]:
    """Desired children grouped as observed children are keyed: `Kind.apiVersion`."""
    out: dict[str, list[dict]] = {}
    for c in children:
        api = c["apiVersion"]
        key = f"{c['kind']}.{api}"
        out.setdefault(key, []).append(c)
    return out


def find(children: list[dict], kind: str, name: str | None = None) -> dict:
    matches = [c for c in children if c["kind"] == kind and (name is None or c["metadata"]["name"] == name)]
    assert matches, f"no {kind} {name or ''} in {[(c['kind'], c['metadata']['name']) for c in children]}"
    return matches[0]


def condition(response: dict, kind: str) -> dict:
    for c in response["status"]["conditions"]:
        if c["type"] == kind:
            return c
    raise AssertionError(f"no {kind} condition in {response['status']}")
