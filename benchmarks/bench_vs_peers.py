"""``streamkit bench`` against aiperf and guidellm, each checked against the server's truth.

One paced emulator runs in its own process (300 ms to the first token, then
50 tok/s, i.e. 20 ms per output token, 128 tokens per answer, a slot for
every stream so nothing queues inside the server). It records, for every
generation, when it first read the request and when it wrote each token to
the socket: that record is the truth each tool is compared with. For the
same request count at each concurrency, every tool runs closed loop against
its OpenAI-compatible ``/v1`` endpoint (streamkit also natively), and the
script prints what each reported (TTFT p50/p99, TPOT, tok/s, req/s), its
error against the server's record of the same requests, the CPU time the
tool used, and which tool came closest at each concurrency.

The peers are not dependencies of streamkit. They run from their own
virtual environments, made only when asked:

    python benchmarks/bench_vs_peers.py --install           # fresh venvs in a temp dir
    python benchmarks/bench_vs_peers.py --aiperf-venv A --guidellm-venv G
    STREAMKIT_AIPERF_VENV=A STREAMKIT_GUIDELLM_VENV=G python benchmarks/bench_vs_peers.py

Without either, only streamkit runs. The peers need a tokenizer and this
script needs no network beyond the package index: it writes a word-level
``tokenizer.json`` for the emulator's vocabulary (with the ``tokenizers``
library the peers already depend on) and passes its directory by path, with
``HF_HUB_OFFLINE=1``. See ``docs/bench.md`` (*Against other tools*).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from streamkit.emulator import Emulator, EmulatorConfig, expected

PEERS = {"aiperf": "aiperf==0.13.0", "guidellm": "guidellm==0.8.1"}
MODEL = "demo"
TTFT_S = 0.3
TOKENS_PER_S = 50.0
OUTPUT_TOKENS = 128
PROMPT_TOKENS = 32
METRICS = ("ttft_p50", "ttft_p99", "tpot", "tok_s", "req_s")


# -- the server and its record -------------------------------------------------------------

def _install_recorder(records: List[Dict[str, Any]]) -> None:
    """Record, per generation, when the server first read its request and when it
    wrote each token (perf_counter_ns).

    The emulator keeps no per-request log, so this wraps three of its internals
    in the server process only: ``Conn.data_received`` (the first bytes of a
    request: parsing may wait behind other work on the loop, and that wait is
    the server's), ``run_stream`` (one call per streamed generation) and
    ``_lines`` (called right before each write of token chunks). Private
    names: if they move, this fails loudly at start.
    """
    from streamkit._emulator import api, engine, http

    lines_of = engine._lines
    run_stream = engine.run_stream  # what api calls, by the name it imported
    received = http.Conn.data_received
    live: Dict[int, Dict[str, Any]] = {}

    def data_received(conn: Any, data: bytes) -> None:
        # clients do not pipeline: bytes after a response began belong to the next request
        if not getattr(conn, "_truth_rx_ns", 0):
            conn._truth_rx_ns = time.perf_counter_ns()
        received(conn, data)

    def lines(job: Any, pieces: Any, i: int, end: int, stamp: bool) -> Any:
        now = time.perf_counter_ns()
        rec = live.get(id(job))
        if rec is not None:
            rec["first_ns"] = rec["first_ns"] or now
            rec["last_ns"] = now
            rec["tokens"] += end - i
            # how late the last chunk of this write is against its own schedule
            due = job.start + job.config.first_token_delay + pieces[end - 1][2] / TOKENS_PER_S
            rec["late_ms"] = max(rec["late_ms"], (time.monotonic() - due) * 1000)
        return lines_of(job, pieces, i, end, stamp)

    async def recorded(job: Any) -> str:
        rx_ns = getattr(job.conn, "_truth_rx_ns", 0) or job.request_ns
        job.conn._truth_rx_ns = 0
        rec = {"read_ns": min(rx_ns, job.request_ns), "first_ns": 0, "last_ns": 0,
               "tokens": 0, "late_ms": 0.0}
        live[id(job)] = rec
        try:
            outcome = await run_stream(job)
        finally:
            del live[id(job)]
        if outcome == "completed" and rec["tokens"]:
            records.append(rec)
        return outcome

    engine._lines = lines
    api.run_stream = recorded  # type: ignore[attr-defined]
    http.Conn.data_received = data_received  # type: ignore[method-assign,assignment]


def _serve(config: EmulatorConfig, conn: Any) -> None:
    """Server process: report the port, then answer ``collect`` with the records
    since the last call and the process CPU seconds; ``stop`` ends it."""
    records: List[Dict[str, Any]] = []
    _install_recorder(records)
    with Emulator(config) as emulator:
        conn.send(emulator.port)
        while True:
            command = conn.recv()
            if command == "stop":
                break
            taken, records[:] = list(records), []
            conn.send((taken, time.process_time()))


class Server:
    """The paced emulator in a process of its own (so no tool shares its interpreter)."""

    def __init__(self, streams: int) -> None:
        self.config = EmulatorConfig(
            tokens_per_second=TOKENS_PER_S, first_token_delay=TTFT_S, parallel=streams,
            max_queue=100_000, response_tokens=(OUTPUT_TOKENS, OUTPUT_TOKENS))
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(self.config, child), daemon=True)
        self._proc.start()
        if not self._conn.poll(60):
            self._proc.kill()
            raise RuntimeError("the emulator process did not start")
        self.port: int = self._conn.recv()
        self.url = f"http://127.0.0.1:{self.port}"
        self._cpu = 0.0

    def collect(self) -> Tuple[List[Dict[str, Any]], float]:
        """The generations recorded since the last call, and the server CPU seconds."""
        self._conn.send("collect")
        records, cpu = self._conn.recv()
        used, self._cpu = cpu - self._cpu, cpu
        return records, used

    def close(self) -> None:
        self._conn.send("stop")
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.kill()


@dataclass
class Figures:
    """One tool's (or the server's) figures for one point; None = not reported."""

    ttft_p50: Optional[float]   # ms
    ttft_p99: Optional[float]   # ms
    tpot: Optional[float]       # ms per output token after the first (p50)
    tok_s: Optional[float]      # output tokens/s
    req_s: Optional[float]
    requests: int = 0


def _pct(values: Sequence[float], q: float) -> float:
    """Percentile with linear interpolation (as numpy's default)."""
    data = sorted(values)
    pos = (len(data) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def truth(records: List[Dict[str, Any]], requests: int) -> Tuple[Figures, float]:
    """The server's figures for the last ``requests`` generations it served (a tool's
    warm-up or probe requests come first), and how late its writes ran (p99, ms)."""
    recs = sorted(records, key=lambda r: r["read_ns"])[-requests:]
    ttft = [(r["first_ns"] - r["read_ns"]) / 1e6 for r in recs]
    tpot = [(r["last_ns"] - r["first_ns"]) / 1e6 / (r["tokens"] - 1) for r in recs
            if r["tokens"] > 1]
    span = (max(r["last_ns"] for r in recs) - min(r["read_ns"] for r in recs)) / 1e9
    tokens = sum(r["tokens"] for r in recs)
    figures = Figures(_pct(ttft, 50), _pct(ttft, 99), _pct(tpot, 50), tokens / span,
                      len(recs) / span, len(recs))
    return figures, _pct([r["late_ms"] for r in recs], 99)


def ideal(concurrency: int) -> Figures:
    """What a perfect closed-loop client would measure: the pacing alone."""
    e2e = TTFT_S + (OUTPUT_TOKENS - 1) / TOKENS_PER_S
    return Figures(TTFT_S * 1000, TTFT_S * 1000, 1000 / TOKENS_PER_S,
                   concurrency * OUTPUT_TOKENS / e2e, concurrency / e2e)


# -- the tools -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Point:
    """One comparison point: the closed-loop load every tool gets."""

    concurrency: int
    requests: int


@dataclass
class Outcome:
    """What one tool reported for one point, with its cost."""

    tool: str
    reported: Optional[Figures]
    cpu_s: float
    wall_s: float
    error: str = ""


Runner = Callable[[Point, str, Path], Figures]


def _run(cmd: List[str], log: Path, env: Optional[Dict[str, str]] = None,
         timeout: float = 1800) -> None:
    """Run one tool to completion, its output in ``log``; raise on failure."""
    with open(log, "w", encoding="utf-8") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                              timeout=timeout, check=False)
    if proc.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-5:]
        raise RuntimeError(f"exit {proc.returncode}: " + " | ".join(tail))


