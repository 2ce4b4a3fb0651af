"""``streamkit emulate``: serve the Ollama-compatible emulator until Ctrl-C."""

from __future__ import annotations

import argparse
import threading
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .common import EXIT_INTERRUPTED, EXIT_OK

if TYPE_CHECKING:
    from ..emulator import EmulatorConfig


def emulator_config(args: argparse.Namespace) -> EmulatorConfig:
    """The EmulatorConfig the ``emulate`` arguments ask for (ConfigError if invalid)."""
    from ..emulator import EmulatorConfig, parse_faults

    return EmulatorConfig(
        host=args.host, port=args.port, models=tuple(args.models or ("demo",)),
        tokens_per_second=args.tokens_per_second, first_token_delay=args.first_token_delay,
        load_time=args.load_time, parallel=args.parallel, max_queue=args.max_queue,
        faults=parse_faults(";".join(args.faults)), stamp=args.stamp,
        tokens_per_chunk=args.tokens_per_chunk, seed=args.seed,
        embed_models=tuple(args.embed_models or ("demo-embed",)), embed_dim=args.embed_dim,
        embed_request_cost=args.embed_request_ms / 1e3,
        embed_token_cost=args.embed_token_us / 1e6)


def _emulate(args: argparse.Namespace) -> int:
    from ..emulator import Emulator

    emulator = Emulator(emulator_config(args)).start()
    try:
        print(emulator.url, flush=True)
        forever = threading.Event()
        while not forever.wait(3600):  # wakes only for Ctrl-C (KeyboardInterrupt)
            pass
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED  # Ctrl-C is how this command ends: no error to report
    finally:
        emulator.stop()
    return EXIT_OK  # pragma: no cover - the loop above only ends by Ctrl-C


def register(sub: Any) -> None:
    p = sub.add_parser(
        "emulate", help="run the Ollama-compatible emulator until Ctrl-C",
        description="Serve Ollama's API (and /v1) with deterministic text, pacing "
                    "and fault injection. Fault syntax: see `pydoc streamkit.emulator`.")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=11434, help="port (0 = any free port)")
    p.add_argument("--tokens-per-second", type=float, default=50.0,
                   help="pacing per stream (0 = unpaced, as fast as possible)")
    p.add_argument("--first-token-delay", type=float, default=0.0, metavar="S")
    p.add_argument("--load-time", type=float, default=0.0, metavar="S",
                   help="model load time on first use")
    p.add_argument("--parallel", type=int, default=4, help="generation slots per model")
    p.add_argument("--max-queue", type=int, default=512,
                   help="requests that may wait for a slot before 503")
    p.add_argument("--model", action="append", dest="models", metavar="NAME",
                   help="a model to serve (repeatable; default demo)")
    p.add_argument("--fault", action="append", dest="faults", metavar="SPEC", default=[],
                   help="fault spec, e.g. 'status:503,first=2' or 'cut,after=5,p=0.1' "
                        "(repeatable)")
    p.add_argument("--stamp", action="store_true",
                   help="add _sent_ns (perf_counter_ns) to each chunk")
    p.add_argument("--tokens-per-chunk", type=int, default=1, metavar="N")
    p.add_argument("--seed", type=int, default=0)
    embed = p.add_argument_group("embeddings")
    embed.add_argument("--embed-model", action="append", dest="embed_models", metavar="NAME",
                       help="an embedding model to serve (repeatable; default demo-embed)")
    embed.add_argument("--embed-dim", type=int, default=768, metavar="N",
                       help="length of the vectors (default 768)")
    embed.add_argument("--embed-request-ms", type=float, default=0.0, metavar="MS",
                       help="what each embed request costs, besides its tokens (default 0)")
    embed.add_argument("--embed-token-us", type=float, default=0.0, metavar="US",
                       help="what each input token of an embed request costs (default 0)")
    # A bad emulator setting is printed whole: "streamkit emulate: <message>".
    p.set_defaults(func=_emulate, usage_errors=(ConfigError,))
