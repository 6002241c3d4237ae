"""An invalid Workspace keeps the children it has, keyed by the observed objects themselves, not by
Metacontroller's last-applied annotation, which anyone who can edit the child can rewrite."""

from __future__ import annotations

import json

import pytest
from workspace_support import by_kind, request, workspace

from hooks.metacontroller import LAST_APPLIED
from hooks.settings import Settings
from hooks.workspace.sync import sync

NOW = "2026-11-26T12:00:00Z"


def run(parent, **kw):
    return sync(request(parent, **kw), Settings(), NOW)


def identity(child):
    return (child["apiVersion"], child["kind"], child["metadata"].get("namespace"), child["metadata"]["name"])


def observed_from(children, edit=None):
    out = {}
    for kind, objs in by_kind(children).items():
        out[kind] = []
        for o in objs:
            annotation = json.dumps(edit(o) if edit else o)
            meta = {
                **o["metadata"],
                "uid": "x",
                "annotations": {**(o["metadata"].get("annotations") or {}), LAST_APPLIED: annotation},
            }
            out[kind].append({**o, "metadata": meta, "status": {}})
    return out


@pytest.mark.parametrize(
    "edit",
    [
        lambda o: {**o, "metadata": {**o["metadata"], "name": "someone-else"}},
        lambda o: {**o, "kind": "ConfigMap", "apiVersion": "v1"},
        lambda o: {"note": "not a manifest"},
        lambda o: ["not", "an", "object"],
    ],
    ids=["other-name", "other-kind", "no-metadata", "not-an-object"],
)
def test_an_edited_last_applied_annotation_drops_no_child(edit):
    first = run(workspace())
    broken = workspace(inference={"preset": {"name": "no-such-model"}})
    response = run(broken, children=observed_from(first["children"], edit))
    assert sorted(map(identity, response["children"])) == sorted(map(identity, first["children"]))


def test_an_untouched_annotation_gives_back_exactly_what_was_desired():
    first = run(workspace())
    broken = workspace(inference={"preset": {"name": "no-such-model"}})
    response = run(broken, children=observed_from(first["children"]))
    assert sorted(response["children"], key=identity) == sorted(first["children"], key=identity)  # order is free
