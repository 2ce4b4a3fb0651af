"""Decoder throughput: records/s of the wire decoders, stdlib json vs orjson.

Usage: python benchmarks/decode.py [--records 100000] [--rounds 5]

Feeds a synthetic Ollama /api/chat NDJSON body (and the same tokens as an
OpenAI SSE body) through ``OLLAMA.decoder()`` / ``OPENAI.decoder()``, two ways:
one record per read (what a socket gives when the server flushes each token)
and 64 KiB reads (a backlog). Backends alternate round by round; medians are
printed with the orjson/json ratio. Pure CPU, no I/O.

First it feeds a 64 MiB line without a newline, in 64 KiB reads, and prints
the peak RSS growth until the decoder's ProtocolError (Linux/macOS only).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from typing import Callable, Dict, List

from streamkit import _json
from streamkit.wire.ollama import OLLAMA
from streamkit.wire.openai import OPENAI

TOKENS = ["Hello", " world", ",", " the", " quick", " brown", " fox", " é", " 漢字", "!"]


def ollama_records(n: int) -> List[bytes]:
    out = []
    for i in range(n - 1):
        out.append(json.dumps({
            "model": "llama3.2:1b", "created_at": "2026-01-02T03:04:05.123456789Z",
            "message": {"role": "assistant", "content": TOKENS[i % len(TOKENS)]},
            "done": False}, ensure_ascii=False, separators=(",", ":")).encode() + b"\n")
    out.append(b'{"model":"llama3.2:1b","created_at":"2026-01-02T03:04:05Z","message":'
               b'{"role":"assistant","content":""},"done":true,"done_reason":"stop",'
               b'"total_duration":1,"eval_count":%d}\n' % n)
    return out


def openai_records(n: int) -> List[bytes]:
    out = []
    for i in range(n - 2):
        out.append(b"data: " + json.dumps({
            "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1767322000,
            "model": "llama3.2:1b", "system_fingerprint": "fp_ollama",
            "choices": [{"index": 0, "delta": {"content": TOKENS[i % len(TOKENS)]},
                         "finish_reason": None}]},
            ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n")
    out.append(b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n')
    out.append(b"data: [DONE]\n\n")
    return out


def in_reads(records: List[bytes], size: int) -> List[bytes]:
    body = b"".join(records)
    return [body[i:i + size] for i in range(0, len(body), size)]


def run(make_decoder: Callable[[], object], reads: List[bytes]) -> float:
    decoder = make_decoder()
    feed = decoder.feed  # type: ignore[attr-defined]
    count = 0
    start = time.perf_counter()
    for stamp, data in enumerate(reads):
        count += len(feed(data, stamp))
    count += len(decoder.close(0))  # type: ignore[attr-defined]
    return time.perf_counter() - start


def oversize_rss_growth_mb() -> float:
    """Peak RSS growth while a 64 MiB line without newline hits the 16 MiB cap."""
    from streamkit.errors import ProtocolError

    def peak_mb() -> float:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 1e6 if sys.platform == "darwin" else peak / 1e3  # bytes vs KiB

    before = peak_mb()
    decoder = OLLAMA.decoder()
    try:
        for _ in range(1024):
            decoder.feed(b"x" * 65536, 0)  # a fresh object per read, like a socket
    except ProtocolError:
        pass
    else:
        raise AssertionError("no ProtocolError for a 64 MiB line")
    return peak_mb() - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    print(f"64 MiB line without newline: ProtocolError, peak RSS growth "
          f"{oversize_rss_growth_mb():.1f} MB")
    backends: Dict[str, Callable[[bytes], object]] = {"json": _json.stdlib_loads}
    if _json.fast_loads is not None:
        backends["orjson"] = _json.fast_loads
    ollama, openai = ollama_records(args.records), openai_records(args.records)
    cases = {
        "ollama, 1 record/read": (OLLAMA.decoder, ollama),
        "ollama, 64 KiB reads": (OLLAMA.decoder, in_reads(ollama, 65536)),
        "openai, 1 event/read": (OPENAI.decoder, openai),
        "openai, 64 KiB reads": (OPENAI.decoder, in_reads(openai, 65536)),
    }
    print(f"{args.records} records, {args.rounds} alternating rounds, median records/s")
    for label, (factory, reads) in cases.items():
        times: Dict[str, List[float]] = {name: [] for name in backends}
        for _ in range(args.rounds):
            for name, loads in backends.items():  # alternate backends every round
                _json.loads = loads
                times[name].append(run(factory, reads))
        rates = {n: args.records / statistics.median(t) for n, t in times.items()}
        line = "  ".join(f"{n} {r:>10,.0f}/s" for n, r in rates.items())
        ratio = f"  orjson/json {rates['orjson'] / rates['json']:.2f}x" if "orjson" in rates else ""
        print(f"{label:24} {line}{ratio}")


if __name__ == "__main__":
    main()
