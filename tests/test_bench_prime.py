"""The bench primes each client before its clock starts (one one-token request)."""

from __future__ import annotations

import socket

from streamkit.bench import BenchConfig, run_bench
from streamkit.bench.target import Sender, SenderArgs
from streamkit.config import Timeouts
from streamkit.emulator import Emulator, EmulatorConfig


def test_prime_sends_one_one_token_request_and_keeps_no_record() -> None:
    with Emulator(EmulatorConfig(response_tokens=(16, 16))) as emulator:
        with Sender(SenderArgs(host=emulator.url, model="demo",
                               options={"num_predict": 8})) as sender:
            sender.prime()
        # the server counts a stream as completed just after its last write
        assert emulator.wait_until(lambda c: c["completed"] == 1, timeout=10)
        counters = emulator.counters()
    assert counters["inference"] == 1
    # one token chunk and the final one: the priming request asked for a single token
    assert counters["chunks_sent"] == 2


def test_prime_does_not_raise_when_the_server_is_gone() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    args = SenderArgs(host=f"http://127.0.0.1:{port}", model="demo",
                      timeouts=Timeouts(connect=2.0))
    with Sender(args) as sender:
        sender.prime()


def test_measured_requests_exclude_the_priming_request() -> None:
    with Emulator(EmulatorConfig(response_tokens=(8, 8))) as emulator:
        run = run_bench(BenchConfig(model="demo", host=emulator.url, concurrency=(2,),
                                    requests=4, num_predict=8, calibrate=False,
                                    load_model=False))
        assert emulator.wait_until(lambda c: c["completed"] == 6, timeout=10)
        counters = emulator.counters()
    point = run.points[0]
    assert len(point.records) == 4 and all(r.ok for r in point.records)
    assert all(r.eval_count == 8 for r in point.records)
    # the four measured ones, the pace probe that sizes the shards, the priming request
    assert counters["inference"] == 6
