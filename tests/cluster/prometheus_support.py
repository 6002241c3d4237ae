"""The real Prometheus (Debian's package, /usr/bin/prometheus) as a process on loopback, scraping a
test-only stand-in of an SGLang replica's /metrics.

In a cluster the Prometheus Operator turns examples/autoscaling/podmonitor.yaml into a scrape of every
replica pod's port 5000. Here there is no Prometheus Operator and kwok's pods run no process, so the
scrape is a `static_configs` target on loopback carrying the labels the PodMonitor would have given the
series (namespace, pod, and kaito_sh_workspace from the pod label kaito.sh/workspace).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
import yaml
from controlplane import Process
from loopback_support import free_port

PROMETHEUS = Path(os.environ.get("KAITO_PROMETHEUS", "/usr/bin/prometheus"))
INSTALL_HINT = "install it with `apt-get install prometheus` (Debian's package; `make test-setup` does it as root)"
SCRAPE_INTERVAL = "1s"  # the PodMonitor's is 15s; shorter so that a test sees a change within seconds

# SGLang's gauges (sglang/srt/metrics/collector.py, served with --enable-metrics), each with its HELP text.
SGLANG_GAUGES = {
    "sglang:num_running_reqs": "The number of running requests.",
    "sglang:num_queue_reqs": "The number of requests in the waiting queue.",
    "sglang:token_usage": "The token usage.",
}


class SGLangMetricsStandIn:
    """TEST-ONLY: an SGLang replica's /metrics on loopback (the GPU pod cannot run under kwok). It serves
    SGLang's gauge names in the Prometheus text format with SGLang's `model_name` label; the values are
    whatever the test sets, 0 until then."""

    def __init__(self, model_name: str):
        self.model_name = model_name
        self.values = dict.fromkeys(SGLANG_GAUGES, 0.0)
        self.lock = threading.Lock()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404)
                    return
                body = stand_in.exposition().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def set(self, metric: str, value: float) -> None:
        if metric not in self.values:
            raise KeyError(f"{metric} is not one of the stand-in's SGLang gauges {sorted(self.values)}")
        with self.lock:
            self.values[metric] = value

    def exposition(self) -> str:
        with self.lock:
            values = dict(self.values)
        lines = []
        for metric, help_text in SGLANG_GAUGES.items():
            lines += [
                f"# HELP {metric} {help_text}",
                f"# TYPE {metric} gauge",
                f'{metric}{{model_name="{self.model_name}"}} {values[metric]}',
            ]
        return "\n".join(lines) + "\n"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass(frozen=True)
class Target:
    """One scraped replica: its /metrics address and the labels the PodMonitor would have given it."""

    address: str
    namespace: str
    workspace: str
    pod: str

    def static_config(self) -> dict:
        labels = {"namespace": self.namespace, "kaito_sh_workspace": self.workspace, "pod": self.pod}
        return {"targets": [self.address], "labels": labels}


def config(targets: list[Target]) -> dict:
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "scrape_configs": [
            {
                "job_name": "sglang",
                "metrics_path": "/metrics",
                "static_configs": [target.static_config() for target in targets],
            }
        ],
    }


@dataclass
class Prometheus:
    url: str
    process: Process

    def query(self, promql: str) -> list[dict]:
        """The instant vector `promql` evaluates to now (the HTTP API KEDA's prometheus scaler calls)."""
        answer = requests.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5).json()
        assert answer["status"] == "success", answer
        return answer["data"]["result"]


def ready(process: Process, url: str) -> bool:
    if reason := process.exited():
        raise AssertionError(reason)
    try:
        return requests.get(f"{url}/-/ready", timeout=2).ok
    except requests.RequestException:
        return False


@contextmanager
def prometheus(cluster, work: Path, targets: list[Target]) -> Iterator[Prometheus]:
    """Prometheus on a free loopback port, its TSDB in `work`, scraping `targets`; skipped where absent."""
    if not PROMETHEUS.exists():
        pytest.skip(f"{PROMETHEUS} is absent: {INSTALL_HINT}")
    work.mkdir(parents=True, exist_ok=True)
    (work / "prometheus.yml").write_text(yaml.safe_dump(config(targets), sort_keys=False))
    url = f"http://127.0.0.1:{free_port()}"
    process = Process(
        "prometheus",
        [
            str(PROMETHEUS),
            f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'tsdb'}",
            f"--web.listen-address={url.removeprefix('http://')}",
        ],
        work / "prometheus.log",
    )
    try:
        cluster.wait_for("Prometheus /-/ready", lambda: ready(process, url), timeout=60)
        yield Prometheus(url, process)
    finally:
        process.stop()
