"""Ingest throughput: chunks/s of one unpaced stream, streamkit vs its peers.

Three clients read the same NDJSON stream (``--tokens`` chunks, one token
each) and extract every chunk's text:

- ``streamkit``: ``Stream`` (worker thread → bounded channel → this thread).
- ``raw``: ``requests.post(stream=True)`` + ``iter_lines()`` + ``json.loads``,
  the loop people write by hand.
- ``ollama``: the official client, ``ollama.Client(host).generate(stream=True)``.

The server runs in a separate process so it does not share the GIL with the
clients. ``--server replay`` (default) serves the emulator's own response,
recorded once, from a tight socket loop: what is measured is the client, not
the emulator. ``--server emulator`` streams from a live emulator instead
(then the emulator may be the limit). Runs alternate between clients; the
medians are compared.

    python benchmarks/ingest.py                     # 200k tokens, 5 rounds
    python benchmarks/ingest.py --tokens 50000 --rounds 3 --server emulator
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import textwrap
import time
from typing import Callable, Dict, List, Tuple

import requests

from streamkit import _json
from streamkit._http import Transport
from streamkit.config import RetryPolicy, Timeouts
from streamkit.records import GenerateRequest
from streamkit.stream import FixedRoute, Stream
from streamkit.wire import get_dialect

MODEL = "demo"
PROMPT = "ingest benchmark"

_SERVER = textwrap.dedent(r"""
    import socket, sys, threading
    from streamkit.emulator import Emulator, EmulatorConfig

    mode, tokens = sys.argv[1], int(sys.argv[2])
    config = EmulatorConfig(response_tokens=(tokens, tokens), port=0)

    def record(url):
        # The emulator's reply, as Ollama frames it: one HTTP chunk per line.
        import requests
        r = requests.post(url + "/api/generate", json={"model": "demo",
                          "prompt": "ingest benchmark"}, stream=True)
        body = b"".join(b"%x\r\n%s\n\r\n" % (len(l) + 1, l)
                        for l in r.iter_lines(chunk_size=1 << 16) if l)
        head = (b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n")
        return head + body + b"0\r\n\r\n"

    def serve(conn, reply):
        buf = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                while len(buf) < length:
                    buf += conn.recv(65536)
                buf = buf[length:]
                try:
                    conn.sendall(reply)
                except OSError:
                    return

    if mode == "emulator":
        with Emulator(config) as emu:
            print(emu.url, flush=True)
            sys.stdin.read()
    else:
        with Emulator(config) as emu:
            reply = record(emu.url)
        listener = socket.create_server(("127.0.0.1", 0))
        print("http://127.0.0.1:%d" % listener.getsockname()[1], flush=True)
        threading.Thread(target=lambda: sys.stdin.read() or listener.close(),
                         daemon=True).start()
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                break
            threading.Thread(target=serve, args=(conn, reply), daemon=True).start()
""")

Client = Callable[[str, int], Tuple[int, int]]


def run_streamkit(url: str, tokens: int) -> Tuple[int, int]:
    with Transport() as transport:
        stream = Stream(GenerateRequest(MODEL, PROMPT), dialect=get_dialect("ollama"),
                        transport=transport, route=FixedRoute(url),
                        timeouts=Timeouts(idle=60), retry=RetryPolicy(attempts=1))
        stream._start()
        n = chars = 0
        for chunk in stream:
            n += 1
            chars += len(chunk.text)
        return n, chars


def run_raw(url: str, tokens: int) -> Tuple[int, int]:
    n = chars = 0
    with requests.Session() as session:
        resp = session.post(url + "/api/generate", json={"model": MODEL, "prompt": PROMPT},
                            stream=True, timeout=60)
        for line in resp.iter_lines():
            if line:
                obj = json.loads(line)
                n += 1
                chars += len(obj["response"])
    return n, chars


def run_ollama(url: str, tokens: int) -> Tuple[int, int]:
    import ollama
    n = chars = 0
    for part in ollama.Client(host=url).generate(model=MODEL, prompt=PROMPT, stream=True):
        n += 1
        chars += len(part.response or "")
    return n, chars


def start_server(mode: str, tokens: int) -> Tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-c", _SERVER, mode, str(tokens)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http"):
        proc.kill()
        raise SystemExit("the benchmark server did not start")
    return proc, url


def measure(clients: Dict[str, Client], url: str, tokens: int,
            rounds: int) -> Dict[str, List[float]]:
    rates: Dict[str, List[float]] = {name: [] for name in clients}
    expected_chunks = None
    for r in range(rounds):
        order = list(clients) if r % 2 == 0 else list(reversed(clients))  # alternate
        for name in order:
            started = time.perf_counter()
            chunks, chars = clients[name](url, tokens)
            elapsed = time.perf_counter() - started
            if expected_chunks is None:
                expected_chunks = chunks
            if chunks != expected_chunks:
                raise SystemExit(f"{name} read {chunks} chunks, expected {expected_chunks}")
            rates[name].append(chunks / elapsed)
            print(f"  round {r + 1} {name:9} {chunks / elapsed:>10,.0f} chunks/s "
                  f"({chunks} chunks, {chars} chars, {elapsed:.2f} s)", flush=True)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--server", choices=("replay", "emulator"), default="replay")
    parser.add_argument("--skip-ollama", action="store_true")
    args = parser.parse_args()

    clients: Dict[str, Client] = {"streamkit": run_streamkit, "raw": run_raw}
    if not args.skip_ollama:
        try:
            import ollama  # noqa: F401
            clients["ollama"] = run_ollama
        except ImportError:
            print("ollama is not installed (pip install ollama): skipping it")
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, json backend: "
          f"{_json.BACKEND}, server: {args.server}, {args.tokens} tokens, "
          f"{args.rounds} rounds")
    proc, url = start_server(args.server, args.tokens)
    try:
        run_streamkit(url, args.tokens)  # warm-up: imports, first connection
        rates = measure(clients, url, args.tokens, args.rounds)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.terminate()
        proc.wait(10)
    medians = {name: statistics.median(v) for name, v in rates.items()}
    print("\nmedian chunks/s")
    for name, value in medians.items():
        print(f"  {name:9} {value:>10,.0f}")
    base = medians["streamkit"]
    print(f"\nstreamkit / raw requests loop: {base / medians['raw']:.2f}x  (target >= 1.0x)")
    if "ollama" in medians:
        print(f"streamkit / ollama client:     {base / medians['ollama']:.2f}x  "
              "(target >= 2.5x)")


if __name__ == "__main__":
    main()
