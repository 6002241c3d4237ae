"""Request counts and latency by route and outcome, in Prometheus text format (per worker process)."""

from __future__ import annotations

import threading
from collections import defaultdict

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count: dict[tuple[str, str], int] = defaultdict(int)
        self._sum: dict[str, float] = defaultdict(float)
        self._buckets: dict[str, list[int]] = defaultdict(lambda: [0] * len(BUCKETS))
        self._observed: dict[str, int] = defaultdict(int)

    def observe(self, route: str, outcome: str, seconds: float) -> None:
        with self._lock:
            self._count[(route, outcome)] += 1
            self._sum[route] += seconds
            self._observed[route] += 1
            counts = self._buckets[route]
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    counts[i] += 1

    def render(self) -> str:
        with self._lock:
            lines = [
                "# HELP kaito_hook_requests_total Hook requests by route and outcome.",
                "# TYPE kaito_hook_requests_total counter",
            ]
            for (route, outcome), n in sorted(self._count.items()):
                lines.append(f'kaito_hook_requests_total{{route="{route}",outcome="{outcome}"}} {n}')
            lines += [
                "# HELP kaito_hook_request_seconds Hook request latency.",
                "# TYPE kaito_hook_request_seconds histogram",
            ]
            for route in sorted(self._observed):
                for bound, n in zip(BUCKETS, self._buckets[route], strict=True):
                    lines.append(f'kaito_hook_request_seconds_bucket{{route="{route}",le="{bound}"}} {n}')
                lines.append(f'kaito_hook_request_seconds_bucket{{route="{route}",le="+Inf"}} {self._observed[route]}')
                lines.append(f'kaito_hook_request_seconds_sum{{route="{route}"}} {self._sum[route]:.6f}')
                lines.append(f'kaito_hook_request_seconds_count{{route="{route}"}} {self._observed[route]}')
            return "\n".join(lines) + "\n"
