"""Fan-out benchmark: the Dispatcher against a thread pool running the official client.

(a) throughput: N short generate requests at concurrency C, requests/s of
    ``Dispatcher.map`` vs ``ThreadPoolExecutor(C)`` draining
    ``ollama.Client(host).generate(model, prompt, stream=True)``. Runs
    alternate (streamkit, baseline, streamkit, ...); medians; ratio.
(b) client-added lag: S streams paced at 50 tokens/s with the emulator's
    ``--stamp`` (each chunk carries ``_sent_ns``, the server's
    ``perf_counter_ns()`` just before the write). Lag = ``Chunk.received_ns``
    (stamped by streamkit when the bytes came off the socket, before
    parsing) minus ``_sent_ns``. Both are CLOCK_MONOTONIC on Linux, so they
    compare across processes. p50/p99 over every chunk; also p99 without
    the start burst (chunks received in the first ``BURST_S`` of a run,
    while all S requests are being opened at once) and p99 of the first
    chunks, for locating the tail.

    ``--gc-freeze``: part (b) calls ``gc.freeze()`` after its warm-up, so
    the objects made by imports and the warm-up are not rescanned by the
    rare full collections (one can stall every thread for tens of ms on a
    2-core machine). Off by default: it is a harness choice (the library
    never touches the collector), and it applies to every run alike.

The emulator runs in a separate process (``python -m streamkit emulate``) so
it does not share this process's GIL.

Usage::

    python benchmarks/fanout.py                 # both parts, defaults below
    python benchmarks/fanout.py --part a --requests 2000 --concurrency 32 --rounds 5
    python benchmarks/fanout.py --part b --streams 64,128 --tokens 150
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Sequence

from stalls import describe, probe

import streamkit as sk

MODEL = "demo"
BURST_S = 0.3


@contextmanager
def emulator_process(*args: str) -> Iterator[str]:
    """Start ``python -m streamkit emulate --port 0 ARGS``; yield its URL; stop it."""
    cmd = [sys.executable, "-m", "streamkit", "emulate", "--port", "0", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http"):
            raise RuntimeError(f"emulator did not start: {url!r}")
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _requests(n: int, tokens: int) -> List[sk.GenerateRequest]:
    return [sk.GenerateRequest(MODEL, f"prompt {i}", options={"num_predict": tokens})
            for i in range(n)]


# -- (a) throughput ------------------------------------------------------------


def run_streamkit(url: str, n: int, concurrency: int, tokens: int) -> float:
    requests = _requests(n, tokens)
    with sk.Dispatcher(hosts=[(url, concurrency)], workers=concurrency) as d:
        started = time.perf_counter()
        done = sum(1 for r in d.map(requests, return_exceptions=True) if r.ok)
        elapsed = time.perf_counter() - started
    if done != n:
        raise RuntimeError(f"streamkit: only {done} of {n} succeeded")
    return n / elapsed


def run_ollama(url: str, n: int, concurrency: int, tokens: int) -> float:
    import ollama

    client = ollama.Client(host=url)

    def one(i: int) -> int:
        parts = 0
        for _ in client.generate(MODEL, f"prompt {i}", stream=True,
                                 options={"num_predict": tokens}):
            parts += 1
        return parts

    with ThreadPoolExecutor(concurrency) as pool:
        started = time.perf_counter()
        done = sum(1 for parts in pool.map(one, range(n)) if parts)
        elapsed = time.perf_counter() - started
    client._client.close()
    if done != n:
        raise RuntimeError(f"ollama: only {done} of {n} succeeded")
    return n / elapsed


def part_a(args: argparse.Namespace) -> None:
    parallel = str(max(args.concurrency, 4))
    with emulator_process("--tokens-per-second", "0", "--parallel", parallel) as url:
        run_streamkit(url, 200, args.concurrency, args.tokens)  # warm-up: pools, imports
        run_ollama(url, 200, args.concurrency, args.tokens)
        ours: List[float] = []
        theirs: List[float] = []
        for _ in range(args.rounds):
            ours.append(run_streamkit(url, args.requests, args.concurrency, args.tokens))
            theirs.append(run_ollama(url, args.requests, args.concurrency, args.tokens))
            print(f"  round: streamkit {ours[-1]:8.0f} req/s   ollama {theirs[-1]:8.0f} req/s",
                  flush=True)
    mine, base = statistics.median(ours), statistics.median(theirs)
    print(f"(a) {args.requests} requests x {args.tokens} tokens, concurrency "
          f"{args.concurrency}, {args.rounds} rounds (medians)")
    print(f"    streamkit Dispatcher        {mine:8.0f} req/s")
    print(f"    ThreadPoolExecutor + ollama {base:8.0f} req/s")
    print(f"    ratio {mine / base:.2f}x  (target >= 1.5x)")


# -- (b) client-added lag ------------------------------------------------------


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure_lag(url: str, streams: int, tokens: int) -> Dict[str, Any]:
    lags: List[float] = []
    steady: List[float] = []  # received after the start burst
    firsts: List[float] = []  # each stream's first chunk
    failed = 0
    with sk.Dispatcher(hosts=[(url, streams)], workers=streams,
                       max_pending=0) as d:
        burst_end = time.perf_counter_ns() + int(BURST_S * 1e9)
        for _, item in d.events(_requests(streams, tokens)):
            if isinstance(item, sk.Result):
                failed += not item.ok
                continue
            assert isinstance(item, sk.Chunk)  # generate requests: no embeddings
            sent = item.raw.get("_sent_ns") if item.raw else None
            if sent is not None:
                lag = (item.received_ns - sent) / 1e6
                lags.append(lag)
                if item.received_ns >= burst_end:
                    steady.append(lag)
                if item.index == 0:
                    firsts.append(lag)
    return {"streams": streams, "chunks": len(lags), "failed": failed,
            "p50": _percentile(lags, 0.50), "p99": _percentile(lags, 0.99),
            "max": max(lags), "steady_p99": _percentile(steady or [0.0], 0.99),
            "first_p99": _percentile(firsts or [0.0], 0.99)}


def part_b(args: argparse.Namespace) -> None:
    counts = [int(c) for c in args.streams.split(",")]
    parallel = str(max(counts))
    with emulator_process("--tokens-per-second", "50", "--parallel", parallel,
                          "--stamp") as url:
        measure_lag(url, 4, 10)  # warm-up
        if args.gc_freeze:
            gc.freeze()
        print(f"(b) client-added lag, streams paced at 50 tokens/s, up to {args.tokens} "
              f"tokens each (the emulator's text length caps it); gc.freeze() after "
              f"warm-up: {'yes' if args.gc_freeze else 'no'}")
        for streams in [4, *counts]:  # 4 streams: this machine's floor right now
            with probe() as stall_probe:
                rows = [measure_lag(url, streams, args.tokens) for _ in range(args.lag_rounds)]
                stalls = stall_probe.result()
            p50 = statistics.median(r["p50"] for r in rows)
            p99 = statistics.median(r["p99"] for r in rows)
            worst = max(r["max"] for r in rows)
            steady = statistics.median(r["steady_p99"] for r in rows)
            first = statistics.median(r["first_p99"] for r in rows)
            target = 2.0 if streams <= 64 else 5.0  # the 4-stream row is the floor
            load = os.getloadavg()[0]
            print(f"    {streams:4d} streams: {rows[0]['chunks']:6d} chunks/run  "
                  f"p50 {p50:6.3f} ms  p99 {p99:6.3f} ms  max {worst:6.2f} ms  "
                  f"(target p99 <= {target:.0f} ms; failed {sum(r['failed'] for r in rows)})",
                  flush=True)
            print(f"          p99 after the first {BURST_S * 1000:.0f} ms {steady:6.3f} ms, "
                  f"p99 of first chunks {first:6.3f} ms, load {load:.1f}", flush=True)
            print(f"          meanwhile, an idle process here: {describe(stalls)}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["a", "b", "all"], default="all")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=0,
                        help="tokens per response (default: a: 8, b: 150)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--streams", default="64,128")
    parser.add_argument("--lag-rounds", type=int, default=3)
    parser.add_argument("--gc-freeze", action="store_true",
                        help="(b): gc.freeze() after the warm-up (see above)")
    args = parser.parse_args()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {load}, "
          f"streamkit {sk.__version__}")
    if args.part in ("a", "all"):
        part_a(argparse.Namespace(**{**vars(args), "tokens": args.tokens or 8}))
    if args.part in ("b", "all"):
        part_b(argparse.Namespace(**{**vars(args), "tokens": args.tokens or 150}))


if __name__ == "__main__":
    threading.current_thread().name = "fanout-main"
    main()
