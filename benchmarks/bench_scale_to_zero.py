"""Scale to zero over a day: GPU-hours and the wait of the requests that find the model asleep, for
always-on, scale-to-zero by deleting the agent pool, and scale-to-zero by keeping the pool at count 0 with
scaleDownMode: Deallocate.

The trace (seeded, so every run sees the same day) is one Workspace's traffic on a weekday:
  09:00-12:00  Poisson arrivals, 2 requests/minute (office hours)
  12:00-13:00  nothing (lunch: a 60-minute idle gap)
  13:00-17:30  Poisson arrivals, 1.5 requests/minute
  17:30-22:00  5 bursts at random times, each 3 to 6 requests within 2 minutes (someone tries something)
  22:00-09:00  3 isolated requests at random times (nightly jobs)
The day starts at 0 replicas, as the previous day ended (with Deallocate: the pool exists, its VM stopped
with the previous day's disk). The node outlives its pod by the scale-in grace period (`--grace-minutes`,
10 as the install sets KAITO_SCALE_IN_GRACE_SECONDS): a wake within it starts only the pod (framework, the
cache check, warm-up). The front scales to 0 after `--idle-minutes` (15) without a request; a request at 0 wakes the model and
every request that arrives before it is Ready waits until then.

How long a wake takes comes from Kaito #2325's breakdown of a 966 s cold start on a new AKS node:
node provisioning 284 s, node init 126 s, image pull 101 s, framework 74 s, weights 62 s, warm-up 195 s
(these six sum to 842 s; #2325 does not attribute the other 124 s, and they are left out of every mode).
Which phases a wake pays is decided by the fake ARM (tests/arm_support/fake_arm.py) the benchmark drives with the same
REST calls the operator would make: a pool PUT creates a new VM with an empty OS disk, so it pays all six;
with Deallocate, a PUT of count 1 restarts the deallocated VM whose OS disk still holds the container image
and the node's weights cache, so it pays:
  VM start   --deallocated-start (default 90 s): assumption. Starting a stopped VM allocates hardware and
             boots the kept OS disk; it skips what node provisioning spends on creating the disk from the
             node image and running AKS's provisioning extension.
  node init  --deallocated-init (default 60 s): assumption. The node is already joined: kubelet starts,
             the GPU driver loads and the device plugin reports the GPUs (half of a first init's 126 s).
  image pull 0 s: the layers are on the OS disk (containerd's data root is there by default).
  weights    --cache-check (default 5 s): the node cache's size check of a verified entry, no download.
             (The cache must be on the OS disk, KAITO_WEIGHTS_CACHE_PATH: a local NVMe disk does not
             survive deallocation.)
  framework and warm-up as on a new node (74 s + 195 s): the process starts from nothing either way.
GPU-hours count the VM from the wake request to the scale-down (a conservative bound: billing starts
once the VM is allocated, part way into provisioning). A deallocated VM bills its OS disk only.

Run: python benchmarks/bench_scale_to_zero.py [--idle-minutes 15] [--seed 7]
"""

from __future__ import annotations

import argparse
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

import requests
import urllib3

sys.path[:0] = [str(Path(__file__).resolve().parent.parent / "tests")]

from arm_support.fake_arm import CLUSTER, RESOURCE_GROUP, SUBSCRIPTION, TOKEN, FakeArm  # noqa: E402

urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)

DAY = 24 * 3600
KAITO_2325 = {
    "node provisioning": 284,
    "node init": 126,
    "image pull": 101,
    "framework": 74,
    "weights": 62,
    "warm-up": 195,
}
POOL = "gpu0"
BASE = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/Microsoft.ContainerService"
    f"/managedClusters/{CLUSTER}/agentPools/{POOL}"
)
IMAGE, WEIGHTS = "image:runtime", "weights:model"


def day_trace(seed: int) -> list[float]:
    """Arrival times in seconds since midnight (see the module docstring)."""
    rng = random.Random(seed)
    arrivals: list[float] = []

    def poisson(start_h: float, end_h: float, per_minute: float) -> None:
        t = start_h * 3600
        while True:
            t += rng.expovariate(per_minute / 60)
            if t >= end_h * 3600:
                return
            arrivals.append(t)

    poisson(9, 12, 2.0)
    poisson(13, 17.5, 1.5)
    for _ in range(5):
        start = rng.uniform(17.5 * 3600, 22 * 3600 - 120)
        arrivals += [start + rng.uniform(0, 120) for _ in range(rng.randint(3, 6))]
    for _ in range(3):
        hour = rng.uniform(22, 33) % 24
        arrivals.append(hour * 3600)
    return sorted(arrivals)


@dataclass
class Outcome:
    mode: str
    gpu_seconds: float = 0.0
    disk_only_seconds: float = 0.0  # deallocated: the OS disk is kept (and billed), no compute
    wakes: int = 0
    first_waits: list[float] = field(default_factory=list)
    held_waits: list[float] = field(default_factory=list)
    arm_calls: dict[str, int] = field(default_factory=dict)
    wake_seconds: list[float] = field(default_factory=list)


