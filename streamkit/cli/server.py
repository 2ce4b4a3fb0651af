"""``streamkit check`` and ``streamkit pull``: the server's state, and model downloads."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any, Dict, Iterator

from .common import EXIT_OK, add_host_argument, open_client


def _check(args: argparse.Namespace) -> int:
    with open_client(args) as client:
        print(f"host:    {client.host}")
        version = client.version()
        print(f"version: {version or 'unknown'}")
        names = [str(m.get("name") or m.get("id") or m.get("model")) for m in client.models()]
        print(f"models:  {', '.join(names) if names else '(none; try `ollama pull llama3.2`)'}")
        return EXIT_OK


def _pull(args: argparse.Namespace) -> int:
    show_bar = sys.stderr.isatty() and not args.quiet
    with open_client(args) as client:
        last = pull_with_progress(client.pull(args.model), show_bar)
    print(f"{args.model}: {last.get('status', 'done')}")
    return EXIT_OK


def pull_with_progress(records: Iterator[Dict[str, Any]], show_bar: bool) -> Dict[str, Any]:
    """Drain pull progress records (a tqdm bar per layer on stderr); return the last one."""
    last: Dict[str, Any] = {}
    bar: Any = None
    # Imported here: only a visible bar needs tqdm (and it has no type stubs).
    tqdm: Any = importlib.import_module("tqdm").tqdm if show_bar else None
    try:
        for record in records:
            last = record
            if not show_bar:
                continue
            if record.get("total"):
                if bar is None or bar.desc != record["status"]:
                    if bar is not None:
                        bar.close()
                    bar = tqdm(total=record["total"], desc=record["status"], unit="B",
                               unit_scale=True, file=sys.stderr, leave=False)
                bar.update(record.get("completed", 0) - bar.n)
            else:
                tqdm.write(str(record.get("status", "")), file=sys.stderr)
    finally:
        if bar is not None:
            bar.close()
        close = getattr(records, "close", None)
        if close is not None:
            close()
    return last


def register(sub: Any) -> None:
    parser = sub.add_parser("check", help="is the server reachable? version? models?")
    add_host_argument(parser)
    parser.set_defaults(func=_check)

    parser = sub.add_parser("pull", help="download a model, with a progress bar")
    parser.add_argument("model", help="model name, e.g. llama3.2")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_host_argument(parser)
    parser.set_defaults(func=_pull)
