"""Do retries cost anything when nothing fails?

Usage: python benchmarks/retry_overhead.py [--tokens 20000] [--rounds 7] [--calls 20000]

Two measurements, each alternating the two variants round by round and
printing medians and the ratio:

1. Stream ingest: chunks/s of one unpaced emulator stream through
   ``Client.generate`` with ``RetryPolicy(attempts=1)`` (no retry machinery
   in play) vs the default policy (3 attempts, tenacity wrapping the attempt).
   Retries wrap only connect → status → first chunk, so the ratio should be
   1.0 within noise.
2. Per-stream fixed cost: ``Attempts.call`` around a trivial attempt vs
   calling the attempt directly (microseconds per stream).
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from typing import Callable, Dict, List

from streamkit import RetryPolicy
from streamkit.client import Client
from streamkit.emulator import Emulator, EmulatorConfig
from streamkit.retry import Attempts


def ingest_rate(client: Client) -> float:
    started = time.perf_counter()
    stream = client.generate("demo", "benchmark", options={"seed": 1})
    chunks = sum(1 for _ in stream)
    return chunks / (time.perf_counter() - started)


def stream_rounds(url: str, rounds: int) -> Dict[str, List[float]]:
    policies = {"attempts=1": RetryPolicy(attempts=1), "default": RetryPolicy()}
    rates: Dict[str, List[float]] = {name: [] for name in policies}
    clients = {name: Client(url, retry=policy) for name, policy in policies.items()}
    try:
        for client in clients.values():
            ingest_rate(client)  # warm-up: connections, caches
        for i in range(rounds):
            order = list(clients) if i % 2 == 0 else list(reversed(clients))
            for name in order:
                rates[name].append(ingest_rate(clients[name]))
    finally:
        for client in clients.values():
            client.close()
    return rates


def call_cost(calls: int, rounds: int) -> Dict[str, List[float]]:
    def attempt(n: int) -> int:
        return n

    def direct() -> None:
        for _ in range(calls):
            attempt(1)

    def wrapped() -> None:
        for _ in range(calls):
            Attempts(RetryPolicy(), threading.Event()).call(attempt)

    variants: Dict[str, Callable[[], None]] = {"direct": direct, "Attempts.call": wrapped}
    costs: Dict[str, List[float]] = {name: [] for name in variants}
    for i in range(rounds):
        order = list(variants) if i % 2 == 0 else list(reversed(variants))
        for name in order:
            started = time.perf_counter()
            variants[name]()
            costs[name].append((time.perf_counter() - started) / calls * 1e6)
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=20000, help="chunks per stream")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=20000)
    args = parser.parse_args()

    config = EmulatorConfig(response_tokens=(args.tokens, args.tokens))
    with Emulator(config) as emu:
        rates = stream_rounds(emu.url, args.rounds)
    base, retry = (statistics.median(rates[k]) for k in ("attempts=1", "default"))
    print(f"stream ingest, {args.tokens} chunks, {args.rounds} alternating rounds (medians):")
    print(f"  RetryPolicy(attempts=1): {base:12,.0f} chunks/s")
    print(f"  RetryPolicy() default:   {retry:12,.0f} chunks/s")
    print(f"  ratio default/attempts=1: {retry / base:.3f}  "
          f"(spread of attempts=1 runs: {min(rates['attempts=1']) / base:.2f}.."
          f"{max(rates['attempts=1']) / base:.2f})")

    costs = call_cost(args.calls, args.rounds)
    direct, wrapped = (statistics.median(costs[k]) for k in ("direct", "Attempts.call"))
    print(f"fixed cost per stream: Attempts(...).call {wrapped:.1f} us vs direct call "
          f"{direct:.2f} us -> {wrapped - direct:.1f} us added per stream (not per chunk)")


if __name__ == "__main__":
    main()
