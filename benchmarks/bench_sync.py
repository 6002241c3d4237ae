"""Cost of the Workspace sync hook per call, as a multiple of a bare JSON round trip.

For a two-adapter workspace whose children are all observed (the steady state Metacontroller calls
over and over), compare one hook call, parsing the request body and serialising the response,
with json.loads of the same request plus json.dumps of the same response. Goal: at most 4x.
Then: how the cost grows from 0 to 10 adapters and from 1 to 8 nodes (goal: linear, small constant).

Run: python benchmarks/bench_sync.py
"""

from __future__ import annotations

import json
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from workspace_support import NOW, by_kind, request, workspace

from hooks.settings import Settings
from hooks.workspace.sync import sync

SETTINGS = Settings()


def steady_state_request(adapters: int, nodes: int) -> dict:
    inference = {
        "preset": {
            "name": "llama-3.3-70b-instruct" if nodes > 1 else "phi-3-mini-128k-instruct",
            "presetOptions": {"modelAccessSecret": "hf"},
        },
        "adapters": [
            {
                "source": {
                    "name": f"adapter-{i}",
                    "image": f"myregistry.azurecr.io/adapters/a{i}:0.0.1",
                    "imagePullSecrets": ["pull"],
                },
                "strength": "0.5",
            }
            for i in range(adapters)
        ],
    }
    ws = workspace(
        resource={
            "instanceType": "Standard_NC96ads_A100_v4",
            "count": nodes,
            "labelSelector": {"matchLabels": {"apps": "bench"}},
        },
        inference=inference,
    )
    first = sync(request(ws), SETTINGS, NOW)
    ws["status"] = first["status"]
    observed = by_kind(first["children"])
    for objs in observed.values():
        for o in objs:
            o["metadata"]["uid"] = "0f5a3c1e-1111-2222-3333-444455556666"
            o["metadata"]["resourceVersion"] = "123456"
            o["metadata"]["annotations"] = {"metacontroller.k8s.io/last-applied-configuration": json.dumps(o)}
            o["status"] = {"observedGeneration": 1}
    return request(ws, children=observed)


def per_call(fn, number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number


def measure(adapters: int, nodes: int, number: int = 300) -> tuple[float, float]:
    body = json.dumps(steady_state_request(adapters, nodes))
    response = sync(json.loads(body), SETTINGS, NOW)

    def hook():
        json.dumps(sync(json.loads(body), SETTINGS, NOW))

    def bare():
        json.loads(body)
        json.dumps(response)

    return per_call(hook, number), per_call(bare, number)


def main() -> None:
    hook, bare = measure(2, 1)
    print(
        f"two-adapter workspace, children observed: hook {hook * 1e6:.0f} us/call, "
        f"bare json round trip {bare * 1e6:.0f} us/call, ratio {hook / bare:.2f}x (goal <= 4x)"
    )
    print("\nadapters  hook_us  bare_us  ratio")
    for n in (0, 2, 4, 6, 8, 10):
        h, b = measure(n, 1, 200)
        print(f"{n:8d}  {h * 1e6:7.0f}  {b * 1e6:7.0f}  {h / b:5.2f}x")
    print("\nnodes  hook_us  bare_us  ratio")
    for n in (1, 2, 4, 8):
        h, b = measure(2, n, 200)
        print(f"{n:5d}  {h * 1e6:7.0f}  {b * 1e6:7.0f}  {h / b:5.2f}x")


if __name__ == "__main__":
    main()
