"""A fleet of emulator processes, one SIGKILLed mid-run: every request is answered once
(``Dispatcher.map``, and ``streamkit batch`` as a subprocess).

The killed host cuts the streams it was serving and refuses what comes next;
``Dispatcher.map`` (``on_interrupt`` default: restart) sends the cut streams
again to the two hosts left, and no request spends more than one attempt on
the dead host.
"""

from __future__ import annotations

import collections
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import pytest
from emuprocs import start_hosts, stop_hosts

from streamkit.config import RetryPolicy, Timeouts
from streamkit.dispatch import Dispatcher
from streamkit.emulator import EmulatorConfig, expected
from streamkit.records import GenerateRequest, Result
from streamkit.wire import get_dialect

REQUESTS = 300
KILL_AFTER = 50
TOKENS = 20
TOKENS_PER_SECOND = 200
PARALLEL = 4
BATCH_PROMPTS = 240


def _request(i: int) -> GenerateRequest:
    return GenerateRequest("demo", f"fleet {i}", options={"num_predict": TOKENS})


def _expected_text(i: int) -> str:
    config = EmulatorConfig(parallel=PARALLEL, tokens_per_second=TOKENS_PER_SECOND)
    return expected("demo", get_dialect("ollama").generate(_request(i))[1], config).text


@pytest.mark.timeout(120)
def test_a_host_sigkilled_mid_run_loses_no_request_and_answers_each_once() -> None:
    hosts = start_hosts(3, "--parallel", str(PARALLEL),
                        "--tokens-per-second", str(TOKENS_PER_SECOND))
    try:
        urls = [h.url for h in hosts]
        dead = urls[1]
        retry = RetryPolicy(attempts=3, backoff_base=0.05, backoff_max=0.5)
        timeouts = Timeouts(connect=2.0, first_token=10.0, idle=5.0)
        results: List[Result] = []
        with Dispatcher(hosts=[(u, PARALLEL) for u in urls], workers=12, retry=retry,
                        timeouts=timeouts) as d:
            for result in d.map((_request(i) for i in range(REQUESTS)),
                                return_exceptions=True):
                results.append(result)
                if len(results) == KILL_AFTER:
                    hosts[1].kill()
    finally:
        stop_hosts(hosts)

    failed = [(r.id, r.hosts_tried, repr(r.error)) for r in results if not r.ok]
    assert not failed
    ids = collections.Counter(r.id for r in results)
    assert set(ids) == {str(i) for i in range(REQUESTS)} and max(ids.values()) == 1
    wrong = [r.id for r in results if r.text != _expected_text(int(r.id or -1))]
    assert not wrong
    # The streams the kill cut were sent again, elsewhere, and say so.
    restarted = [r for r in results if r.restarts]
    assert restarted and all(r.host != dead for r in restarted)
    assert all(r.attempts == len(r.hosts_tried) for r in results)
    # Never two attempts of one request on the dead host while two were healthy.
    assert all(r.hosts_tried.count(dead) <= 1 for r in results)


@pytest.mark.timeout(120)
def test_batch_over_three_hosts_one_sigkilled_exits_0_with_every_id_once(
        tmp_path: Path) -> None:
    hosts = start_hosts(3, "--parallel", str(PARALLEL),
                        "--tokens-per-second", str(TOKENS_PER_SECOND))
    prompts, out = tmp_path / "prompts.jsonl", tmp_path / "out.jsonl"
    ids = [f"q{i:03d}" for i in range(BATCH_PROMPTS)]
    prompts.write_text("".join(json.dumps({"id": i, "prompt": f"fleet {i}"}) + "\n"
                               for i in ids))
    command = [sys.executable, "-m", "streamkit", "batch", str(prompts), "-o", str(out),
               "-m", "demo", "--option", f"num_predict={TOKENS}", "--quiet",
               *[arg for h in hosts for arg in ("--host", f"{h.url}={PARALLEL}")]]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while _lines(out) < KILL_AFTER and proc.poll() is None:
            assert time.monotonic() < deadline, "the batch made no progress"
            time.sleep(0.01)  # polling a file with a deadline: there is no event
        hosts[1].kill()
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        stop_hosts(hosts)
    stderr = err.decode(errors="replace")
    assert proc.returncode == 0, stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["id"] for r in records) == ids  # every id, exactly once
    assert not (tmp_path / "out.errors.jsonl").exists()
    match = re.search(r"(\d+) restarted after a cut", stderr)
    assert match and int(match.group(1)) >= 1, stderr


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0
