"""Stall probe: how often this machine fails to run a waiting process on time.

A lag target of a few milliseconds can only be measured on a machine that
wakes a sleeping process within a millisecond or so. Virtual machines and
shared hosts often do not: a vCPU left idle is descheduled by the host, and
waking it again can take several milliseconds. This probe shows that floor.
It sleeps 0.5 ms at a time in a process of its own (one thread, no other
work) and counts every sleep that returned more than ``--over-ms`` late.

Run alone (``python benchmarks/stalls.py --seconds 10``) or from another
benchmark, which starts it with :func:`probe` around a measurement and prints
its line next to the lags measured meanwhile (``fanout.py --part b``).
Output: one JSON line ``{"seconds", "over_ms", "stalls", "per_s", "longest_ms"}``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from typing import Any, Dict, Iterator

SLEEP_S = 0.0005
OVER_MS = 2.0


def measure(stop: threading.Event, over_ms: float) -> Dict[str, Any]:
    """Sleep ``SLEEP_S`` at a time until ``stop`` is set; count the late wake-ups."""
    over_ns = int((over_ms / 1000 + SLEEP_S) * 1e9)
    stalls, longest = 0, 0
    start = last = time.perf_counter_ns()
    while not stop.is_set():
        time.sleep(SLEEP_S)
        now = time.perf_counter_ns()
        if now - last > over_ns:
            stalls += 1
            longest = max(longest, now - last)
        last = now
    seconds = (last - start) / 1e9
    return {"seconds": seconds, "over_ms": over_ms, "stalls": stalls,
            "per_s": stalls / max(seconds, 1e-9), "longest_ms": longest / 1e6}


class Probe:
    """A running probe subprocess; ``result()`` stops it and returns its figures."""

    def __init__(self, over_ms: float) -> None:
        cmd = [sys.executable, os.path.abspath(__file__), "--until-stdin-closes",
               "--over-ms", str(over_ms)]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      text=True)

    def stop(self) -> None:
        """Stop the probe if :meth:`result` has not (idempotent)."""
        if self._proc.poll() is None and self._proc.stdin is not None:
            self._proc.stdin.close()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def result(self) -> Dict[str, Any]:
        """Close the probe's stdin and wait (10 s at most) for its JSON line."""
        try:
            out, _ = self._proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.communicate()
            return {"failed": "the probe did not answer"}
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        return dict(json.loads(lines[-1])) if lines else {"failed": "no output"}


@contextmanager
def probe(over_ms: float = OVER_MS) -> Iterator[Probe]:
    """Run the probe in its own process while the body runs."""
    running = Probe(over_ms)
    try:
        yield running
    finally:
        running.stop()


def describe(figures: Dict[str, Any]) -> str:
    """One line for a benchmark's output."""
    if "failed" in figures:
        return f"stall probe failed: {figures['failed']}"
    return (f"{figures['stalls']} wake-ups over {figures['over_ms']:g} ms late in "
            f"{figures['seconds']:.1f} s ({figures['per_s']:.1f}/s), longest "
            f"{figures['longest_ms']:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--over-ms", type=float, default=OVER_MS,
                        help="a wake-up this much later than asked counts as a stall")
    parser.add_argument("--until-stdin-closes", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    stop = threading.Event()
    if args.until_stdin_closes:
        def wait_for_eof() -> None:
            sys.stdin.read()
            stop.set()
        threading.Thread(target=wait_for_eof, daemon=True).start()
    else:
        threading.Timer(args.seconds, stop.set).start()
    print(json.dumps(measure(stop, args.over_ms)), flush=True)


if __name__ == "__main__":
    main()
