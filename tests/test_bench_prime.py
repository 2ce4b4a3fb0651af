"""Before the clock starts: the bench primes each client (one one-token request)
and a closed loop waits for its (shared) base."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest

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


def test_closed_loop_starts_no_request_before_its_base() -> None:
    # shards get a base ~100 ms in the future; a request sent before it would fall
    # outside the measured window and overstate throughput
    from streamkit.bench.load import Job, LoadPlan, run_plan
    from streamkit.bench.metrics import RequestRecord

    def send(job: Job) -> RequestRecord:
        return RequestRecord(index=job.index, scheduled_ns=job.scheduled_ns,
                             dispatched_ns=job.dispatched_ns, picked_ns=job.picked_ns)

    base = time.perf_counter_ns() + 150_000_000
    out = run_plan(send, LoadPlan(concurrency=4, requests=8), base_ns=base)
    assert len(out.records) == 8
    assert min(r.scheduled_ns for r in out.records) >= base


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")
def test_bench_emulator_child_listens_with_the_system_backlog() -> None:
    # the child runs the plain Emulator: its backlog is the emulator's own
    from streamkit.bench.target import emulator_process

    with emulator_process(EmulatorConfig()) as url:
        port = url.rsplit(":", 1)[1]
        listing = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True,
                                 text=True, timeout=30, check=True).stdout.split()
    assert listing[0] == "LISTEN"
    assert int(listing[2]) >= min(socket.SOMAXCONN, 1024)  # Send-Q of a listener: its backlog
