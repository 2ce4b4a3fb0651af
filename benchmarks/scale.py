"""Scale benchmark: many slow streams in one process, against two floors and aiohttp.

S streams (default 256, 512 and 1,000) paced at 50 tokens/s, 100 tokens
each, from the emulator in its own process (``--stamp``: every record
carries ``_sent_ns``, the server's ``perf_counter_ns()`` just before the
write; CLOCK_MONOTONIC, so it compares across processes). Every client runs
in a subprocess of its own, so its CPU time and peak RSS are its alone:

  client       what runs in the subprocess
  ---------    -----------------------------------------------------------
  a-client     plain ``Client.generate`` streams, one consumer thread each
  a-run        ``Client.run(request, on_chunk)`` on a thread per stream (the
               stream runs in that thread: no worker thread)
  b-map        ``Dispatcher.map`` (chunks drained inside; no consumer)
  b-threads    the same with the dispatcher's poller closed: each worker
               reads its own socket (the read path before the poller)
  c-events     ``Dispatcher.events``, a consumer that keeps up
  c-threads    the same, poller closed
  d-slow       ``Dispatcher.events``, a consumer spending 40 us per chunk
  aiohttp      one asyncio loop, ``aiohttp.ClientSession`` (the ``bench`` extra)
  raw-socket   floor: a thread per stream, blocking socket, ``json.loads``
  raw-queue    floor: reader thread (socket, ``json.loads``) ->
               ``queue.SimpleQueue`` -> consumer thread

Per run: errors, wall time, client CPU seconds (``getrusage`` of the
subprocess, over the run only), CPU us per chunk, peak RSS, and lag:

- *arrival lag*: server stamp -> the client's arrival stamp. streamkit
  stamps ``Chunk.received_ns`` as the ``recv`` returns, before parsing; the
  raw floors stamp after their ``recv``; aiohttp has no recv stamp, so its
  arrival is when the coroutine gets the bytes.
- *consumer lag*: server stamp -> the consumer holding the parsed chunk
  (``b-map`` has no consumer: its chunks are counted where the worker
  drops them).
- *last 1st chunk*: when the last stream's first chunk arrived, from the
  start of the run. Wall time minus it is how long that stream took to
  stream; the rest of the wall time is the start burst (every stream
  opened at once).
- *server CPU*: what the emulator's process spent over the client's run
  (``/proc``, Linux; NaN elsewhere). The same 100 chunks a stream cost the
  server more when a client reads each as it lands on a thread asleep in
  ``recv`` (each write wakes one) than when one event loop reads behind;
  on a machine the two share, that is wall time.

Clients alternate within a round (a, b, c, ..., then again), ``--rounds``
rounds per size; the table gives medians. The emulator is restarted per
size with enough parallel slots for every stream.

Usage::

    python benchmarks/scale.py                       # 256, 512, 1000 streams, 3 rounds
    python benchmarks/scale.py --streams 64 --rounds 1 --clients a-client,raw-queue
    python benchmarks/scale.py --markdown            # the table as Markdown too
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple
from urllib.parse import urlsplit

MODEL = "demo"
TOKENS_PER_S = 50
SLOW_CONSUMER_S = 40e-6
CLIENTS = ["a-client", "a-run", "b-map", "b-threads", "c-events", "c-threads", "d-slow", "aiohttp",
           "raw-socket", "raw-queue"]
RUN_TIMEOUT_S = 600.0


def raise_nofile(want: int) -> None:
    """Raise the open-files limit (soft) towards ``want``; every stream holds a socket."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def body(i: int, tokens: int) -> bytes:
    return json.dumps({"model": MODEL, "prompt": f"prompt {i}", "stream": True,
                       "options": {"num_predict": tokens}}).encode()


class Tally:
    """Lags (ms) and errors collected by one client run; appends are GIL-atomic."""

    def __init__(self) -> None:
        self.arrival: List[float] = []
        self.consumer: List[float] = []
        self.firsts: List[int] = []  # arrival stamps of each stream's first chunk
        self.errors = 0
        self.chunks = 0

    def took(self, c: Any) -> None:
        """Count a streamkit Chunk the consumer holds now."""
        self.chunk(c.raw.get("_sent_ns"), c.received_ns, time.perf_counter_ns(), c.index == 0)
        self.chunks += 1

    def chunk(self, sent_ns: Optional[int], arrival_ns: int, consumer_ns: int,
              first: bool = False) -> None:
        if first:
            self.firsts.append(arrival_ns)
        if sent_ns is not None:
            self.arrival.append((arrival_ns - sent_ns) / 1e6)
            self.consumer.append((consumer_ns - sent_ns) / 1e6)


