"""How close does ``streamkit batch`` get to the server-bound ideal?

Runs N prompts (default 1,000) through :func:`streamkit.run_batch` against
the emulator with S generation slots paced at R tokens/s and a fixed length
of T tokens per answer (``num_predict``). The server cannot finish faster
than::

    ideal = N * T / (S * R)

(``N * T`` is taken from the server's reported token counts, which is exact
even when an answer ends before ``num_predict``), so ``measured / ideal`` is
the batch runner's overhead (scheduling, slot
hand-over gaps, writing, fsync). Target: within 5 %.

Usage::

    python benchmarks/batch.py [--prompts 1000] [--slots 8] [--tps 50] [--tokens 20]
                               [--ordered] [--emulator-process]

``--emulator-process`` runs the emulator as a separate process (no shared
GIL with the client), as a real server would be.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Iterator, List, Tuple

import streamkit as sk
from streamkit.emulator import Emulator, EmulatorConfig


def _write_prompts(path: str, n: int) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"p{i}", "prompt": f"benchmark prompt {i}"}) + "\n")


class _EmulatorProcess:
    """``streamkit emulate`` in a child process; ``url`` once it listens."""

    def __init__(self, slots: int, tps: float) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "streamkit", "emulate", "--port", "0", "--parallel",
             str(slots), "--tokens-per-second", str(tps)],
            stdout=subprocess.PIPE, text=True)
        assert self._proc.stdout is not None
        self.url = self._proc.stdout.readline().strip()

    def close(self) -> None:
        self._proc.terminate()
        self._proc.wait(timeout=10)


@contextlib.contextmanager
def _server(args: argparse.Namespace) -> Iterator[str]:
    """The emulator's URL, in-process or as a child process, for the block."""
    if args.emulator_process:
        proc = _EmulatorProcess(args.slots, args.tps)
        try:
            yield proc.url
        finally:
            proc.close()
    else:
        # Every answer is exactly ``tokens`` long (natural length = the num_predict cap).
        config = EmulatorConfig(parallel=args.slots, tokens_per_second=args.tps,
                                response_tokens=(args.tokens, args.tokens))
        with Emulator(config) as emu:
            yield emu.url


def run_once(args: argparse.Namespace, url: str, prompts: str, out: str) -> Tuple[float, Any]:
    started = time.perf_counter()
    summary = sk.run_batch(prompts, out, model="demo", hosts=[(url, args.slots)],
                           workers=args.slots, options={"num_predict": args.tokens},
                           ordered=args.ordered, resume=False, progress=False)
    return time.perf_counter() - started, summary


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=1000)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--tps", type=float, default=50.0, help="tokens/s per slot")
    parser.add_argument("--tokens", type=int, default=20, help="tokens per answer")
    parser.add_argument("--ordered", action="store_true")
    parser.add_argument("--emulator-process", action="store_true")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        prompts, out = os.path.join(tmp, "p.jsonl"), os.path.join(tmp, "out.jsonl")
        _write_prompts(prompts, args.prompts)
        with _server(args) as url:
            elapsed, summary = run_once(args, url, prompts, out)
        with open(out, encoding="utf-8") as f:
            request_ms = statistics.mean(json.loads(line)["timing"]["total_ms"] for line in f)
    # The server's own token counts (eval_count) give the work it really did.
    ideal = summary.output_tokens / (args.slots * args.tps)
    ratio = elapsed / ideal
    print(f"prompts={args.prompts} slots={args.slots} tokens/s={args.tps:g} "
          f"tokens={args.tokens} ordered={args.ordered} "
          f"emulator={'process' if args.emulator_process else 'in-process'}")
    print(f"ok={summary.ok} failed={summary.failed} output_tokens={summary.output_tokens}")
    print(f"measured {elapsed:.2f} s   ideal {ideal:.2f} s   ratio {ratio:.3f}   "
          f"({'within' if ratio <= 1.05 else 'OVER'} 5 %)")
    # The emulator sends token i at i/R after the start, so pacing alone takes
    # (T - 1)/R per answer: the rest of the mean is HTTP + hand-over overhead.
    pacing_ms = (args.tokens - 1) / args.tps * 1000
    print(f"mean request {request_ms:.1f} ms (pacing alone {pacing_ms:.1f} ms); "
          f"slot utilisation {summary.ok * request_ms / 1000 / (elapsed * args.slots):.1%}")
    return 0 if summary.ok == args.prompts and ratio <= 1.05 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
