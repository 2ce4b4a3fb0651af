"""Request cost: client CPU per short streaming request, against two floors.

With many slow streams the cost of opening each one counts as much as the
per-chunk path (scale.py divides it over the chunks). This measures it
alone: N one-token generate requests, one after another in one thread,
against the emulator in its own process (so only the client's CPU is
counted), through

  streamkit    ``Client.generate(...).result()`` (a worker thread per stream,
               keep-alive pool)
  requests     ``Session.post(..., stream=True)``, lines read with
               ``iter_lines`` and ``json.loads`` (keep-alive)
  raw-socket   a new socket per request, the request written by hand, the
               chunked body undone by hand (scale.py's floor)

Clients alternate within a round; the table gives medians of CPU ms and wall
ms per request.

Usage::

    python benchmarks/request_cost.py                 # 1,000 requests, 3 rounds
    python benchmarks/request_cost.py --requests 200 --rounds 1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from typing import Callable, Dict, List, Tuple

import requests

import streamkit as sk

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fanout import emulator_process
from scale import _open, _records

MODEL = "demo"
WARM_UP = 50


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def streamkit_client(url: str) -> Tuple[Callable[[int], None], Callable[[], None]]:
    client = sk.Client(url, pool_size=4)

    def one(i: int) -> None:
        result = client.generate(MODEL, f"prompt {i}", options={"num_predict": 1}).result()
        if not result.ok:
            raise RuntimeError(f"request {i} failed: {result.error}")
    return one, client.close


def requests_loop(url: str) -> Tuple[Callable[[int], None], Callable[[], None]]:
    session = requests.Session()

    def one(i: int) -> None:
        body = {"model": MODEL, "prompt": f"prompt {i}", "options": {"num_predict": 1}}
        with session.post(url + "/api/generate", json=body, stream=True, timeout=30) as resp:
            resp.raise_for_status()
            for line in resp.iter_lines():
                if line and json.loads(line).get("done"):
                    break
    return one, session.close


def raw_socket(url: str) -> Tuple[Callable[[int], None], Callable[[], None]]:
    def one(i: int) -> None:
        sock, buf = _open(url, i, 1)
        pending = bytearray()
        with sock:
            while True:
                lines, buf, ended = _records(buf, pending)
                for line in lines:
                    json.loads(line)
                if ended:
                    return
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError("cut")
                buf += data
    return one, lambda: None


CLIENTS: Dict[str, Callable[[str], Tuple[Callable[[int], None], Callable[[], None]]]] = {
    "streamkit": streamkit_client,
    "requests": requests_loop,
    "raw-socket": raw_socket,
}


def measure(make: Callable[[str], Tuple[Callable[[int], None], Callable[[], None]]],
            url: str, n: int) -> Tuple[float, float]:
    """(CPU ms, wall ms) per request over ``n`` requests, after a warm-up."""
    one, close = make(url)
    try:
        for i in range(WARM_UP):
            one(i)
        cpu, wall = _cpu(), time.perf_counter()
        for i in range(n):
            one(i)
        return (_cpu() - cpu) / n * 1e3, (time.perf_counter() - wall) / n * 1e3
    finally:
        close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}, {args.requests} one-token "
          f"requests per run, {args.rounds} rounds (medians)")
    figures: Dict[str, List[Tuple[float, float]]] = {name: [] for name in CLIENTS}
    with emulator_process("--tokens-per-second", "0") as url:
        for _ in range(args.rounds):
            for name, make in CLIENTS.items():
                figures[name].append(measure(make, url, args.requests))
    floor = statistics.median(cpu for cpu, _ in figures["raw-socket"])
    print(f"{'client':12} {'CPU ms/req':>11} {'wall ms/req':>12} {'CPU / raw':>10}")
    for name, runs in figures.items():
        cpu = statistics.median(c for c, _ in runs)
        wall = statistics.median(w for _, w in runs)
        print(f"{name:12} {cpu:11.3f} {wall:12.3f} {cpu / floor:9.1f}x")


if __name__ == "__main__":
    main()
