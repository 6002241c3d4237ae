"""Replicas behind the real sglang-router, and the per-pod gateway's cost, on two real SGLang servers (CPU).

    .venv/bin/python benchmarks/bench_router.py [--requests 160] [--groups 8] [--rounds 2]

Needs the SGLang venv (`python3 tests/real_sglang/install_sglang.py`, which `make test-setup` runs) and
sglang-router (test extra). Two serving stacks start the way a Workspace replica does (launcher, our gateway
on the pod port, SGLang with --enable-metrics on loopback; tests/real_sglang/harness.py), on a small random
Llama built here (hidden 384 x 4 layers: a prefill costs real CPU time). Then, in one run:

1. Routing: the real sglang-router in front of the two replica gateways (as in a Workspace with 2 replicas),
   once with --policy round_robin and once with cache_aware per round. The requests share long prefixes
   (`--groups` groups of prompts with a ~600-token common prefix, a short unique tail), so the KV pool of one
   server (--max-total-tokens 4096) cannot hold every group's prefix but two servers can, if the router sends
   each group to the same server. Prints SGLang's prefix-cache hit rate (change of sglang:cached_tokens_total
   over sglang:prompt_tokens_total, both servers' /metrics) and the throughput of each policy, and the ratios.
2. Gateway: streamed completions sent straight to one SGLang server and through its gateway (the pod port),
   interleaved. Prints CPU microseconds per streamed event of the gateway process and of SGLang's own HTTP
   front end (its main process: uvicorn + TokenizerManager), and the throughput both ways.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests" / "real_sglang"), str(REPO / "tests")]  # the harness and its helpers

from harness import Stack, free_port, sglang_python, start_stack  # noqa: E402
from inference_support.procs import stop  # noqa: E402
from tiny_models import CORPUS, LLAMA_PRESET, train_tokenizer  # noqa: E402

PREFIX_WORDS = 600
TAIL_WORDS = 12
CONTEXT = 2048
CLK_TCK = os.sysconf("SC_CLK_TCK")
READY_TIMEOUT_S = 180  # the router health-checks each replica (SGLang's /health generates a token) before it is ready


# --- the model ----------------------------------------------------------------------------------


def small_llama(out: Path, hidden: int, layers: int) -> Path:
    """A random Llama with the tests' tokenizer, large enough that a prefill costs real CPU time (so a cache hit
    shows in the throughput), small enough for two servers on a laptop-class CPU."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = train_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        num_key_value_heads=hidden // 64,
        max_position_embeddings=CONTEXT,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


# --- processes ----------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                pass
    return out


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")


@dataclass
class Replica:
    stack: Stack
    runtime_url: str  # SGLang itself, on loopback
    gateway_pid: int

    # The replica's addresses as the benchmark reads them; alike in shape to other property pairs, nothing shared.
    @property
    def gateway_url(self) -> str:
        return self.stack.url

    @property
    def sglang_pid(self) -> int:
        return self.stack.proc.pid  # the launcher execs SGLang: same pid


def replica(stack: Stack) -> Replica:
    port = stack.argv[stack.argv.index("--runtime-port") + 1]
    gateway = [p for p in children(stack.proc.pid) if "inference.gateway" in cmdline(p)]
    if len(gateway) != 1:
        raise RuntimeError(f"expected one gateway process under pid {stack.proc.pid}, found {gateway}")
    return Replica(stack, f"http://127.0.0.1:{port}", gateway[0])


# --- SGLang metrics -------------------------------------------------------------------------------


