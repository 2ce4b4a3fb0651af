"""``streamkit bench``: measure TTFT, TPOT and throughput; ``bench compare`` runs."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Any, Iterator, List

from ..batch.config import parse_option
from ..config import API_KEY_ENV
from ..errors import ConfigError
from .common import (
    BUILTIN_HOST,
    BUILTIN_MODEL,
    EXIT_FAILED,
    EXIT_OK,
    add_host_argument,
    argtype,
    check_output_path,
)


def _int_list(text: str) -> List[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 1,4,16, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1 like 1,4,16, got {text!r}")
    return values


def _float_list(text: str) -> List[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected rates like 2 or 1,2,4, got {text!r}") from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected rates > 0, got {text!r}")
    return values


def _add_bench_load_arguments(p: argparse.ArgumentParser) -> None:
    load = p.add_argument_group("load")
    mode = load.add_mutually_exclusive_group()
    mode.add_argument("--concurrency", type=_int_list, default=[1], metavar="N[,N...]",
                      help="closed loop: N streams at once, one point per value (default 1)")
    mode.add_argument("--rate", "--request-rate", dest="rate", type=_float_list, default=None,
                      metavar="R[,R...]",
                      help="open loop: R requests/s on a precomputed schedule, one point each")
    load.add_argument("--arrival", choices=("constant", "poisson", "gamma"), default="constant",
                      help="open-loop arrivals (default constant; poisson and gamma are seeded)")
    load.add_argument("--gamma-shape", type=float, default=1.0, metavar="K",
                      help="--arrival gamma: shape K (1 = poisson, < 1 burstier, > 1 smoother)")
    load.add_argument("--ramp", action="store_true",
                      help="with --rate FROM,TO: one point whose rate rises linearly FROM -> TO")
    load.add_argument("--replay", default=None, metavar="REQUESTS.JSONL",
                      help="re-run the schedule of a previous run's requests.jsonl (open loop)")
    load.add_argument("--max-concurrency", type=int, default=None, metavar="N",
                      help="open loop: at most N in flight; later ones wait in the client")
    load.add_argument("--requests", "--num-prompts", dest="requests", type=int, default=None,
                      metavar="N",
                      help="requests per point (default max(10, 4 x concurrency), "
                           "or 10 s of arrivals)")
    load.add_argument("--duration", type=float, default=None, metavar="S",
                      help="stop starting requests after S seconds per point")
    load.add_argument("--warmup", type=int, default=0, metavar="K",
                      help="K requests at the same load first, left out of the statistics")
    load.add_argument("--processes", type=int, default=None, metavar="N",
                      help="shard the load over N processes (default: as many as the load "
                           "needs, decided per point and printed; 1 forces one)")
    load.add_argument("--seed", type=int, default=0, help="seed for prompts and schedules")
    load.add_argument("--repeat", type=int, default=1, metavar="K",
                      help="run every point K times; report means with a 95%% confidence "
                           "interval")
    load.add_argument("--search", action="store_true",
                      help="find the highest open-loop rate whose goodput stays >= --goodput "
                           "(needs --slo; --rate R sets where it starts)")
    load.add_argument("--goodput", type=float, default=0.95, metavar="FRACTION",
                      help="--search target: share of requests meeting the SLO (default 0.95)")
    load.add_argument("--search-probes", type=int, default=12, metavar="N",
                      help="--search: at most N probe rates (default 12)")


def _add_bench_request_arguments(p: argparse.ArgumentParser) -> None:
    req = p.add_argument_group("requests")
    req.add_argument("-m", "--model", default=None,
                     help="model name (default with --host builtin: demo)")
    req.add_argument("--prompts", "--prompt-file", dest="prompt_file", default=None,
                     metavar="FILE",
                     help="prompts in a batch format (.jsonl, .txt, .csv), used round-robin")
    req.add_argument("--input-tokens", type=int, default=None, metavar="N",
                     help="generated prompts of ~N tokens, sized from the server's own "
                          "prompt_eval_count (no tokenizer)")
    req.add_argument("--prompt-words", type=int, default=32, metavar="N",
                     help="without --prompt-file: generated prompts of N words (default 32)")
    req.add_argument("--num-predict", "--max-tokens", dest="num_predict", type=int, default=64,
                     metavar="N", help="output tokens per request (default 64; llama.cpp "
                                       "with --dialect openai needs a limit)")
    req.add_argument("--think", action="store_true", help="ask the model to think first")
    req.add_argument("-O", "--option", action="append", type=argtype(parse_option), default=[],
                     metavar="KEY=VALUE", help="an Ollama option, e.g. -O temperature=0")
    add_host_argument(req)  # type: ignore[arg-type]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "bench", help="measure TTFT, TPOT, throughput; `bench compare A B` compares runs",
        usage="%(prog)s [options]   (run a benchmark)\n"
              "       %(prog)s compare RUN [RUN ...] [-o PNG]   (compare earlier runs)",
        description="Benchmark a server: closed-loop concurrency sweeps or open-loop rates, "
                    "with the client's own accuracy measured and printed.")
    _add_bench_load_arguments(p)
    _add_bench_request_arguments(p)
    out = p.add_argument_group("output")
    out.add_argument("--slo", default=None, metavar="ttft=MS,tpot=MS,e2e=MS",
                     help="report goodput: requests meeting every given objective")
    out.add_argument("-o", "--output", "--out", dest="out", default=None, metavar="DIR",
                     help="write run.json, requests.jsonl, summary.csv, charts and a "
                          "self-contained report.html here")
    out.add_argument("--no-plot", action="store_true", help="no PNG charts with -o")
    out.add_argument("--no-calibrate", action="store_true",
                     help="skip measuring the client's floor against the built-in emulator")
    out.add_argument("--no-load", action="store_true", help="do not preload the model")
    out.add_argument("-q", "--quiet", action="store_true", help="no progress notes on stderr")
    embed = p.add_argument_group("embeddings (see streamkit/cli/bench_embed.py)")
    embed.add_argument("--embed", action="store_true",
                       help="measure embedding: inputs/s and request latency, next to the "
                            "official ollama client")
    embed.add_argument("--embed-batch", type=int, default=64, metavar="N",
                       help="with --embed: inputs per request (default 64)")
    nested = p.add_subparsers(dest="bench_command", title="sub-commands", metavar="")
    cmp = nested.add_parser("compare", prog="streamkit bench compare",
                            help="put the results of earlier runs side by side (no benchmark)",
                            description="Put the results of earlier `bench -o DIR` runs side "
                                        "by side.")
    cmp.add_argument("runs", nargs="+", metavar="RUN",
                     help="-o directories (or their run.json) of earlier runs")
    cmp.add_argument("-o", "--output", "--out", dest="compare_out", default=None,
                     metavar="PNG", help="also draw the runs' load charts overlaid into this PNG")
    cmp.add_argument("--force", action="store_true",
                     help="compare runs whose load shape or token budgets differ (labelled)")
    p.set_defaults(func=_cmd_bench)


def _bench_config(args: argparse.Namespace) -> Any:
    from ..bench import BenchConfig, Slo, read_prompt_file, read_replay

    model = args.model or (BUILTIN_MODEL if args.host == BUILTIN_HOST else None)
    if model is None:
        raise ConfigError("bench needs a model: -m MODEL (or --host builtin)")
    prompts = read_prompt_file(args.prompt_file, model) if args.prompt_file else ()
    return BenchConfig(
        model=model, host=args.host, dialect=args.dialect,
        concurrency=tuple(args.concurrency), rates=tuple(args.rate or ()),
        arrival=args.arrival, max_concurrency=args.max_concurrency, requests=args.requests,
        duration=args.duration, warmup=args.warmup, prompts=prompts,
        prompt_file=args.prompt_file, prompt_words=args.prompt_words,
        num_predict=args.num_predict, options=dict(args.option),
        think=True if args.think else None, slo=Slo.parse(args.slo) if args.slo else None,
        seed=args.seed, processes=args.processes, calibrate=not args.no_calibrate,
        load_model=not args.no_load, repeat=args.repeat, search=args.search,
        goodput_target=args.goodput, search_max_probes=args.search_probes,
        arrival_shape=args.gamma_shape, ramp=args.ramp, input_tokens=args.input_tokens,
        replay=read_replay(args.replay) if args.replay else (), replay_file=args.replay)


def _bench_compare(args: argparse.Namespace) -> int:
    from ..bench import format_compare, load_run
    from ..bench.compare import mismatches

    runs = [(path.rstrip("/\\"), load_run(path)) for path in args.runs]
    differ = mismatches(runs)
    if differ and not args.force:
        raise ConfigError("these runs do not measure the same load: " + "; ".join(differ)
                          + " (use --force to compare them anyway)")
    for line in differ:
        print(f"WARNING: not like for like: {line}")
    print(format_compare(runs))
    if args.compare_out:
        from ..bench import plot
        series = [(name, [p["summary"] for p in data["points"]]) for name, data in runs]
        sub = " · ".join(f"{name}: {data['config'].get('model')} on "
                         f"{data['environment'].get('host')} {data['started_at'][:10]}"
                         for name, data in runs)
        print(f"chart: {plot.render_compare(series, args.compare_out, sub)}")
    return EXIT_OK


@contextlib.contextmanager
def _api_key_in_env(args: argparse.Namespace) -> Iterator[None]:
    """``--api-key`` as the dialect's key variable while the benchmark runs: every
    Client it builds, in this process and in its shard processes, reads it."""
    key = getattr(args, "api_key", None)
    if key is None:
        yield
        return
    name = API_KEY_ENV[args.dialect]
    previous = os.environ.get(name)
    os.environ[name] = key.reveal()
    try:
        yield
    finally:
        if previous is None:
            del os.environ[name]
        else:
            os.environ[name] = previous


def _bench_run(args: argparse.Namespace) -> int:
    check_output_path(args.out)
    with _api_key_in_env(args):
        return _bench_measure(args)


def _bench_measure(args: argparse.Namespace) -> int:
    from ..bench import format_point, run_bench, write_outputs

    config = _bench_config(args)
    note = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    run = run_bench(config, on_status=note,
                    on_point=lambda point: print(format_point(point) + "\n", flush=True))
    from ..bench.stats import format_intervals, repeat_intervals

    groups = repeat_intervals([p.summary.as_dict() for p in run.points])
    if groups:
        print(format_intervals(groups) + "\n")
    if run.search is not None:
        print(run.search.sentence())
    if run.input_tokens is not None:
        print(run.input_tokens.sentence)
    if run.model_load:
        server = run.model_load.get("server_load_ms")
        print(f"model load: {run.model_load['wall_ms']:.0f} ms wall"
              + (f", server load_duration {server:.0f} ms" if server is not None else ""))
    if args.out:
        from ..bench import plot
        if not args.no_plot and not plot.available():
            print(f"note: {plot.MISSING}", file=sys.stderr)
        for path in write_outputs(run, args.out, plots=not args.no_plot):
            print(f"wrote {path}")
    return EXIT_FAILED if any(p.summary.ok == 0 for p in run.points) else EXIT_OK


def _cmd_bench(args: argparse.Namespace) -> int:
    """Run a benchmark, or compare earlier ones. Exit 1 when a point had no
    successful request, 2 on bad arguments, 130 on Ctrl-C."""
    if args.bench_command == "compare":
        return _bench_compare(args)
    if args.embed:
        from .bench_embed import bench_embed
        return bench_embed(args)
    return _bench_run(args)
