"""``streamkit bench --embed``: embedding throughput and latency, next to the official client.

For one group size it sends ``requests`` embed requests of ``group`` inputs
each, one at a time, with streamkit's :meth:`~streamkit.Client.embed` and
with the official ``ollama`` client's ``embed`` (same inputs, same groups),
``rounds`` times, alternating which client goes first so neither always
meets a warmer server. It reports, per client, inputs/s over all rounds and
the latency of a request (p50, p95, mean). Before measuring, the two clients'
vectors for the first group are compared.

The ``ollama`` package is optional (``pip install ollama``, or the ``dev``
extra); without it, or with the openai dialect (the official client speaks
only ``/api/embed``), only streamkit is measured and a note says why.

One request at a time on purpose: an embedding model has one slot in
Ollama, so concurrency only queues requests at the server; grouping is
what changes throughput.
"""

from __future__ import annotations

import importlib
import random
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..config import Timeouts
from ..errors import ConfigError

__all__ = ["EmbedBenchConfig", "EmbedRow", "OLLAMA_MISSING", "format_embed", "generated_inputs",
           "run_embed_bench"]

OLLAMA_MISSING = ("the official ollama client is not installed, so only streamkit is "
                  "measured; pip install ollama to compare")
_WORDS = ("river", "stone", "signal", "thread", "window", "paper", "quiet", "light", "queue",
          "socket", "green", "seven", "bright", "lamp", "number", "blue", "model", "server")

Embed = Callable[[List[str]], List[List[float]]]
Note = Callable[[str], None]


@dataclass(frozen=True)
class EmbedBenchConfig:
    """What to measure: ``requests`` requests of ``group`` inputs, ``rounds`` times, after
    ``warmup`` unmeasured requests per client. ``inputs`` are used round-robin."""

    url: str
    model: str
    inputs: Tuple[str, ...]
    group: int = 64
    requests: int = 20
    rounds: int = 3
    warmup: int = 1
    dialect: str = "ollama"

    def __post_init__(self) -> None:
        if not self.inputs:
            raise ConfigError("bench --embed needs at least one input text")
        for name in ("group", "requests", "rounds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an int >= 1, got {value!r}")

    def groups(self) -> List[List[str]]:
        """The ``requests`` groups of ``group`` inputs each (inputs taken round-robin)."""
        n = len(self.inputs)
        return [[self.inputs[(r * self.group + i) % n] for i in range(self.group)]
                for r in range(self.requests)]


@dataclass
class EmbedRow:
    """One client's numbers: ``latencies_s`` holds every measured request."""

    client: str
    group: int
    latencies_s: List[float] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def inputs_per_s(self) -> float:
        return self.group * len(self.latencies_s) / self.elapsed_s if self.elapsed_s else 0.0

    def latency_ms(self, q: float) -> float:
        """The ``q`` quantile (0..1) of the request latencies, in ms (nearest rank)."""
        ordered = sorted(self.latencies_s)
        rank = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
        return ordered[rank] * 1e3


def generated_inputs(count: int, words: int, seed: int = 0) -> Tuple[str, ...]:
    """``count`` deterministic texts of about ``words`` words (each one distinct)."""
    rng = random.Random(seed)
    return tuple(" ".join(rng.choice(_WORDS) for _ in range(max(1, words))) + f" #{i}"
                 for i in range(count))


def _clients(config: EmbedBenchConfig, note: Note) -> Tuple[Dict[str, Embed], List[Any]]:
    """The embed functions by client name, and what to close afterwards."""
    from ..client import Client

    ours = Client(config.url, dialect=config.dialect, timeouts=Timeouts(first_token=600))
    clients: Dict[str, Embed] = {
        "streamkit": lambda group: ours.embed(config.model, group).vectors}
    closers: List[Any] = [ours.close]
    if config.dialect != "ollama":
        note("the official ollama client speaks only /api/embed: measuring streamkit alone")
        return clients, closers
    try:
        ollama = importlib.import_module("ollama")
    except ImportError:
        note(OLLAMA_MISSING)
        return clients, closers
    theirs = ollama.Client(host=config.url, timeout=600)
    clients["ollama"] = lambda group: [list(v) for v in theirs.embed(
        model=config.model, input=group).embeddings]
    inner = getattr(theirs, "_client", None)  # its httpx client: close its connections
    if inner is not None:
        closers.append(inner.close)
    return clients, closers


def run_embed_bench(config: EmbedBenchConfig, note: Optional[Note] = None) -> List[EmbedRow]:
    """Measure; blocks until done. One row per client, streamkit first.

    Raises:
        StreamkitError: a streamkit request failed (an ollama one raises its own error).
        RuntimeError: the two clients' vectors differ.
    """
    say = note if note is not None else (lambda message: None)
    clients, closers = _clients(config, say)
    rows = {name: EmbedRow(name, config.group) for name in clients}
    groups = config.groups()
    try:
        if "ollama" in clients and not _same(clients, groups[0]):
            raise RuntimeError("streamkit's vectors differ from the official client's")
        for embed in clients.values():
            for group in groups[:config.warmup]:
                embed(group)
        names = list(clients)
        for round_no in range(config.rounds):
            say(f"round {round_no + 1}/{config.rounds}")
            for name in names if round_no % 2 == 0 else names[::-1]:
                _measure(clients[name], groups, rows[name])
    finally:
        for close in closers:
            close()
    return list(rows.values())


def _same(clients: Dict[str, Embed], group: List[str]) -> bool:
    return clients["streamkit"](group) == clients["ollama"](group)


def _measure(embed: Embed, groups: Sequence[List[str]], row: EmbedRow) -> None:
    started = time.perf_counter()
    for group in groups:
        t0 = time.perf_counter()
        vectors = embed(group)
        row.latencies_s.append(time.perf_counter() - t0)
        if len(vectors) != len(group):
            raise RuntimeError(f"{row.client}: {len(vectors)} vectors for {len(group)} inputs")
    row.elapsed_s += time.perf_counter() - started


def format_embed(rows: Sequence[EmbedRow], config: EmbedBenchConfig) -> str:
    """The console table, and streamkit / ollama when both ran."""
    lines = [f"embed: model={config.model} group={config.group} requests={config.requests} "
             f"x {config.rounds} rounds, one at a time",
             f"{'client':<10} {'inputs/s':>10} {'req p50 ms':>11} {'req p95 ms':>11} "
             f"{'req mean ms':>12}"]
    for row in rows:
        mean = statistics.fmean(row.latencies_s) * 1e3 if row.latencies_s else 0.0
        lines.append(f"{row.client:<10} {row.inputs_per_s:>10.0f} {row.latency_ms(0.5):>11.2f} "
                     f"{row.latency_ms(0.95):>11.2f} {mean:>12.2f}")
    by_name = {row.client: row for row in rows}
    if "ollama" in by_name and by_name["ollama"].inputs_per_s:
        ratio = by_name["streamkit"].inputs_per_s / by_name["ollama"].inputs_per_s
        lines.append(f"streamkit / ollama inputs/s: {ratio:.2f} (> 1: streamkit is faster)")
    return "\n".join(lines)
