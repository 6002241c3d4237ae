"""Building the install offline with kubectl's kustomize, as `kubectl apply -k` would.

The install's one remote resource is Metacontroller's upstream manifests (a GitHub URL, unreachable here).
`prepare_offline(root)` edits a copy of metacontroller/ in place: with `upstream=True` and Metacontroller's
source beside the checkout (../shared/third_party/metacontroller-v4.17.2), the URL points at the same
manifests there; otherwise the URL is removed, and so are the install's patches of those upstream objects
(its ClusterRole and StatefulSet), which would have nothing to patch.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from workspace_support import SHARED

METACONTROLLER_URL = "https://github.com/metacontroller/metacontroller/manifests/production?ref=v4.17.2"
UPSTREAM = SHARED / "third_party" / "metacontroller-v4.17.2" / "manifests" / "production"


def patches_upstream(install_dir: Path, patch: dict) -> bool:
    """Whether a kustomize patch of metacontroller/ changes an object of Metacontroller's own manifests."""
    if patch.get("target", {}).get("namespace") == "metacontroller":
        return True
    doc = yaml.safe_load((install_dir / patch["path"]).read_text()) if "path" in patch else {}
    return isinstance(doc, dict) and doc.get("metadata", {}).get("name") == "metacontroller"


def prepare_offline(root: Path, upstream: bool = True) -> bool:
    """Make `root`/metacontroller buildable offline; True when Metacontroller's manifests are included."""
    import shutil

    install_dir = root / "metacontroller"
    kfile = install_dir / "kustomization.yaml"
    text = kfile.read_text()
    line = f"  - {METACONTROLLER_URL}\n"
    assert text.count(line) == 1, "the install has exactly one remote resource (Metacontroller upstream)"
    if upstream and UPSTREAM.is_dir():
        shutil.copytree(UPSTREAM, root / "metacontroller-upstream")
        kfile.write_text(text.replace(line, "  - ../metacontroller-upstream\n"))
        return True
    kustomization = yaml.safe_load(text.replace(line, ""))
    kustomization["patches"] = [p for p in kustomization.get("patches", []) if not patches_upstream(install_dir, p)]
    kfile.write_text(yaml.safe_dump(kustomization, sort_keys=False))
    return False