class Pool:
    """The Workspace's agent pool on the fake ARM, driven as the operator would drive it in one mode."""

    def __init__(self, arm: FakeArm, mode: str, start: float, init: float, cache_check: float):
        self.arm, self.mode = arm, mode
        self.start, self.init, self.cache_check = start, init, cache_check

    def _put(self, count: int) -> None:
        props = {
            "type": "VirtualMachineScaleSets",
            "vmSize": "Standard_NC24ads_A100_v4",
            "count": count,
            "mode": "User",
            "osType": "Linux",
            "osDiskSizeGB": 1024,
        }
        if self.mode == "deallocate":
            props |= {"scaleDownMode": "Deallocate", "osDiskType": "Managed"}
        answer = requests.put(
            f"{self.arm.base_url}{BASE}",
            params={"api-version": "2026-08-01"},
            json={"properties": props},
            headers={"Authorization": f"Bearer {TOKEN}"},
            verify=False,
            timeout=10,
        )
        answer.raise_for_status()
        self.arm.set_state(POOL, "Succeeded")

    def wake(self) -> float:
        """Ask ARM for the node; the wake's duration follows from what the node's OS disk still holds."""
        self._put(1)
        (node,) = [n for n in self.arm.pool_nodes(POOL) if n["power"] == "Running"]
        restarted = node["starts"] > 1
        seconds = (self.start + self.init) if restarted else KAITO_2325["node provisioning"] + KAITO_2325["node init"]
        seconds += 0 if node["disk"].get(IMAGE) else KAITO_2325["image pull"]
        seconds += self.cache_check if node["disk"].get(WEIGHTS) else KAITO_2325["weights"]
        seconds += KAITO_2325["framework"] + KAITO_2325["warm-up"]
        self.arm.write_disk(POOL, IMAGE)
        self.arm.write_disk(POOL, WEIGHTS)
        return seconds

    def release(self) -> None:
        if self.mode == "deallocate":
            self._put(0)
            return
        answer = requests.delete(
            f"{self.arm.base_url}{BASE}",
            params={"api-version": "2026-08-01"},
            headers={"Authorization": f"Bearer {TOKEN}"},
            verify=False,
            timeout=10,
        )
        answer.raise_for_status()
        self.arm.finish_delete(POOL)


def simulate(
    arrivals: list[float], mode: str, idle: float, start: float, init: float, cache_check: float, grace: float = 0
) -> Outcome:
    """`grace`: the scale-in grace period (KAITO_SCALE_IN_GRACE_SECONDS) a node outlives its pod by; a wake
    within it starts the pod on that node (image and weights there): framework, cache check and warm-up."""
    out = Outcome(mode)
    if mode == "always-on":
        out.gpu_seconds = DAY
        return out
    with FakeArm() as arm:
        pool = Pool(arm, mode, start, init, cache_check)
        # The day starts where yesterday ended: scaled to zero after serving (with Deallocate the pool exists,
        # its VM stopped with yesterday's disk). Not counted.
        pool.wake()
        pool.release()
        arm.state.requests.clear()
        up_since: float | None = None  # when the current wake was asked for
        ready_at = 0.0
        last = 0.0  # when the last request was answered (the idle clock starts there)
        pod_start = cache_check + KAITO_2325["framework"] + KAITO_2325["warm-up"]
        for t in arrivals:
            on_kept_node = False
            if up_since is not None and t > max(last, ready_at) + idle:
                down = max(last, ready_at) + idle
                if t <= down + grace:  # the node is still there: only the pod starts again
                    on_kept_node = True
                else:
                    out.gpu_seconds += down + grace - up_since
                    pool.release()
                    up_since = None
            if on_kept_node:
                out.wakes += 1
                out.wake_seconds.append(pod_start)
                ready_at = t + pod_start
                out.first_waits.append(pod_start)
            elif up_since is None:
                wake = pool.wake()
                out.wakes += 1
                out.wake_seconds.append(wake)
                up_since, ready_at = t, t + wake
                out.first_waits.append(wake)
            if t < ready_at:
                out.held_waits.append(ready_at - t)
            last = max(t, ready_at)
        if up_since is not None:
            out.gpu_seconds += min(DAY, max(last, ready_at) + idle + grace) - up_since
        for r in arm.state.requests:
            out.arm_calls[r.method] = out.arm_calls.get(r.method, 0) + 1
        if mode == "deallocate":
            out.disk_only_seconds = DAY - out.gpu_seconds
    return out


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds else "0"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--idle-minutes", type=float, default=15)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--deallocated-start", type=float, default=90)
    p.add_argument("--deallocated-init", type=float, default=60)
    p.add_argument("--cache-check", type=float, default=5)
    p.add_argument(
        "--grace-minutes", type=float, default=10, help="KAITO_SCALE_IN_GRACE_SECONDS / 60 (the install sets 10)"
    )
    ns = p.parse_args(argv)
    arrivals = day_trace(ns.seed)
    print(
        f"trace: {len(arrivals)} requests, seed {ns.seed}; idle period {ns.idle_minutes:g} min, "
        f"scale-in grace {ns.grace_minutes:g} min"
    )
    rows = [
        simulate(
            arrivals,
            mode,
            ns.idle_minutes * 60,
            ns.deallocated_start,
            ns.deallocated_init,
            ns.cache_check,
            ns.grace_minutes * 60,
        )
        for mode in ("always-on", "delete", "deallocate")
    ]
    print()
    print(
        "| mode | GPU-hours | wakes | wake (s) | first request after idle p50 / p99 | every held request p50 / p99 "
        "(n) | ARM calls | OS disk kept, VM stopped |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        kinds = sorted(set(r.wake_seconds), reverse=True)
        wake = " or ".join(f"{w:.0f} ({r.wake_seconds.count(w)}x)" for w in kinds) if kinds else "-"
        calls = ", ".join(f"{n} {m}" for m, n in sorted(r.arm_calls.items())) or "-"
        print(
            f"| {r.mode} | {r.gpu_seconds / 3600:.1f} | {r.wakes} | {wake} | "
            f"{minutes(pct(r.first_waits, 50))} / {minutes(pct(r.first_waits, 99))} | "
            f"{minutes(pct(r.held_waits, 50))} / {minutes(pct(r.held_waits, 99))} ({len(r.held_waits)}) | {calls} | "
            f"{r.disk_only_seconds / 3600:.1f} h |"
        )


if __name__ == "__main__":
    main()
