"""How accurate is ``streamkit bench``, and how much does ``--processes`` help?

Part 1 (accuracy): the built-in emulator paced at 50 tok/s and 300 ms to the
first token, at concurrency 1 and 8; prints TTFT/TPOT p50 against the pacing
and the emulator's own stamps, and the measured client floor.

Part 2 (headroom): the client floor (calibration against a stamping
emulator in its own process) at heavy loads, 1 process vs 2, alternating
runs, medians. Lower lag p99 and fewer coalesced chunks = more headroom.

Part 3 (``--repro N``, only when asked): N identical runs at ``--repro-streams``
streams with the default (automatic) process count, then the spread of
throughput and TTFT p50 across them (the goal: within ±5% of their mean).

    python benchmarks/bench_selfcheck.py [--streams 32,64,128] [--reps 3]
    python benchmarks/bench_selfcheck.py --skip-accuracy --streams "" --repro 3

Figures depend on the machine and what else runs on it; the script prints
the load average so a reader can judge.
"""

from __future__ import annotations

import argparse
import os
import statistics
from typing import Any, Dict, List

from streamkit.bench import BenchConfig, LoadPlan, calibrate, run_bench
from streamkit.emulator import EmulatorConfig


def accuracy(concurrency: int, requests: int) -> None:
    emulator = EmulatorConfig(tokens_per_second=50.0, first_token_delay=0.3, parallel=16,
                              response_tokens=(4096, 4096))
    run = run_bench(BenchConfig(model="demo", host="builtin", emulator=emulator,
                                concurrency=(concurrency,), requests=requests,
                                warmup=concurrency, num_predict=64))
    point = run.points[0]
    m = point.summary.metrics
    ok = [r for r in point.records if r.ok and not r.warmup]
    server_ttft = statistics.median(r.prompt_eval_duration / 1e6 for r in ok
                                    if r.prompt_eval_duration is not None)
    cal = point.calibration
    tpot = m["tpot_ms"].p50
    assert cal is not None and tpot is not None
    print(f"concurrency {concurrency:>3}: TTFT p50 {m['ttft_ms'].p50:7.2f} ms "
          f"(emulator 300 ms, its own stamps {server_ttft:6.2f} ms, floor p50 "
          f"{cal.ttft_ms.p50:.2f} / p99 {cal.ttft_ms.p99:.2f} ms) | TPOT p50 "
          f"{tpot:6.3f} ms (20 ms: {100 * (tpot / 20 - 1):+.2f}%) | "
          f"ICL p50 {m['icl_ms'].p50:6.2f} ms | lag p99 {cal.lag_ms.p99:.2f} ms")


def floor(streams: int, processes: int) -> Dict[str, float]:
    cal = calibrate(LoadPlan(concurrency=streams, requests=2 * streams),
                    tokens_per_second=50.0, processes=processes)
    return {"lag_p50": cal.lag_ms.p50 or 0.0, "lag_p99": cal.lag_ms.p99 or 0.0,
            "coalesced": cal.coalesced_frac or 0.0, "chunks_per_s": cal.chunks_per_s,
            "ttft_floor_p50": cal.ttft_ms.p50 or 0.0}


def headroom(streams_list: List[int], reps: int) -> None:
    print("\nclient floor at heavy load (median of runs; processes alternate):")
    print(f"{'streams':>8} {'procs':>5} {'chunks/s':>9} {'lag p50':>8} {'lag p99':>8} "
          f"{'coalesced':>9} {'TTFT floor':>10}")
    for streams in streams_list:
        results: Dict[int, List[Dict[str, float]]] = {1: [], 2: []}
        for _ in range(reps):
            for procs in (1, 2):
                results[procs].append(floor(streams, procs))
        for procs, runs in results.items():
            med: Dict[str, Any] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            print(f"{streams:>8} {procs:>5} {med['chunks_per_s']:>9.0f} "
                  f"{med['lag_p50']:>8.2f} {med['lag_p99']:>8.2f} "
                  f"{med['coalesced']:>9.1%} {med['ttft_floor_p50']:>10.2f}")


def reproducibility(streams: int, runs: int) -> None:
    emulator = EmulatorConfig(tokens_per_second=50.0, first_token_delay=0.3, parallel=streams,
                              max_queue=100_000, response_tokens=(4096, 4096))
    print(f"\n{runs} identical runs at {streams} streams, default settings (processes "
          "chosen automatically, calibration on, no warm-up):")
    tput, ttft = [], []
    for _ in range(runs):
        run = run_bench(BenchConfig(model="demo", host="builtin", emulator=emulator,
                                    concurrency=(streams,), requests=2 * streams,
                                    num_predict=128))
        point = run.points[0]
        s = point.summary
        assert point.sharding is not None
        tput.append(s.output_tok_per_s or 0.0)
        ttft.append(s.metrics["ttft_ms"].p50 or 0.0)
        print(f"  {point.sharding.sentence()}: {tput[-1]:8.1f} tok/s, TTFT p50 {ttft[-1]:7.1f} ms")
    for name, values in (("throughput", tput), ("TTFT p50", ttft)):
        mean = statistics.fmean(values)
        spread = max(abs(v / mean - 1) for v in values) if mean else 0.0
        print(f"  {name}: mean {mean:.1f}, every run within ±{spread:.1%} of it")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", default="32,64,128")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--repro", type=int, default=0, metavar="N")
    parser.add_argument("--repro-streams", type=int, default=256)
    args = parser.parse_args()
    print(f"cpus {os.cpu_count()}, load average {os.getloadavg()}")
    if not args.skip_accuracy:
        accuracy(1, 10)
        accuracy(8, 32)
    if args.streams:
        headroom([int(s) for s in args.streams.split(",")], args.reps)
    if args.repro:
        reproducibility(args.repro_streams, args.repro)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
