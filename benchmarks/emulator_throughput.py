"""Unpaced emulator throughput: NDJSON chunks per second to one raw socket client.

The emulator runs in a child process (so client and server do not share a
GIL); the client is a plain socket that sends one streaming request and counts
body lines until the chunked terminator. Endpoints alternate run by run and
the median of each is printed.

Run:  python benchmarks/emulator_throughput.py [--tokens 200000] [--runs 5]

Measured (2-core dev VM, Python 3.11, other jobs running): medians of
310k-440k chunks/s per endpoint with the defaults, 680k-720k chunks/s with
``--tokens 100000 --runs 3`` on a quieter moment; the target is >= 100k.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Tuple
from urllib.parse import urlsplit

# (name, path, body template, end-of-line pattern inside the chunked framing)
ENDPOINTS: List[Tuple[str, str, Dict[str, object], bytes]] = [
    ("/api/generate", "/api/generate", {"model": "demo", "prompt": "bench"}, b"}\n\r\n"),
    ("/api/chat", "/api/chat",
     {"model": "demo", "messages": [{"role": "user", "content": "bench"}]}, b"}\n\r\n"),
    ("/v1/chat/completions", "/v1/chat/completions",
     {"model": "demo", "stream": True, "messages": [{"role": "user", "content": "bench"}]},
     b"}\n\n\r\n"),
]
TERMINATOR = b"0\r\n\r\n"


def serve(tokens: int) -> None:
    """Child process: run an unpaced emulator whose responses are ``tokens`` long."""
    from streamkit.emulator import Emulator

    with Emulator(tokens_per_second=0, response_tokens=(tokens, tokens)) as emu:
        print(emu.url, flush=True)
        sys.stdin.read()  # until the parent closes our stdin


def one_run(host: str, port: int, path: str, body: Dict[str, object],
            pattern: bytes) -> Tuple[int, float]:
    """(lines counted, seconds from send to terminator) for one request."""
    payload = json.dumps(body).encode()
    request = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json"
               f"\r\nContent-Length: {len(payload)}\r\nConnection: close\r\n\r\n").encode()
    keep = len(pattern) - 1
    with socket.create_connection((host, port)) as sock:
        start = time.perf_counter()
        sock.sendall(request + payload)
        lines, tail = 0, b""
        while True:
            data = sock.recv(1 << 20)
            if not data:
                break
            window = tail + data
            lines += window.count(pattern)
            tail = window[-max(keep, len(TERMINATOR)):]
            if tail.endswith(TERMINATOR):
                break
        return lines, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=200_000, help="chunks per response")
    parser.add_argument("--runs", type=int, default=5, help="runs per endpoint")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return 0
    child = subprocess.Popen([sys.executable, __file__, "--serve", str(args.tokens)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdin is not None
        url = urlsplit(child.stdout.readline().strip())
        host, port = url.hostname or "127.0.0.1", url.port or 11434
        one_run(host, port, *ENDPOINTS[0][1:])  # warm-up (model load, caches)
        rates: Dict[str, List[float]] = {name: [] for name, *_ in ENDPOINTS}
        for _ in range(args.runs):
            for name, path, body, pattern in ENDPOINTS:  # alternate endpoints run by run
                lines, seconds = one_run(host, port, path, body, pattern)
                if lines < args.tokens:
                    print(f"warning: {name} gave {lines} lines, expected >= {args.tokens}")
                rates[name].append(lines / seconds)
    finally:
        if child.stdin is not None:
            child.stdin.close()
        child.wait(timeout=10)
    print(f"command: python benchmarks/emulator_throughput.py --tokens {args.tokens} "
          f"--runs {args.runs}")
    print(f"python {sys.version.split()[0]}, {args.tokens} chunks per response, "
          f"median of {args.runs} alternating runs, one raw socket client")
    for name, values in rates.items():
        print(f"  {name:22s} {statistics.median(values):>12,.0f} chunks/s   "
              f"(min {min(values):,.0f}, max {max(values):,.0f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