def streamkit_runner(dialect: str) -> Runner:
    """``streamkit bench`` with its defaults, only the load and the request shape given."""
    def run(point: Point, url: str, work: Path) -> Figures:
        out = work / "out"
        _run([sys.executable, "-m", "streamkit", "bench", "--host", url, "--dialect", dialect,
              "-m", MODEL, "--concurrency", str(point.concurrency),
              "--requests", str(point.requests), "--num-predict", str(OUTPUT_TOKENS),
              "--prompt-words", str(PROMPT_TOKENS), "--out", str(out), "--no-plot"],
             work / "log.txt")
        s = json.loads((out / "run.json").read_text())["points"][0]["summary"]
        m = s["metrics"]
        return Figures(m["ttft_ms"]["p50"], m["ttft_ms"]["p99"], m["tpot_ms"]["p50"],
                       s["output_tok_per_s"], s["req_per_s"], s["ok"])
    return run


def aiperf_runner(venv: Path, tokenizer: Path) -> Runner:
    """aiperf's closed loop (``--concurrency``), streaming chat, our tokenizer by path."""
    def run(point: Point, url: str, work: Path) -> Figures:
        out = work / "out"
        _run([str(venv / "bin" / "aiperf"), "profile", "-m", MODEL, "--url", url,
              "--endpoint-type", "chat", "--streaming", "--tokenizer", str(tokenizer),
              "--concurrency", str(point.concurrency), "--request-count", str(point.requests),
              "--prompt-input-tokens-mean", str(PROMPT_TOKENS),
              "--prompt-input-tokens-stddev", "0",
              "--prompt-output-tokens-mean", str(OUTPUT_TOKENS),
              "--prompt-output-tokens-stddev", "0", "--random-seed", "1",
              "--output-artifact-dir", str(out), "--ui-type", "none"],
             work / "log.txt", env=_peer_env(offline=False))
        d = json.loads((out / "profile_export_aiperf.json").read_text())
        return Figures(d["time_to_first_token"]["p50"], d["time_to_first_token"]["p99"],
                       d["inter_token_latency"]["p50"], d["output_token_throughput"]["avg"],
                       d["request_throughput"]["avg"], int(d["request_count"]["avg"]))
    return run