def metric_sum(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def cache_counters(replicas: list[Replica]) -> tuple[float, float]:
    cached = prompt = 0.0
    for r in replicas:
        text = requests.get(r.runtime_url + "/metrics", timeout=30).text
        cached += metric_sum(text, "sglang:cached_tokens_total")
        prompt += metric_sum(text, "sglang:prompt_tokens_total")
    return cached, prompt


def flush_caches(replicas: list[Replica]) -> None:
    for r in replicas:
        resp = requests.post(r.runtime_url + "/flush_cache", timeout=60)
        resp.raise_for_status()


# --- the router -----------------------------------------------------------------------------------


class Router:
    def __init__(self, policy: str, workers: list[str], log_dir: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [
            sys.executable,
            "-m",
            "sglang_router.launch_router",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--policy",
            policy,
            "--worker-urls",
            *workers,
            "--prometheus-host",
            "127.0.0.1",
            "--prometheus-port",
            str(free_port()),
            "--log-level",
            "warn",
        ]
        self.log = open(log_dir / f"router-{policy}.log", "ab")  # noqa: SIM115 - the router writes it until stop() closes it
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sglang-router exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                ready = requests.get(self.url + "/readiness", timeout=5)
                if ready.status_code == 200 and ready.json().get("healthy_workers") == len(workers):
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(
            f"sglang-router not ready with {len(workers)} workers within {READY_TIMEOUT_S} s:\n{self.log_tail()}"
        )

    def log_tail(self, chars: int = 3000) -> str:
        return Path(self.log.name).read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        stop(self.proc, grace_s=30, after_kill_s=10)
        self.log.close()


# --- workloads ------------------------------------------------------------------------------------


def shared_prefix_prompts(groups: int, total: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    words = sorted({w for line in CORPUS for w in line.split()})
    prefixes = [" ".join(rng.choice(words) for _ in range(PREFIX_WORDS)) for _ in range(groups)]
    prompts = [
        f"{prefixes[i % groups]} request {i} " + " ".join(rng.choice(words) for _ in range(TAIL_WORDS))
        for i in range(total)
    ]
    rng.shuffle(prompts)
    return prompts


def run_completions(url: str, prompts: list[str], concurrency: int, max_tokens: int) -> float:
    """Send every prompt (non-streamed) with `concurrency` clients; return the wall seconds."""

    def one(prompt: str) -> None:
        r = requests.post(
            url + "/v1/completions",
            json={"model": LLAMA_PRESET, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0},
            timeout=300,
        )
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code} from {url}: {r.text[:300]}")

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, prompts))
    return time.perf_counter() - start


def run_streams(url: str, n: int, concurrency: int, max_tokens: int) -> tuple[float, int]:
    """Streamed completions; return (wall seconds, SSE events received)."""

    def one(i: int) -> int:
        body = {
            "model": LLAMA_PRESET,
            "prompt": f"the quick brown fox {i}",
            "max_tokens": max_tokens,
            "temperature": 0,
            "ignore_eos": True,
            "stream": True,
        }
        events = 0
        with requests.post(url + "/v1/completions", json=body, stream=True, timeout=300) as r:
            if r.status_code != 200:
                raise RuntimeError(f"HTTP {r.status_code} from {url}: {r.text[:300]}")
            for line in r.iter_lines():
                if line.startswith(b"data: "):
                    events += 1
        return events

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        events = sum(pool.map(one, range(n)))
    return time.perf_counter() - start, events


# --- the two parts --------------------------------------------------------------------------------


def routing(replicas: list[Replica], args, log_dir: Path) -> dict:
    prompts = shared_prefix_prompts(args.groups, args.requests)
    results: dict[str, list[dict]] = {"round_robin": [], "cache_aware": []}
    for rnd in range(args.rounds):
        for policy in ("round_robin", "cache_aware"):
            flush_caches(replicas)
            router = Router(policy, [r.gateway_url for r in replicas], log_dir)
            try:
                before = cache_counters(replicas)
                wall = run_completions(router.url, prompts, args.concurrency, args.max_tokens)
                after = cache_counters(replicas)
            finally:
                router.stop()
            cached, prompt = after[0] - before[0], after[1] - before[1]
            row = {
                "round": rnd + 1,
                "hit_rate": cached / prompt if prompt else 0.0,
                "recomputed": prompt - cached,
                "prompt_tokens": prompt,
                "req_per_s": len(prompts) / wall,
                "wall_s": wall,
            }
            results[policy].append(row)
            print(
                f"  round {rnd + 1} {policy:<11} hit rate {row['hit_rate']:.3f}  recomputed prompt tokens "
                f"{row['recomputed']:>8.0f} / {prompt:.0f}  {row['req_per_s']:.2f} req/s  ({wall:.1f} s)",
                flush=True,
            )
    summary = {}
    for policy, rows in results.items():
        summary[policy] = {k: statistics.mean(r[k] for r in rows) for k in ("hit_rate", "recomputed", "req_per_s")}
    ca, rr = summary["cache_aware"], summary["round_robin"]
    summary["ratios"] = {
        "hit_rate": ca["hit_rate"] / rr["hit_rate"] if rr["hit_rate"] else float("inf"),
        "recomputed_rr_over_ca": rr["recomputed"] / ca["recomputed"] if ca["recomputed"] else float("inf"),
        "throughput": ca["req_per_s"] / rr["req_per_s"],
    }
    return summary


