"""A replica's kaito.sh/adapters report is written by the pod itself, so the hook must never copy a field of it
into the Workspace status in a shape the CRD refuses: the apiserver would refuse the whole status and the
Workspace's conditions would freeze. Each hostile report below must give a status that the CRD's schema
accepts, with the adapter Failed and a reason that is a short word."""

from __future__ import annotations

import jsonschema
import pytest
from crd_support import workspace_schema
from test_workspace_live_adapters import DOLLY, FIN, _jobs_with, desired, replica, run, serving

HOSTILE_FIELDS = [
    {"reason": "R" * 5000, "message": "m" * 100_000},
    {"reason": {"nested": ["not", "text"]}, "message": ["a", "list"]},
    {"reason": 12345, "message": 3.5},
    {"reason": "two words\nand a newline", "message": None},
    {"reason": None, "message": {"k": "v" * 40_000}},
]


def _status_schema() -> dict:
    return workspace_schema()["properties"]["status"]


@pytest.mark.parametrize("fields", HOSTILE_FIELDS, ids=["huge", "objects", "numbers", "spaces", "nested-huge"])
def test_a_hostile_report_gives_a_status_the_crd_accepts(fields):
    ws = serving(FIN, DOLLY)
    first = run(ws)
    report = {
        "adapters": [{"name": "fin", "state": "Ready"}, {"name": "dolly", "state": "Failed", **fields}],
        "revision": desired(first)["revision"],
    }
    resp = run(ws, jobs=_jobs_with(first), pods=[replica("ws1-a", report)])

    jsonschema.validate(resp["status"], _status_schema())
    [dolly] = [a for a in resp["status"]["adapters"] if a["name"] == "dolly"]
    assert dolly["state"] == "Failed"
    assert dolly["reason"] == "LoadFailed"
    assert dolly["message"].startswith("pod ws1-a: ") and len(dolly["message"]) <= 512


def test_a_well_formed_reason_and_message_are_kept():
    ws = serving(FIN, DOLLY)
    first = run(ws)
    report = {
        "adapters": [
            {"name": "fin", "state": "Ready"},
            {"name": "dolly", "state": "Failed", "reason": "RankTooLarge", "message": "rank 128 > 64"},
        ],
        "revision": desired(first)["revision"],
    }
    resp = run(ws, jobs=_jobs_with(first), pods=[replica("ws1-a", report)])
    [dolly] = [a for a in resp["status"]["adapters"] if a["name"] == "dolly"]
    assert (dolly["reason"], dolly["message"]) == ("RankTooLarge", "pod ws1-a: rank 128 > 64")