def guidellm_runner(venv: Path, tokenizer: Path) -> Runner:
    """guidellm's ``concurrent`` profile with a ``max_requests`` constraint (a scenario file)."""
    def run(point: Point, url: str, work: Path) -> Figures:
        out = work / "out.json"
        scenario = {"spec": {
            "backend": {"kind": "openai_http", "target": url, "model": MODEL,
                        "request_format": "/v1/chat/completions",
                        # it probes GET /health first, which an Ollama-style server lacks
                        "validate_backend": False},
            "profile": {"kind": "concurrent", "streams": [point.concurrency]},
            "data": [{"kind": "synthetic_text", "prompt_tokens": PROMPT_TOKENS,
                      "output_tokens": OUTPUT_TOKENS}],
            "tokenizer": {"kind": "hf_auto", "model": str(tokenizer)},
            "constraints": [{"kind": "max_requests", "count": point.requests}],
            "outputs": [{"kind": "json", "path": str(out)}]}}
        path = work / "scenario.json"
        path.write_text(json.dumps(scenario))
        _run([str(venv / "bin" / "guidellm"), "run", "-c", str(path),
              "--disable-console-interactive"], work / "log.txt", env=_peer_env(offline=True))
        m = json.loads(out.read_text())["benchmarks"][0]["metrics"]

        def ok(name: str) -> Dict[str, Any]:
            return m[name]["successful"]  # type: ignore[no-any-return]
        ttft = ok("time_to_first_token_ms")["percentiles"]
        return Figures(ttft["p50"], ttft["p99"], ok("inter_token_latency_ms")["median"],
                       ok("output_tokens_per_second")["mean"], ok("requests_per_second")["mean"],
                       int(ok("time_to_first_token_ms")["count"]))
    return run


