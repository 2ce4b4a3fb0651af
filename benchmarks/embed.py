"""Embedding throughput: inputs grouped into requests vs one request per input.

Embeds N inputs (default 10,000 short documents of 8 to 40 words) against
the emulator running in its own process, whose embedding model costs what a
real one does in shape: a fixed ``--request-ms`` per request plus
``--token-us`` per input token, on a single slot (Ollama loads an
embedding model with one). For each group size (default 1, 16, 64, 256) it
embeds every input with streamkit's ``Client.embed`` and with the official
``ollama`` client's ``embed``, same groups, one request at a time,
alternating which client goes first, ``--repeats`` times; it prints the
median inputs/s and request latency of each, the speed-up of each group
size over one input per request, and streamkit / ollama.

The floor the server sets is ``requests * request_ms + tokens * token_us``;
the table prints it so the clients' own overhead shows. Vectors are checked
equal between the two clients.

Usage::

    python benchmarks/embed.py [--inputs 10000] [--groups 1,16,64,256] [--repeats 3]
                               [--request-ms 2] [--token-us 20] [--dim 768]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Sequence, Tuple

import ollama

import streamkit as sk
from streamkit.emulator import Emulator, EmulatorConfig

MODEL = "demo-embed"
_WORDS = ("river", "stone", "signal", "thread", "window", "paper", "quiet", "light", "queue",
          "socket", "green", "seven", "bright", "lamp", "number", "blue", "model", "server")

Embedder = Callable[[List[str]], List[List[float]]]


def corpus(n: int) -> List[str]:
    """``n`` deterministic documents of 8 to 40 words."""
    docs = []
    for i in range(n):
        length = 8 + (i * 7919) % 33
        docs.append(" ".join(_WORDS[(i * 31 + k * 17) % len(_WORDS)] for k in range(length))
                    + f" #{i}")
    return docs


def serve(args: argparse.Namespace) -> int:
    """Child process: run the emulator, print its URL, stop when stdin closes."""
    config = EmulatorConfig(embed_dim=args.dim, embed_request_cost=args.request_ms / 1e3,
                            embed_token_cost=args.token_us / 1e6, max_queue=4096)
    with Emulator(config) as emu:
        print(emu.url, flush=True)
        sys.stdin.read()  # the parent closes our stdin when it is done
    return 0


class _Server:
    """The emulator in a child process (no shared GIL with the clients)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", "--dim", str(args.dim),
             "--request-ms", str(args.request_ms), "--token-us", str(args.token_us)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self._proc.stdout is not None
        self.url = self._proc.stdout.readline().strip()

    def close(self) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=10)


def groups_of(items: Sequence[str], size: int) -> List[List[str]]:
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


def run(embed: Embedder, groups: List[List[str]]) -> Tuple[float, List[float], int]:
    """(seconds, per-request latencies, vectors) for embedding every group in turn."""
    latencies = []
    count = 0
    started = time.perf_counter()
    for group in groups:
        t0 = time.perf_counter()
        count += len(embed(group))
        latencies.append(time.perf_counter() - t0)
    return time.perf_counter() - started, latencies, count


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=10_000)
    parser.add_argument("--groups", default="1,16,64,256")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--request-ms", type=float, default=2.0,
                        help="server cost per request (ms)")
    parser.add_argument("--token-us", type=float, default=20.0,
                        help="server cost per input token (us)")
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return serve(args)

    docs = corpus(args.inputs)
    sizes = [int(s) for s in args.groups.split(",")]
    tokens = sum(len(d.split()) + 2 for d in docs)  # the emulator's count: words + 2
    server = _Server(args)
    ours = sk.Client(server.url, timeouts=sk.Timeouts(first_token=600))
    theirs = ollama.Client(host=server.url, timeout=600)
    clients: Dict[str, Embedder] = {
        "streamkit": lambda group: ours.embed(MODEL, group).vectors,
        "ollama": lambda group: [list(v) for v in theirs.embed(model=MODEL,
                                                                input=group).embeddings],
    }
    try:
        sample = docs[:8]
        if clients["streamkit"](sample) != clients["ollama"](sample):
            print("MISMATCH: streamkit's vectors differ from the official client's")
            return 1
        times: Dict[Tuple[str, int], List[float]] = {}
        latency: Dict[Tuple[str, int], List[float]] = {}
        for rep in range(args.repeats):
            for size in sizes:
                order = list(clients) if (rep + size) % 2 == 0 else list(reversed(clients))
                for name in order:
                    elapsed, lat, count = run(clients[name], groups_of(docs, size))
                    assert count == len(docs)
                    times.setdefault((name, size), []).append(elapsed)
                    latency.setdefault((name, size), []).extend(lat)
    finally:
        ours.close()
        theirs._client.close()
        server.close()

    print(f"inputs={args.inputs} dim={args.dim} request cost={args.request_ms:g} ms "
          f"token cost={args.token_us:g} us ({tokens} tokens) repeats={args.repeats} "
          f"(medians)")
    print(f"{'group':>6} {'server floor':>12} {'streamkit in/s':>15} {'ollama in/s':>12} "
          f"{'sk/ollama':>10} {'sk speed-up':>12} {'ol speed-up':>12} "
          f"{'sk req ms':>10} {'ol req ms':>10}")
    base = {name: statistics.median(times[(name, sizes[0])]) for name in clients}
    for size in sizes:
        requests = -(-args.inputs // size)
        floor = requests * args.request_ms / 1e3 + tokens * args.token_us / 1e6
        sk_t = statistics.median(times[("streamkit", size)])
        ol_t = statistics.median(times[("ollama", size)])
        print(f"{size:>6} {floor:>11.2f}s {args.inputs / sk_t:>15.0f} "
              f"{args.inputs / ol_t:>12.0f} {ol_t / sk_t:>10.2f} "
              f"{base['streamkit'] / sk_t:>11.2f}x {base['ollama'] / ol_t:>11.2f}x "
              f"{statistics.median(latency[('streamkit', size)]) * 1e3:>10.2f} "
              f"{statistics.median(latency[('ollama', size)]) * 1e3:>10.2f}")
    print("speed-up: time with one input per request (first group size) / time with this "
          "group size;\nsk/ollama > 1 means streamkit is faster.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
