"""The same batch job four ways: one process, ``--ray`` with 1 and 2 actors, Ray Data LLM.

Runs N prompts (default 1,000) over H emulator processes (default 4) with S
slots each, paced at R tokens/s, T tokens per answer, and reports for each
way: start-up time (launch to the first answer), wall time, steady
throughput (answers after the first, per second after the first), then the
same job with one host killed (SIGKILL) a third of the way through:
failures, duplicate ids, missing ids.

- ``single``: ``streamkit batch PROMPTS -o OUT --host URL=S ...`` (one process).
- ``ray-1``, ``ray-2``: the same command with ``--ray --ray-actors 1|2``
  (each run starts its own local Ray instance: that is in its start-up time).
- ``ray-data-http``: Ray Data LLM's ``HttpRequestProcessorConfig`` on the
  emulators' ``/v1/chat/completions`` (non-streaming). It takes one URL, so
  the rows are split in H shards, one processor per host, batch size S (at
  most S in flight per host), and the outputs unioned. Needs ``aiohttp``
  besides the ray extra; skipped with a message when it does not import.

Usage::

    python benchmarks/ray_batch.py [--prompts 1000] [--hosts 4] [--slots 4] [--tps 100]
                                   [--tokens 10] [--ways single,ray-1,ray-2,ray-data-http]
                                   [--no-fault]

Figures from a shared or loaded machine mean little; rerun on a quiet box.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional

WAYS = ("single", "ray-1", "ray-2", "ray-data-http")


class _Host:
    """``streamkit emulate`` in its own process."""

    def __init__(self, slots: int, tps: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamkit", "emulate", "--port", "0", "--parallel",
             str(slots), "--tokens-per-second", str(tps)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@contextlib.contextmanager
def _hosts(args: argparse.Namespace) -> Iterator[List[_Host]]:
    hosts = [_Host(args.slots, args.tps) for _ in range(args.hosts)]
    try:
        yield hosts
    finally:
        for host in hosts:
            host.kill()


@dataclass
class Outcome:
    way: str
    fault: bool
    startup_s: float = 0.0
    wall_s: float = 0.0
    steady_per_s: float = 0.0
    ok: int = 0
    failed: int = 0
    duplicates: int = 0
    missing: int = 0
    note: str = ""

    def line(self) -> str:
        head = f"{self.way:<14} {'host killed' if self.fault else 'clean':<11}"
        if self.note and not self.ok:
            return f"{head} {self.note}"
        return (f"{head} start-up {self.startup_s:6.1f} s  wall {self.wall_s:6.1f} s  "
                f"steady {self.steady_per_s:7.1f}/s  ok {self.ok:5d}  failed {self.failed:4d}  "
                f"dup {self.duplicates:3d}  missing {self.missing:4d}"
                + (f"  ({self.note})" if self.note else ""))


def _write_prompts(path: str, n: int) -> List[str]:
    ids = [f"p{i}" for i in range(n)]
    with open(path, "w", encoding="utf-8") as f:
        for key in ids:
            f.write(json.dumps({"id": key, "prompt": f"benchmark prompt {key}"}) + "\n")
    return ids


def _count_lines(path: str) -> int:
    try:
        with open(path, "rb") as f:
            return f.read().count(b"\n")
    except FileNotFoundError:
        return 0


def _tally(outcome: Outcome, ids: List[str], answered: List[str], failed: int) -> None:
    outcome.ok = len(set(answered))
    outcome.duplicates = len(answered) - len(set(answered))
    outcome.failed = failed
    outcome.missing = len(set(ids) - set(answered)) - failed


def run_cli(way: str, args: argparse.Namespace, tmp: str, ids: List[str], prompts: str,
            fault: bool) -> Outcome:
    """One ``streamkit batch`` run; with ``fault``, kill a host a third of the way in."""
    out = os.path.join(tmp, f"{way}-{int(fault)}.jsonl")
    outcome = Outcome(way, fault)
    with _hosts(args) as hosts:
        command = [sys.executable, "-m", "streamkit", "batch", prompts, "-o", out, "-m", "demo",
                   "--option", f"num_predict={args.tokens}", "-q"]
        for host in hosts:
            command += ["--host", f"{host.url}={args.slots}"]
        if way.startswith("ray-"):
            command += ["--ray", "--ray-actors", way.split("-")[1]]
        started = time.perf_counter()
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        first: Optional[float] = None
        killed = False
        while proc.poll() is None:
            lines = _count_lines(out)
            if first is None and lines:
                first = time.perf_counter()
            if fault and not killed and lines >= len(ids) // 3:
                hosts[0].kill()
                killed = True
            time.sleep(0.02)  # polling the output another process writes
        ended = time.perf_counter()
        assert proc.stderr is not None
        err = proc.stderr.read().decode("utf-8", "replace")
        proc.stderr.close()
    with open(out, encoding="utf-8") as f:
        answered = [json.loads(line)["id"] for line in f]
    _tally(outcome, ids, answered, _count_lines(out.replace(".jsonl", ".errors.jsonl")))
    first = first if first is not None else ended
    outcome.startup_s = first - started
    outcome.wall_s = ended - started
    outcome.steady_per_s = (len(answered) - 1) / max(ended - first, 1e-9)
    if proc.returncode not in (0, 1):
        outcome.note = f"exit {proc.returncode}: {err.strip().splitlines()[-1:]}"
    return outcome


def run_ray_data(args: argparse.Namespace, ids: List[str], fault: bool) -> Outcome:
    """Ray Data LLM's HTTP processor, one per host on a shard of the rows."""
    outcome = Outcome("ray-data-http", fault)
    try:
        import ray
        from ray.data.llm import HttpRequestProcessorConfig, build_processor
    except ImportError as exc:
        outcome.note = f"not run: {exc} (pip install 'streamkit[ray]' aiohttp)"
        return outcome
    started = time.perf_counter()
    # One actor per host plus the preprocessing tasks: more logical CPUs than
    # this machine may have (the work is waiting on sockets, not computing).
    ray.init(address="local", num_cpus=2 * args.hosts + 2, include_dashboard=False,
             logging_level="ERROR")
    ray.data.DataContext.get_current().enable_progress_bars = False
    answered: List[str] = []
    first: Optional[float] = None
    try:
        with _hosts(args) as hosts:
            shards = []
            for k, host in enumerate(hosts):
                config = HttpRequestProcessorConfig(
                    url=host.url + "/v1/chat/completions", batch_size=args.slots,
                    concurrency=1)
                processor = build_processor(
                    config,
                    preprocess=lambda row: {"id": row["id"], "payload": {
                        "model": "demo", "max_tokens": args.tokens,
                        "messages": [{"role": "user", "content": row["prompt"]}]}},
                    postprocess=lambda row: {"id": row["id"],
                                             "text": str(row["http_response"])[:20]})
                rows = [{"id": i, "prompt": f"benchmark prompt {i}"}
                        for i in ids[k::len(hosts)]]
                shards.append(processor(ray.data.from_items(rows)))
            dataset = shards[0].union(*shards[1:])
            killed = False
            try:
                for row in dataset.iter_rows():
                    if first is None:
                        first = time.perf_counter()
                    answered.append(row["id"])
                    if fault and not killed and len(answered) >= len(ids) // 3:
                        hosts[0].kill()
                        killed = True
            except Exception as exc:  # the job fails as a whole when a row fails
                outcome.note = f"job failed: {type(exc).__name__}"
    finally:
        ray.shutdown()
    ended = time.perf_counter()
    _tally(outcome, ids, answered, 0)
    first = first if first is not None else ended
    outcome.startup_s = first - started
    outcome.wall_s = ended - started
    outcome.steady_per_s = (len(answered) - 1) / max(ended - first, 1e-9)
    return outcome


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=1000)
    parser.add_argument("--hosts", type=int, default=4)
    parser.add_argument("--slots", type=int, default=4, help="slots per host (URL=N)")
    parser.add_argument("--tps", type=float, default=100.0, help="tokens/s per slot")
    parser.add_argument("--tokens", type=int, default=10, help="tokens per answer")
    parser.add_argument("--ways", default=",".join(WAYS))
    parser.add_argument("--no-fault", action="store_true", help="skip the host-killed runs")
    args = parser.parse_args(argv)
    ways = [w for w in args.ways.split(",") if w]
    unknown = set(ways) - set(WAYS)
    if unknown:
        parser.error(f"unknown way(s): {', '.join(sorted(unknown))}")
    ideal = args.prompts * args.tokens / (args.hosts * args.slots * args.tps)
    print(f"prompts={args.prompts} hosts={args.hosts}x{args.slots} slots tokens/s={args.tps:g} "
          f"tokens={args.tokens}; server-bound ideal {ideal:.1f} s "
          f"({args.prompts / ideal:.0f}/s)")
    results: Dict[str, List[Outcome]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        prompts = os.path.join(tmp, "prompts.jsonl")
        ids = _write_prompts(prompts, args.prompts)
        for way in ways:
            for fault in (False,) if args.no_fault else (False, True):
                if way == "ray-data-http":
                    outcome = run_ray_data(args, ids, fault)
                else:
                    outcome = run_cli(way, args, tmp, ids, prompts, fault)
                results.setdefault(way, []).append(outcome)
                print(outcome.line(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
