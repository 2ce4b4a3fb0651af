"""``streamkit batch --embed`` as a subprocess: SIGKILL at random points, then resume.

Every line must end up in the output exactly once, with the vector the
emulator gives for its text. The emulator runs in the test process with a
per-request cost, so a run lasts long enough to be killed in the middle.
"""

from __future__ import annotations

import json
import random
import signal
import sys
from pathlib import Path
from typing import Any, Dict, List, Sequence

import pytest
from batchfiles import finish as _finish
from test_batch_crash import _count_lines, _start, _wait_for

emulator = pytest.importorskip("streamkit.emulator")

N_LINES = 2000
KILLS = 5
GROUP = 64
MODEL = "demo-embed"
RUN_TIMEOUT_S = 120.0


def corpus(path: Path, n: int) -> List[str]:
    """``n`` distinct lines of 3 to 12 words."""
    rng = random.Random(n)
    words = ("alpha", "beta", "gamma", "delta", "river", "stone", "lamp", "seven", "blue")
    texts = [" ".join(rng.choice(words) for _ in range(3 + i % 10)) + f" {i}" for i in range(n)]
    path.write_text("\n".join(texts) + "\n")
    return texts


def kill_and_resume(command: Sequence[str], out: Path, n: int, kills: int,
                    seed: int = 20261201) -> int:
    """Run ``command`` ``kills`` times, SIGKILLing each run after a random number of new
    lines (one torn record appended after the second kill), then once to the end.
    Returns how many runs were still running when killed."""
    rng = random.Random(seed)
    killed = 0
    for round_no in range(kills):
        target = _count_lines(out) + rng.randint(1, max(2, n // (kills + 1)))
        proc = _start(list(command))
        try:
            _wait_for(lambda p=proc, t=target: _count_lines(out) >= t or p.poll() is not None,
                      RUN_TIMEOUT_S)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                killed += 1
        finally:
            _finish(proc, RUN_TIMEOUT_S)
        if round_no == 1:
            with open(out, "ab") as f:  # as a crash in the middle of a write leaves it
                f.write(b'{"id": "1", "model": "demo-embed", "embedding": [0.12')
    final = _start(list(command))
    err = _finish(final, RUN_TIMEOUT_S)
    assert final.returncode == 0, err
    return killed


def check_exactly_once(out: Path, texts: List[str], config: Any) -> None:
    data = out.read_bytes()
    assert data.endswith(b"\n"), "a torn last line survived"
    records: Dict[str, Dict[str, Any]] = {}
    for line in data.splitlines():
        record = json.loads(line)
        assert record["id"] not in records, f"id {record['id']} written twice"
        records[record["id"]] = record
    assert sorted(records, key=int) == [str(i + 1) for i in range(len(texts))]
    for i, text in enumerate(texts):
        want = emulator.expected_embedding(MODEL, text, config)
        assert [records[str(i + 1)]["embedding"]] == want, i + 1


def test_sigkill_at_random_points_then_resume(tmp_path: Path) -> None:
    texts = corpus(tmp_path / "corpus.txt", N_LINES)
    out = tmp_path / "vectors.jsonl"
    config = emulator.EmulatorConfig(embed_dim=64, embed_request_cost=0.04)
    with emulator.Emulator(config) as emu:
        command = [sys.executable, "-m", "streamkit", "batch", str(tmp_path / "corpus.txt"),
                   "--embed", "-o", str(out), "-m", MODEL, "--host", f"{emu.url}=2",
                   "--embed-batch", str(GROUP), "--quiet"]
        killed = kill_and_resume(command, out, N_LINES, KILLS)
        # Every group was sent at most once per run that could have written it.
        assert emu.counters()["inference"] <= (KILLS + 1) * -(-N_LINES // GROUP)
    assert killed >= KILLS - 1, f"only {killed} runs were still running when killed"
    check_exactly_once(out, texts, config)
