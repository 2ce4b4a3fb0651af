"""``streamkit bench --embed``: the command line over :mod:`streamkit.bench.embed`.

Arguments shared with ``bench``: ``--embed-batch`` (inputs per request),
``--requests`` (requests per client and round; default 20), ``--warmup``
(unmeasured requests per client; default 1), ``--prompt-file`` or
``--prompt-words`` (the input texts), ``-m``, ``--host``, ``--dialect``,
``--seed``, ``-q``. The load options (``--concurrency``, ``--rate``...) do
not apply: requests go one at a time.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Iterator, Optional, Tuple

from ..errors import ConfigError
from .common import (
    BUILTIN_EMBED_MODEL,
    BUILTIN_EMBED_REQUEST_S,
    BUILTIN_EMBED_TOKEN_S,
    BUILTIN_HOST,
    EXIT_OK,
)

ROUNDS = 3
DEFAULT_REQUESTS = 20


def _texts(args: argparse.Namespace, group: int) -> Tuple[str, ...]:
    from ..bench.embed import generated_inputs

    if not args.prompt_file:
        return generated_inputs(group * (args.requests or DEFAULT_REQUESTS), args.prompt_words,
                                args.seed)
    from ..batch.input import detect_format, read_prompts
    from ..batch.promptline import PromptLine

    texts = tuple(item.prompt for item in read_prompts(
        args.prompt_file, detect_format(args.prompt_file), default_model="-")
        if isinstance(item, PromptLine) and item.prompt is not None)
    if not texts:
        raise ConfigError(f"prompt file {args.prompt_file!r} holds no \"prompt\" text to embed")
    return texts


@contextlib.contextmanager
def _url(host: Optional[str]) -> Iterator[str]:
    """The server URL; ``builtin`` serves demo-embed with its per-request cost meanwhile."""
    if host != BUILTIN_HOST:
        from ..config import parse_host
        yield parse_host(host)
        return
    from ..emulator import Emulator, EmulatorConfig
    config = EmulatorConfig(embed_request_cost=BUILTIN_EMBED_REQUEST_S,
                            embed_token_cost=BUILTIN_EMBED_TOKEN_S)
    with Emulator(config) as emulator:
        yield emulator.url


def bench_embed(args: argparse.Namespace) -> int:
    """Run ``bench --embed`` and print its table; exit 0 (errors raise)."""
    from ..bench.embed import EmbedBenchConfig, format_embed, run_embed_bench

    model = args.model or (BUILTIN_EMBED_MODEL if args.host == BUILTIN_HOST else None)
    if model is None:
        raise ConfigError("bench --embed needs an embedding model: -m MODEL (or --host builtin)")
    note = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    with _url(args.host) as url:
        config = EmbedBenchConfig(
            url=url, model=model, inputs=_texts(args, args.embed_batch), group=args.embed_batch,
            requests=args.requests or DEFAULT_REQUESTS, rounds=ROUNDS,
            warmup=max(1, args.warmup), dialect=args.dialect)
        rows = run_embed_bench(config, note)
    print(format_embed(rows, config))
    return EXIT_OK