def _peer_env(*, offline: bool) -> Dict[str, str]:
    """The peers' environment: no telemetry; HF offline where the tool allows a local
    tokenizer path with it (aiperf 0.13 then looks the path up in the hub cache only)."""
    env = dict(os.environ, HF_HUB_DISABLE_TELEMETRY="1", DO_NOT_TRACK="1",
               TOKENIZERS_PARALLELISM="false")
    if offline:
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return env


def measure(name: str, runner: Runner, point: Point, server: Server, work: Path) -> Outcome:
    """Run one tool at one point; its CPU is what its process tree used (waited-for
    children included)."""
    work.mkdir(parents=True, exist_ok=True)
    server.collect()  # start this tool's record afresh
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    reported: Optional[Figures] = None
    error = ""
    try:
        reported = runner(point, server.url, work)
    except Exception as exc:  # a tool that fails is reported, the others still run
        error = str(exc)[:300]
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Outcome(name, reported, cpu, time.perf_counter() - t0, error)


# -- peers' environments and tokenizer --------------------------------------------------------

_TOKENIZER_SCRIPT = """
import json, os, sys
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
out, words = sys.argv[1], json.loads(sys.argv[2])
vocab = {"[UNK]": 0}
for word in words:
    vocab.setdefault(word, len(vocab))
tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
# one piece per emulator token: a word with its leading space, or punctuation
tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"\\s?[^\\s,.;!]+|[,.;!]|\\s+"), "isolated")
tok.decoder = decoders.Fuse()
os.makedirs(out, exist_ok=True)
tok.save(os.path.join(out, "tokenizer.json"))
with open(os.path.join(out, "tokenizer_config.json"), "w") as fh:
    json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "unk_token": "[UNK]",
               "model_max_length": 1000000}, fh)
"""


def emulator_vocabulary(config: EmulatorConfig, samples: int = 200) -> List[str]:
    """Every token the emulator streams, collected from :func:`expected` (public, pure)."""
    seen: Dict[str, None] = {}
    for i in range(samples):
        body = {"model": MODEL, "messages": [{"role": "user", "content": f"prompt {i}"}]}
        for token in expected(MODEL, body, config).tokens:
            seen.setdefault(token, None)
            seen.setdefault(token.lstrip(), None)
    return list(seen)


def make_tokenizer(python: Path, out: Path, config: EmulatorConfig) -> Path:
    """A word-level Hugging Face tokenizer whose tokens are the emulator's, so a peer's
    client-side count equals the server's; written with the ``tokenizers`` library of
    a peer's venv (no download)."""
    subprocess.run([str(python), "-c", _TOKENIZER_SCRIPT, str(out),
                    json.dumps(emulator_vocabulary(config))], check=True)
    return out


def install_peers(root: Path, python: str) -> Dict[str, Path]:
    """Fresh venvs under ``root``, one per peer, from the package index (minutes)."""
    venvs = {}
    for name, requirement in PEERS.items():
        venv = root / name
        print(f"installing {requirement} into its own venv ...", flush=True)
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
        _run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
              requirement], root / f"pip-{name}.log")
        venvs[name] = venv
    return venvs


# -- the comparison --------------------------------------------------------------------------

def errors(reported: Figures, server: Figures, nominal: Figures) -> Dict[str, Optional[float]]:
    """Each reported figure's error against the server's record, as a share of the
    nominal (paced) value, so every tool's error is weighed on the same scale even
    when its load made the server late."""
    out: Dict[str, Optional[float]] = {}
    for name in METRICS:
        got, want, scale = getattr(reported, name), getattr(server, name), getattr(nominal, name)
        out[name] = None if got is None or want is None else (got - want) / scale
    return out