# -- the clients (each runs in its own subprocess) ----------------------------------


def run_client(url: str, streams: int, tokens: int, tally: Tally) -> None:
    import streamkit as sk

    with sk.Client(url, pool_size=streams) as client:
        def consume(i: int) -> None:
            try:
                for c in client.generate(MODEL, f"prompt {i}", options={"num_predict": tokens}):
                    tally.took(c)
            except sk.StreamkitError:
                tally.errors += 1

        _threads(streams, consume)


def run_client_run(url: str, streams: int, tokens: int, tally: Tally) -> None:
    import streamkit as sk

    with sk.Client(url, pool_size=streams) as client:
        def consume(i: int) -> None:
            request = sk.GenerateRequest(MODEL, f"prompt {i}", options={"num_predict": tokens})
            if not client.run(request, tally.took).ok:
                tally.errors += 1

        _threads(streams, consume)


def _requests(streams: int, tokens: int) -> List[Any]:
    import streamkit as sk

    return [sk.GenerateRequest(MODEL, f"prompt {i}", options={"num_predict": tokens})
            for i in range(streams)]


def run_map(url: str, streams: int, tokens: int, tally: Tally) -> None:
    import streamkit as sk
    from streamkit._dispatch import fanout
    from streamkit._stream.channel import BatchSink

    # Benchmark-only hook: map hands its chunks to ``discard`` in the worker
    # (which drops them); a counting sink in its place is the only per-chunk
    # view map has. It costs one call per read that a real map does not pay.
    # A BatchSink that never refuses, so the poller may call it as it calls
    # ``discard``.
    def count(chunks: List[sk.Chunk]) -> None:
        for c in chunks:
            tally.took(c)

    def offer(chunks: List[sk.Chunk]) -> bool:
        count(chunks)
        return True
    fanout.discard = BatchSink(count, offer)  # type: ignore[attr-defined]
    with sk.Dispatcher(hosts=[(url, streams)], workers=streams, max_pending=0) as d:
        for r in d.map(_requests(streams, tokens), return_exceptions=True):
            tally.errors += not r.ok


def _events(spend_s: float) -> Callable[[str, int, int, Tally], None]:
    def run(url: str, streams: int, tokens: int, tally: Tally) -> None:
        import streamkit as sk

        with sk.Dispatcher(hosts=[(url, streams)], workers=streams, max_pending=0) as d:
            for _, item in d.events(_requests(streams, tokens)):
                if isinstance(item, sk.Result):
                    tally.errors += not item.ok
                    continue
                tally.took(item)
                if spend_s:
                    until = time.perf_counter() + spend_s
                    while time.perf_counter() < until:
                        pass
    return run


def _threads_read(run: Callable[[str, int, int, Tally], None]
                  ) -> Callable[[str, int, int, Tally], None]:
    """``run`` with the dispatcher's poller closed from the start, so every
    worker reads its own stream's socket (the read path before the poller)."""
    def without_poller(url: str, streams: int, tokens: int, tally: Tally) -> None:
        from streamkit._dispatch import pool
        from streamkit._http import Poller

        def closed(name: str) -> Poller:
            poller = Poller(name)
            poller.close()
            return poller
        pool.Poller = closed  # type: ignore[attr-defined,assignment]  # benchmark-only
        run(url, streams, tokens, tally)
    return without_poller


def run_aiohttp(url: str, streams: int, tokens: int, tally: Tally) -> None:
    import asyncio

    import aiohttp

    async def one(session: Any, i: int) -> None:
        try:
            async with session.post(url.rstrip("/") + "/api/generate",
                                    data=body(i, tokens)) as resp:
                resp.raise_for_status()
                tail = b""
                done = False
                first = True
                async for data in resp.content.iter_any():
                    now = time.perf_counter_ns()
                    lines = (tail + data).split(b"\n")
                    tail = lines.pop()
                    for line in lines:
                        if line:
                            obj = json.loads(line)
                            tally.chunk(obj.get("_sent_ns"), now, time.perf_counter_ns(), first)
                            first = False
                            tally.chunks += 1
                            done = obj.get("done") is True
                if not done:
                    tally.errors += 1
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
            tally.errors += 1

    async def main() -> None:
        connector = aiohttp.TCPConnector(limit=streams)
        timeout = aiohttp.ClientTimeout(total=None, sock_read=60)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            await asyncio.gather(*(one(session, i) for i in range(streams)))

    asyncio.run(main())


