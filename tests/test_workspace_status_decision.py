"""When a served Workspace is done: its replicas ready is not enough while adapters are still settling.

Metacontroller resyncs a Workspace that is not done (resyncAfterSeconds > 0) and leaves a done one alone
(0) until an event; a Workspace whose model server is ready but whose adapters are loading must be looked
at again, or status.adapters would stay Loading after the replicas report Ready.
"""

from __future__ import annotations

import copy
import json

from workspace_support import DEPLOYMENTS, JOBS, NOW, condition, find, node, request, workspace

from hooks.settings import Settings
from hooks.workspace.status import adapters as adapter_status
from hooks.workspace.sync import sync

SETTINGS = Settings()
SELECTOR = {"apps": "phi-3"}
A100 = {"node.kubernetes.io/instance-type": "Standard_NC24ads_A100_v4", **SELECTOR}
NODES = [node("aks-gpu-0", A100)]
FIN = {"source": {"name": "fin", "image": "reg.example.com/adapters/fin:1"}}


def served_with_fin() -> dict:
    return workspace(
        resource={"instanceType": "Standard_NC24ads_A100_v4", "count": 1, "labelSelector": {"matchLabels": SELECTOR}},
        inference={"preset": {"name": "phi-3-mini-4k-instruct"}, "adapters": [copy.deepcopy(FIN)]},
    )


def ready_children(first: dict) -> dict:
    """The desired children observed back: the Deployment with every replica ready, the fetch Jobs done."""
    deployment = copy.deepcopy(find(first["children"], "Deployment"))
    deployment["status"] = {"readyReplicas": deployment["spec"]["replicas"]}
    jobs = []
    for job in (c for c in first["children"] if c["kind"] == "Job"):
        done = copy.deepcopy(job)
        done["status"] = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
        jobs.append(done)
    return {DEPLOYMENTS: [deployment], JOBS: jobs}


def replica_reporting(fin_state: str, revision: str) -> dict:
    report = {"adapters": [{"name": "fin", "state": fin_state}], "synced": fin_state == "Ready", "revision": revision}
    return {
        "metadata": {
            "name": "ws1-pod",
            "namespace": "team",
            "labels": {"kaito.sh/workspace": "ws1"},
            "annotations": {adapter_status.REPORT_ANNOTATION: json.dumps(report)},
        },
        "spec": {"nodeName": "aks-gpu-0"},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    }


def synced_with(fin_state: str) -> dict:
    ws = served_with_fin()
    first = sync(request(ws, nodes=NODES), SETTINGS, NOW)
    revision = json.loads(find(first["children"], "ConfigMap", "ws1-adapters")["data"]["adapters.json"])["revision"]
    observed = request(ws, children=ready_children(first), nodes=NODES, pods=[replica_reporting(fin_state, revision)])
    return sync(observed, SETTINGS, NOW)


def test_a_ready_workspace_with_an_adapter_still_loading_is_looked_at_again():
    response = synced_with("Loading")
    assert condition(response, "WorkspaceReady")["status"] == "True"
    assert condition(response, "AdaptersReady")["status"] == "False"
    assert response["resyncAfterSeconds"] == SETTINGS.resync_seconds > 0


def test_a_ready_workspace_with_every_adapter_ready_is_done():
    response = synced_with("Ready")
    assert condition(response, "WorkspaceReady")["status"] == "True"
    assert condition(response, "AdaptersReady")["status"] == "True"
    assert response["resyncAfterSeconds"] == 0