def score(errs: Dict[str, Optional[float]]) -> float:
    """Mean absolute error over the figures the tool reported (lower is better)."""
    known = [abs(e) for e in errs.values() if e is not None]
    return statistics.fmean(known) if known else math.inf


def _score(row: Row) -> float:
    assert row.outcome.reported is not None
    return score(errors(row.outcome.reported, row.server, ideal(row.point.concurrency)))


def _cell(name: str, reported: Figures, server: Figures) -> str:
    got, want = getattr(reported, name), getattr(server, name)
    if got is None or want is None:
        return "n/a"
    if name in ("tok_s", "req_s"):
        return f"{100 * (got / want - 1):+.1f}%"
    return f"{got - want:+.1f} ms" if name != "tpot" else f"{got - want:+.2f} ms"


@dataclass
class Row:
    point: Point
    server: Figures
    late_p99_ms: float
    server_cpu_s: float
    outcome: Outcome


def table(rows: List[Row]) -> str:
    """Markdown: each tool's error against the server's record, per concurrency."""
    lines = ["| streams | tool | TTFT p50 | TTFT p99 | TPOT p50 | tok/s | req/s "
             "| CPU s | mean abs error |",
             "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for conc in sorted({r.point.concurrency for r in rows}):
        at = [r for r in rows if r.point.concurrency == conc]
        scored = [(_score(r), r) for r in at if r.outcome.reported is not None]
        best = min(scored, key=lambda sr: sr[0])[1].outcome.tool if scored else ""
        for r in at:
            o = r.outcome
            if o.reported is None:
                lines.append(f"| {conc} | {o.tool} | failed: {o.error[:60]} | | | | | "
                             f"{o.cpu_s:.1f} | |")
                continue
            cells = " | ".join(_cell(n, o.reported, r.server) for n in METRICS)
            mark = "**" if o.tool == best else ""
            lines.append(f"| {conc} | {mark}{o.tool}{mark} | {cells} | {o.cpu_s:.1f} | "
                         f"{100 * _score(r):.1f}% |")
    return "\n".join(lines)


def truth_lines(rows: List[Row]) -> str:
    out = []
    for r in rows:
        s, i = r.server, ideal(r.point.concurrency)
        assert s.tok_s is not None and i.tok_s is not None
        out.append(f"  {r.point.concurrency:>3} streams, {r.outcome.tool:<17} server: TTFT "
                   f"p50 {s.ttft_p50:.1f} / p99 {s.ttft_p99:.1f} ms, TPOT {s.tpot:.2f} ms, "
                   f"{s.tok_s:.1f} tok/s ({100 * (s.tok_s / i.tok_s - 1):+.1f}% of ideal "
                   f"{i.tok_s:.1f}), {s.req_s:.3f} req/s, writes late p99 "
                   f"{r.late_p99_ms:.1f} ms, server CPU {r.server_cpu_s:.1f} s")
    return "\n".join(out)


def verdict(rows: List[Row]) -> str:
    out = []
    for conc in sorted({r.point.concurrency for r in rows}):
        scored = sorted((_score(r), r.outcome.tool) for r in rows
                        if r.point.concurrency == conc and r.outcome.reported)
        if scored:
            ranking = ", ".join(f"{tool} {100 * sc:.1f}%" for sc, tool in scored)
            out.append(f"  {conc:>3} streams: most accurate {scored[0][1]} ({ranking})")
    return "\n".join(out)


def _venv_arg(given: Optional[str], env_name: str) -> Optional[Path]:
    value = given or os.environ.get(env_name)
    return Path(value) if value else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", default="1,16,64,256")
    parser.add_argument("--rounds", type=int, default=2,
                        help="requests per point = rounds x concurrency (at least --min-requests)")
    parser.add_argument("--min-requests", type=int, default=8)
    parser.add_argument("--install", action="store_true",
                        help="create the peers' venvs in a temp dir (needs the package index)")
    parser.add_argument("--aiperf-venv", help="an existing venv with aiperf "
                        "(or $STREAMKIT_AIPERF_VENV)")
    parser.add_argument("--guidellm-venv", help="an existing venv with guidellm "
                        "(or $STREAMKIT_GUIDELLM_VENV)")
    parser.add_argument("--peer-python", default=sys.executable,
                        help="interpreter for --install venvs (aiperf needs >= 3.10)")
    parser.add_argument("--tools", default="streamkit,streamkit-native,aiperf,guidellm")
    parser.add_argument("--keep", metavar="DIR", help="keep every tool's output here")
    parser.add_argument("--json", metavar="FILE", help="write the rows as JSON")
    args = parser.parse_args()

    points = [Point(c, max(args.min_requests, args.rounds * c))
              for c in (int(x) for x in args.concurrency.split(","))]
    wanted = args.tools.split(",")
    temp = Path(tempfile.mkdtemp(prefix="streamkit-peers-"))
    work = Path(args.keep) if args.keep else temp
    print(f"cpus {os.cpu_count()}, load average {os.getloadavg()}", flush=True)
    server = Server(max(p.concurrency for p in points))
    try:
        venvs = {"aiperf": _venv_arg(args.aiperf_venv, "STREAMKIT_AIPERF_VENV"),
                 "guidellm": _venv_arg(args.guidellm_venv, "STREAMKIT_GUIDELLM_VENV")}
        if args.install:
            venvs.update(install_peers(temp / "venvs", args.peer_python))
        runners: Dict[str, Runner] = {"streamkit": streamkit_runner("openai"),
                                      "streamkit-native": streamkit_runner("ollama")}
        present = {k: v for k, v in venvs.items() if v is not None}
        if present:
            tokenizer = make_tokenizer(next(iter(present.values())) / "bin" / "python",
                                       work / "tokenizer", server.config)
            if venvs["aiperf"]:
                runners["aiperf"] = aiperf_runner(venvs["aiperf"], tokenizer)
            if venvs["guidellm"]:
                runners["guidellm"] = guidellm_runner(venvs["guidellm"], tokenizer)
        missing = [t for t in wanted if t not in runners]
        if missing:
            print(f"skipping {', '.join(missing)}: no venv (use --install or --<tool>-venv)")
        rows: List[Row] = []
        for point in points:
            for tool in (t for t in wanted if t in runners):
                print(f"{tool} at {point.concurrency} streams, {point.requests} requests ...",
                      flush=True)
                outcome = measure(tool, runners[tool], point, server,
                                  work / f"c{point.concurrency}" / tool)
                records, server_cpu = server.collect()
                if outcome.error or not records:
                    print(f"  {tool} failed: {outcome.error or 'the server saw no request'}")
                    if not records:
                        continue
                figures, late = truth(records, outcome.reported.requests
                                      if outcome.reported else point.requests)
                rows.append(Row(point, figures, late, server_cpu, outcome))
        print(f"\nload average after: {os.getloadavg()}")
        print("\nthe server's record of each run (the truth each tool is checked against):")
        print(truth_lines(rows))
        print("\nerror against the server's record (reported - truth), CPU = the tool's "
              "process tree; bold = most accurate at that concurrency:\n")
        print(table(rows))
        print("\nmean absolute error over TTFT p50/p99, TPOT, tok/s and req/s, each as a share "
              "of its nominal value (300 ms, 20 ms, the ideal rates):")
        print(verdict(rows))
        if args.json:
            Path(args.json).write_text(json.dumps(
                [{"concurrency": r.point.concurrency, "requests": r.point.requests,
                  "tool": r.outcome.tool, "server": r.server.__dict__,
                  "reported": r.outcome.reported.__dict__ if r.outcome.reported else None,
                  "cpu_s": r.outcome.cpu_s, "wall_s": r.outcome.wall_s,
                  "server_cpu_s": r.server_cpu_s, "late_p99_ms": r.late_p99_ms,
                  "error": r.outcome.error} for r in rows], indent=1))
    finally:
        server.close()
        if not args.keep:
            shutil.rmtree(temp, ignore_errors=True)


if __name__ == "__main__":
    main()
