"""streamkit batch as a subprocess: SIGKILL at random points then resume, and Ctrl-C.

The emulator runs in the test process (so its counters can be read and
waited on); the batch runs as ``python -m streamkit batch`` pointed at it.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
from batchfiles import RUN_TIMEOUT_S, finish

emulator = pytest.importorskip("streamkit.emulator")

N_PROMPTS = 60
NUM_PREDICT = 6
KILLS = 6
POLL_S = 0.01


def _write_prompts(path: Path, n: int, long_from: Optional[int] = None) -> List[str]:
    ids, lines = [], []
    for i in range(n):
        record: Dict[str, Any] = {"id": f"q{i:03d}", "prompt": f"question {i}"}
        if long_from is not None:
            record["options"] = {"num_predict": 2 if i < long_from else 400}
        ids.append(record["id"])
        lines.append(json.dumps(record))
    path.write_text("\n".join(lines) + "\n")
    return ids


def _command(prompts: Path, out: Path, url: str, *extra: str) -> List[str]:
    return [sys.executable, "-m", "streamkit", "batch", str(prompts), "-o", str(out),
            "-m", "demo", "--host", f"{url}=4", "--quiet", *extra]


def _start(command: List[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _count_lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _wait_for(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_S)  # polling a file with a deadline: there is no event to wait on
    return True


def _records(path: Path) -> List[Dict[str, Any]]:
    data = path.read_bytes()
    assert data.endswith(b"\n"), "a torn last line survived"
    return [json.loads(line) for line in data.splitlines()]


def test_sigkill_at_random_points_then_resume(tmp_path: Path) -> None:
    rng = random.Random(20240611)
    prompts, out = tmp_path / "p.jsonl", tmp_path / "out.jsonl"
    ids = _write_prompts(prompts, N_PROMPTS)
    config = emulator.EmulatorConfig(parallel=4, tokens_per_second=150)
    with emulator.Emulator(config) as emu:
        command = _command(prompts, out, emu.url, "--option", f"num_predict={NUM_PREDICT}")
        kills = 0
        for round_no in range(KILLS):
            before = _count_lines(out)
            proc = _start(command)
            try:
                if round_no == 0:
                    # A kill at a random moment, possibly before any result.
                    _wait_for(lambda p=proc: p.poll() is not None, rng.uniform(0.05, 0.6))
                else:
                    target = before + rng.randint(1, 6)
                    _wait_for(lambda t=target, p=proc: _count_lines(out) >= t
                              or p.poll() is not None, RUN_TIMEOUT_S)
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    kills += 1
            finally:
                finish(proc)
            if round_no == 2:
                # A torn record, as a crash in the middle of a write would leave.
                with open(out, "ab") as f:
                    f.write(b'{"id": "q000", "model": "demo", "resp')
        assert kills >= 5, f"only {kills} runs were still running when killed"
        final = _start(command)
        err = finish(final)
        assert final.returncode == 0, err
        assert "repaired" not in err or "torn" in err

    records = _records(out)
    assert sorted(r["id"] for r in records) == ids  # every id, exactly once
    for record in records:
        number = int(record["id"][1:])
        want = emulator.expected("demo", {"prompt": f"question {number}",
                                          "options": {"num_predict": NUM_PREDICT}}, config)
        assert record["response"] == want.text, record["id"]


def test_torn_line_is_reported_and_repaired(tmp_path: Path) -> None:
    prompts, out = tmp_path / "p.jsonl", tmp_path / "out.jsonl"
    _write_prompts(prompts, 3)
    out.write_bytes(b'{"id": "q000", "response": "kept"}\n{"id": "q001", "resp')
    with emulator.Emulator(emulator.EmulatorConfig()) as emu:
        proc = _start(_command(prompts, out, emu.url))
        err = finish(proc)
    assert proc.returncode == 0, err
    assert "cut off a torn last line" in err
    records = _records(out)
    assert records[0] == {"id": "q000", "response": "kept"}
    assert sorted(r["id"] for r in records) == ["q000", "q001", "q002"]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_exits_130_quickly_cancels_streams_and_resumes(tmp_path: Path,
                                                             signum: int) -> None:
    prompts, out = tmp_path / "p.jsonl", tmp_path / "out.jsonl"
    ids = _write_prompts(prompts, 12, long_from=4)  # 4 quick answers, then 8 long ones
    # Natural length 400 tokens (20 s at 20 tokens/s); num_predict cuts the quick ones to 2.
    slow = emulator.EmulatorConfig(parallel=4, tokens_per_second=20, response_tokens=(400, 400))
    with emulator.Emulator(slow) as emu:
        proc = _start(_command(prompts, out, emu.url))
        try:
            started = emu.wait_until(lambda c: c["completed"] >= 4 and c["in_flight"] >= 4,
                                     timeout=RUN_TIMEOUT_S)
            assert started, emu.counters()
            assert _wait_for(lambda: _count_lines(out) >= 4, 5.0)
            sent = time.monotonic()
            proc.send_signal(signum)
            try:
                proc.wait(timeout=2.0)
                elapsed = time.monotonic() - sent
            except subprocess.TimeoutExpired:
                elapsed = float("inf")
        finally:
            err = finish(proc)
        assert proc.returncode == 130, err
        assert elapsed <= 2.0, f"took {elapsed:.2f} s to exit after the signal"
        assert emu.wait_until(lambda c: c["disconnects"] >= 4, timeout=5.0), emu.counters()
        assert emu.counters()["completed"] == 4  # the long ones were stopped, not finished
    assert "interrupted" in err and "resume with: streamkit batch" in err
    assert sorted(r["id"] for r in _records(out)) == ids[:4]

    # Rerun (against a fast server: same text, no pacing) completes the rest.
    fast_config = emulator.EmulatorConfig(parallel=4, response_tokens=(400, 400))
    with emulator.Emulator(fast_config) as fast:
        rerun = _start(_command(prompts, out, fast.url))
        err = finish(rerun)
        assert rerun.returncode == 0, err
        assert fast.counters()["inference"] == 8
    records = _records(out)
    assert sorted(r["id"] for r in records) == ids
    for record in records:
        number = int(record["id"][1:])
        options = {"num_predict": 2 if number < 4 else 400}
        body = {"prompt": f"question {number}", "options": options}
        assert record["response"] == emulator.expected("demo", body, fast_config).text