def gateway_cost(r: Replica, args) -> dict:
    rows = {"direct": [], "gateway": []}
    for _ in range(args.rounds):
        for path, url in (("direct", r.runtime_url), ("gateway", r.gateway_url)):
            gw0, sg0 = cpu_seconds(r.gateway_pid), cpu_seconds(r.sglang_pid)
            wall, events = run_streams(url, args.streams, args.stream_concurrency, args.stream_tokens)
            gw1, sg1 = cpu_seconds(r.gateway_pid), cpu_seconds(r.sglang_pid)
            rows[path].append({"events": events, "wall": wall, "gateway_cpu": gw1 - gw0, "sglang_cpu": sg1 - sg0})
            print(
                f"  {path:<8} {events} events in {wall:.1f} s ({events / wall:.0f}/s); CPU s: gateway "
                f"{gw1 - gw0:.2f}, SGLang front end {sg1 - sg0:.2f}",
                flush=True,
            )

    def per_event(path: str, key: str) -> float:
        return 1e6 * sum(x[key] for x in rows[path]) / sum(x["events"] for x in rows[path])

    out = {
        "gateway_us_per_event": per_event("gateway", "gateway_cpu"),
        "sglang_front_end_us_per_event": per_event("direct", "sglang_cpu"),
        "events_per_s_direct": sum(x["events"] for x in rows["direct"]) / sum(x["wall"] for x in rows["direct"]),
        "events_per_s_gateway": sum(x["events"] for x in rows["gateway"]) / sum(x["wall"] for x in rows["gateway"]),
    }
    out["gateway_over_front_end"] = out["gateway_us_per_event"] / out["sglang_front_end_us_per_event"]
    out["throughput_gateway_over_direct"] = out["events_per_s_gateway"] / out["events_per_s_direct"]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=160)
    p.add_argument("--groups", type=int, default=8)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--max-tokens", type=int, default=4)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--streams", type=int, default=32)
    p.add_argument("--stream-concurrency", type=int, default=8)
    p.add_argument("--stream-tokens", type=int, default=64)
    p.add_argument("--hidden-size", type=int, default=384, help="of the random Llama (a multiple of 64)")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--skip-gateway", action="store_true")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    # A SIGTERM (e.g. from `timeout`) unwinds like an error, so the servers this run started are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if sglang_python() is None:  # `make bench` goes on with the other benchmarks
        print("bench_router skipped: the SGLang venv is missing (python3 tests/real_sglang/install_sglang.py)")
        return 0

    with tempfile.TemporaryDirectory(prefix="bench-router-") as tmp:
        root = Path(tmp)
        weights = small_llama(root / "model", args.hidden_size, args.layers)
        adapters_dir = root / "adapters"
        adapters_dir.mkdir()
        replicas: list[Replica] = []
        try:
            for i in range(2):
                work = root / f"work{i}"
                work.mkdir()
                stack = start_stack("sglang", LLAMA_PRESET, [], weights, adapters_dir, work / "adapters", work)
                replicas.append(replica(stack))
                print(
                    f"replica {i}: gateway {stack.url}, SGLang {replicas[-1].runtime_url} "
                    f"(healthy after {stack.start_seconds:.0f} s)",
                    flush=True,
                )
            print(
                f"\n1. routing: {args.requests} requests, {args.groups} groups sharing ~{PREFIX_WORDS}-word "
                f"prefixes, concurrency {args.concurrency}, {args.rounds} round(s); random Llama hidden "
                f"{args.hidden_size} x {args.layers} layers",
                flush=True,
            )
            figures = {"routing": routing(replicas, args, root)}
            if not args.skip_gateway:
                print(
                    f"\n2. gateway vs SGLang's own HTTP front end: {args.streams} streamed completions of "
                    f"{args.stream_tokens} tokens, concurrency {args.stream_concurrency}, per path and round",
                    flush=True,
                )
                figures["gateway"] = gateway_cost(replicas[0], args)
        except BaseException:
            for r in replicas:
                print(r.stack.log_tail(3000), file=sys.stderr)
            raise
        finally:
            for r in replicas:
                r.stack.stop()

    rt = figures["routing"]
    print("\n== routing (2 SGLang replicas behind sglang-router) ==")
    for policy in ("round_robin", "cache_aware"):
        s = rt[policy]
        print(
            f"{policy:<12} hit rate {s['hit_rate']:.3f}   recomputed prompt tokens {s['recomputed']:.0f}   "
            f"{s['req_per_s']:.2f} req/s"
        )
    print(
        f"cache_aware / round_robin: hit rate x{rt['ratios']['hit_rate']:.2f}, throughput "
        f"x{rt['ratios']['throughput']:.2f}, {rt['ratios']['recomputed_rr_over_ca']:.1f}x fewer recomputed prompt tokens"
    )
    if "gateway" in figures:
        g = figures["gateway"]
        print("\n== per-pod gateway vs SGLang's HTTP front end (streamed events) ==")
        print(
            f"gateway {g['gateway_us_per_event']:.1f} us CPU/event; SGLang front end "
            f"{g['sglang_front_end_us_per_event']:.1f} us CPU/event; ratio {g['gateway_over_front_end']:.2f}"
        )
        print(
            f"throughput through the gateway / direct: {g['throughput_gateway_over_direct']:.2f} "
            f"({g['events_per_s_gateway']:.0f} vs {g['events_per_s_direct']:.0f} events/s)"
        )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