def _open(url: str, i: int, tokens: int) -> Tuple[socket.socket, bytes]:
    """Connect and send one request; return the socket and the bytes after the head."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    sock = socket.create_connection((host, port))
    payload = body(i, tokens)
    sock.sendall(b"POST /api/generate HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: "
                 b"application/json\r\nContent-Length: %d\r\n\r\n%s"
                 % (host.encode(), port, len(payload), payload))
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed before the head")
        buf += data
    head, rest = buf.split(b"\r\n\r\n", 1)
    if not head.startswith(b"HTTP/1.1 200") or b"chunked" not in head.lower():
        raise ConnectionError(f"unexpected head {head[:60]!r}")
    return sock, rest


def _records(buf: bytes, pending: bytearray) -> Tuple[List[bytes], bytes, bool]:
    """Minimal dechunking: (complete NDJSON lines, unparsed rest, body ended)."""
    pos = 0
    while True:
        nl = buf.find(b"\r\n", pos)
        if nl < 0:
            break
        size = int(buf[pos:nl], 16)
        if size == 0:
            return _lines(pending), b"", True
        if nl + 2 + size + 2 > len(buf):
            break
        pending += buf[nl + 2:nl + 2 + size]
        pos = nl + 2 + size + 2
    return _lines(pending), buf[pos:], False


def _lines(pending: bytearray) -> List[bytes]:
    if b"\n" not in pending:
        return []
    data = bytes(pending)
    lines = data.split(b"\n")
    tail = lines.pop()
    pending[:] = tail
    return [ln for ln in lines if ln]


def run_raw_socket(url: str, streams: int, tokens: int, tally: Tally) -> None:
    def one(i: int) -> None:
        try:
            sock, rest = _open(url, i, tokens)
            pending = bytearray()
            with sock:
                buf, ended, now = rest, False, time.perf_counter_ns()
                first = True
                while True:
                    lines, buf, ended = _records(buf, pending)
                    for line in lines:
                        obj = json.loads(line)
                        tally.chunk(obj.get("_sent_ns"), now, time.perf_counter_ns(), first)
                        first = False
                        tally.chunks += 1
                    if ended:
                        return
                    data = sock.recv(65536)
                    now = time.perf_counter_ns()
                    if not data:
                        raise ConnectionError("cut")
                    buf += data
        except (OSError, ValueError):
            tally.errors += 1

    _threads(streams, one)


def run_raw_queue(url: str, streams: int, tokens: int, tally: Tally) -> None:
    def one(i: int) -> None:
        q: queue.SimpleQueue[Any] = queue.SimpleQueue()

        def reader() -> None:
            try:
                sock, rest = _open(url, i, tokens)
                pending = bytearray()
                with sock:
                    buf, now = rest, time.perf_counter_ns()
                    while True:
                        lines, buf, ended = _records(buf, pending)
                        for line in lines:
                            q.put((json.loads(line), now))
                        if ended:
                            break
                        data = sock.recv(65536)
                        now = time.perf_counter_ns()
                        if not data:
                            raise ConnectionError("cut")
                        buf += data
                q.put(None)
            except (OSError, ValueError) as exc:
                q.put(exc)

        threading.Thread(target=reader, daemon=True).start()
        first = True
        while True:
            item = q.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                tally.errors += 1
                return
            obj, arrival = item
            tally.chunk(obj.get("_sent_ns"), arrival, time.perf_counter_ns(), first)
            first = False
            tally.chunks += 1

    _threads(streams, one)


def _threads(n: int, target: Callable[[int], None]) -> None:
    threads = [threading.Thread(target=target, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


RUNNERS: Dict[str, Callable[[str, int, int, Tally], None]] = {
    "a-client": run_client,
    "a-run": run_client_run,
    "b-map": run_map,
    "b-threads": _threads_read(run_map),
    "c-events": _events(0.0),
    "c-threads": _threads_read(_events(0.0)),
    "d-slow": _events(SLOW_CONSUMER_S),
    "aiohttp": run_aiohttp,
    "raw-socket": run_raw_socket,
    "raw-queue": run_raw_queue,
}


def _percentile(values: List[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def child(client: str, url: str, streams: int, tokens: int) -> None:
    """Run one client once (in this subprocess) and print its figures as JSON."""
    raise_nofile(4 * streams + 256)
    runner = RUNNERS[client]
    # Warm-up, not measured: one short stream, so lazy imports and first-use
    # setup (regular expressions, codecs) are not counted as streaming cost.
    runner(url, 1, 1, Tally())
    tally = Tally()
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter_ns()
    runner(url, streams, tokens, tally)
    wall = (time.perf_counter_ns() - started) / 1e9
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    expected = streams * tokens
    print(json.dumps({
        "client": client, "streams": streams, "errors": tally.errors,
        "chunks": tally.chunks, "short": max(0, expected - tally.chunks), "wall": wall,
        "last_start": (max(tally.firsts) - started) / 1e9 if tally.firsts else float("nan"),
        "cpu": cpu, "cpu_us_per_chunk": cpu / max(1, tally.chunks) * 1e6,
        "rss_mb": after.ru_maxrss / 1024,
        "lag_p50": _percentile(tally.arrival, 0.5), "lag_p99": _percentile(tally.arrival, 0.99),
        "consumer_p50": _percentile(tally.consumer, 0.5),
        "consumer_p99": _percentile(tally.consumer, 0.99),
    }), flush=True)


# -- the driver -----------------------------------------------------------------


def serve(streams: int, tokens: int) -> None:
    """Run the emulator (in this subprocess) until stdin closes: paced, stamping,
    a slot for every stream, every reply ``tokens`` long (its natural length)."""
    from streamkit.emulator import Emulator, EmulatorConfig

    raise_nofile(4 * streams + 256)
    config = EmulatorConfig(port=0, stamp=True, tokens_per_second=TOKENS_PER_S,
                            parallel=streams, max_queue=streams,
                            response_tokens=(tokens, tokens))
    with Emulator(config) as server:
        print(server.url, flush=True)
        sys.stdin.read()  # the driver closes it to stop the server


class Server:
    """The emulator's process: its URL and, on Linux, its CPU seconds so far."""

    def __init__(self, url: str, pid: int) -> None:
        self.url = url
        self._stat = f"/proc/{pid}/stat"

    def cpu(self) -> Optional[float]:
        """User + system CPU seconds of the server process (None off Linux)."""
        try:
            with open(self._stat) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def emulator(streams: int, tokens: int) -> Iterator[Server]:
    """The emulator in its own process (see :func:`serve`)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--serve", "--streams", str(streams),
           "--tokens", str(tokens)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http"):
            raise RuntimeError(f"emulator did not start: {url!r}")
        yield Server(url, proc.pid)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_once(client: str, url: str, streams: int, tokens: int,
             timeout: float = RUN_TIMEOUT_S) -> Dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", client, "--url", url,
           "--streams", str(streams), "--tokens", str(tokens)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"client": client, "streams": streams, "failed": f"timed out ({timeout:.0f} s)"}
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        return {"client": client, "streams": streams,
                "failed": (out.stderr.strip().splitlines() or ["no output"])[-1]}
    return dict(json.loads(lines[-1]))


COLUMNS = [("errors", "errors", "{:.0f}"), ("wall", "wall s", "{:.2f}"),
           ("last_start", "last 1st chunk s", "{:.2f}"),
           ("cpu", "CPU s", "{:.2f}"), ("cpu_us_per_chunk", "CPU us/chunk", "{:.0f}"),
           ("rss_mb", "peak RSS MB", "{:.0f}"), ("lag_p50", "lag p50 ms", "{:.2f}"),
           ("lag_p99", "lag p99 ms", "{:.2f}"), ("consumer_p99", "consumer p99 ms", "{:.2f}"),
           ("server_cpu", "server CPU s", "{:.2f}")]


def summarize(rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    good = [r for r in rows if "failed" not in r]
    if not good:
        return {"failed": rows[0].get("failed", "?")}
    out: Dict[str, Any] = {k: statistics.median(r[k] for r in good) for k, _, _ in COLUMNS}
    out["errors"] = max(r["errors"] for r in good)  # the worst run, not the median
    out["short"] = max(r["short"] for r in good)
    out["runs"] = len(good)
    return out


def table(results: Dict[Tuple[int, str], Dict[str, Any]], clients: List[str],
          sizes: List[int], markdown: bool) -> str:
    head = ["streams", "client", *[title for _, title, _ in COLUMNS]]
    lines = []
    if markdown:
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
    else:
        lines.append("  ".join(f"{h:>14}" for h in head))
    for size in sizes:
        for client in clients:
            s = results[(size, client)]
            cells = [str(size), client]
            if "failed" in s:
                cells += [f"failed: {s['failed'][:60]}"] + [""] * (len(COLUMNS) - 1)
            else:
                cells += [fmt.format(s[key]) for key, _, fmt in COLUMNS]
            if markdown:
                lines.append("| " + " | ".join(cells) + " |")
            else:
                lines.append("  ".join(f"{c:>14}" for c in cells))
    return "\n".join(lines)


def checks(results: Dict[Tuple[int, str], Dict[str, Any]], size: int, tokens: int) -> List[str]:
    """The targets at ``size`` streams, each as a line saying met or missed."""
    def get(client: str) -> Optional[Dict[str, Any]]:
        s = results.get((size, client))
        return None if s is None or "failed" in s else s

    out: List[str] = []
    a, floor, aio, d = get("a-client"), get("raw-queue"), get("aiohttp"), get("d-slow")
    for name in ("a-client", "a-run"):
        s = get(name)
        if s and floor:
            ratio = s["cpu_us_per_chunk"] / floor["cpu_us_per_chunk"]
            out.append(f"({name}) CPU/chunk {ratio:.2f}x the raw reader->queue floor "
                       "(target <= 1.5x)")
    if aio:
        for name in ("a-client", "a-run", "b-map", "c-events"):
            s = get(name)
            if not s:
                continue
            p99_ref = max(aio["lag_p99"], 20.0)
            out.append(f"{name}: wall {s['wall'] / aio['wall']:.2f}x aiohttp (<= 1.25x), "
                       f"lag p99 {s['lag_p99']:.2f} ms vs {1.25 * p99_ref:.2f} ms allowed")
    if a and d:
        limit = 1.5 * (a["cpu"] + SLOW_CONSUMER_S * size * tokens)
        out.append(f"(d) CPU {d['cpu']:.2f} s, limit {limit:.2f} s")
    for name in CLIENTS:
        s = get(name)
        if s and name not in ("aiohttp", "raw-socket", "raw-queue") and s["rss_mb"] > 150:
            out.append(f"{name}: peak RSS {s['rss_mb']:.0f} MB > 150 MB")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", default="256,512,1000")
    parser.add_argument("--tokens", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", default=",".join(CLIENTS))
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--run-timeout", type=float, default=RUN_TIMEOUT_S,
                        help="seconds one client run may take before it counts as failed")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(int(args.streams), args.tokens)
        return
    if args.child:
        child(args.child, args.url, int(args.streams), args.tokens)
        return
    sizes = [int(s) for s in args.streams.split(",")]
    clients = [c for c in args.clients.split(",") if c]
    unknown = set(clients) - set(RUNNERS)
    if unknown:
        parser.error(f"unknown clients {sorted(unknown)}; choose from {CLIENTS}")
    raise_nofile(4 * max(sizes) + 256)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {load}; "
          f"{args.tokens} tokens/stream at {TOKENS_PER_S} tokens/s, {args.rounds} rounds, "
          f"medians", flush=True)
    results: Dict[Tuple[int, str], Dict[str, Any]] = {}
    for size in sizes:
        runs: Dict[str, List[Dict[str, Any]]] = {c: [] for c in clients}
        with emulator(size, args.tokens) as server:
            url = server.url
            run_once("raw-socket", url, min(size, 16), args.tokens)  # warm-up
            for _ in range(args.rounds):
                for client in clients:
                    if any("timed out" in r.get("failed", "") for r in runs[client]):
                        continue  # it would time out again: spend the time on the others
                    before = server.cpu()
                    row = run_once(client, url, size, args.tokens, args.run_timeout)
                    after = server.cpu()
                    if "failed" not in row:
                        row["server_cpu"] = (float("nan") if before is None or after is None
                                             else after - before)
                    runs[client].append(row)
                    note = row.get("failed") or (
                        f"errors {row['errors']} short {row['short']} wall {row['wall']:.2f} "
                        f"last 1st chunk {row['last_start']:.2f} "
                        f"cpu {row['cpu']:.2f} rss {row['rss_mb']:.0f} "
                        f"lag p99 {row['lag_p99']:.2f} consumer p99 {row['consumer_p99']:.2f} "
                        f"server cpu {row['server_cpu']:.2f}")
                    print(f"  {size:5d} {client:10s} {note}", flush=True)
        for client in clients:
            results[(size, client)] = summarize(runs[client])
    print()
    print(table(results, clients, sizes, args.markdown))
    print()
    for size in sizes:
        for line in checks(results, size, args.tokens):
            print(f"  {size:5d}: {line}")


if __name__ == "__main__":
    main()
