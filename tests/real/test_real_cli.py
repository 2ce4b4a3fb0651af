"""``streamkit batch`` and ``streamkit bench`` as subprocesses against the real server.

The bench report is written next to the test's tmp dir and, when
``STREAMKIT_REAL_REPORT`` names a file, copied there (for release notes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest
from realserver import GREEDY, RealServer

pytestmark = pytest.mark.real

CLI_TIMEOUT_S = 170  # a subprocess run, on a machine that may be busy
PROMPTS = ["Once upon a time", "The capital of France is", "Water boils at",
           "My favourite color is", "The first man on the moon was"]


def _streamkit(args: List[str], cwd: Path) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    return subprocess.run([sys.executable, "-m", "streamkit", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=CLI_TIMEOUT_S, check=False)


def _read_jsonl(path: Path) -> List[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.timeout(CLI_TIMEOUT_S * 2 + 30)
def test_batch_runs_five_prompts_then_resumes(real_server: RealServer, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(
        json.dumps({"id": f"p{i}", "prompt": text,
                    "options": {"num_predict": 12, **GREEDY}}) + "\n"
        for i, text in enumerate(PROMPTS, 1)))
    out = tmp_path / "out.jsonl"
    args = ["batch", str(prompts), "-m", real_server.model, "-o", str(out),
            "--host", real_server.url, "--dialect", "openai", "--workers", "2", "--quiet"]

    done = _streamkit(args, tmp_path)
    assert done.returncode == 0, done.stderr
    rows = _read_jsonl(out)
    assert sorted(r["id"] for r in rows) == [f"p{i}" for i in range(1, 6)]
    for row in rows:
        assert row["response"].strip(), row
        assert row["done_reason"] == "length", row
        assert row["host"].startswith("http://127.0.0.1:"), row
    assert not (tmp_path / "out.errors.jsonl").exists() or not _read_jsonl(
        tmp_path / "out.errors.jsonl")

    # Resume is the default: a second run sends nothing and changes nothing.
    offset = real_server.log_offset()
    again = _streamkit(args, tmp_path)
    assert again.returncode == 0, again.stderr
    assert _read_jsonl(out) == rows
    if real_server.log_path is not None:
        assert "POST /v1/completions" not in real_server.log_since(offset)


@pytest.mark.timeout(CLI_TIMEOUT_S + 30)
def test_bench_reports_on_the_real_server(real_server: RealServer, tmp_path: Path) -> None:
    out_dir = tmp_path / "bench"
    done = _streamkit(["bench", "-m", real_server.model, "--host", real_server.url,
                       "--dialect", "openai", "--concurrency", "1", "--requests", "5",
                       "--num-predict", "32", "--out", str(out_dir),
                       # greedy and seeded, as in the batch test: a sampled answer can
                       # reach end-of-text before 32 tokens (llama-cpp-python keeps the
                       # sampler's state between requests, so it depends on test order)
                       *[arg for key, value in GREEDY.items()
                         for arg in ("-O", f"{key}={value}")]], tmp_path)
    report = done.stdout + done.stderr
    (tmp_path / "bench-report.txt").write_text(report)
    target = os.environ.get("STREAMKIT_REAL_REPORT")
    if target:
        Path(target).write_text(report)
    assert done.returncode == 0, report
    run = json.loads((out_dir / "run.json").read_text())
    summary = run["points"][0]["summary"]
    assert (summary["requests"], summary["ok"], summary["failed"]) == (5, 5, 0), summary
    rows = [r for r in _read_jsonl(out_dir / "requests.jsonl") if not r["warmup"]]
    assert len(rows) == 5
    for row in rows:
        assert row["ok"] and row["error"] is None, row
        assert row["done_reason"] == "length", row
        # One token per event from llama-cpp-python: up to 32 text chunks.
        assert 2 <= row["text_chunks"] <= 32, row
        assert 0 < row["ttft_ms"] <= row["e2e_ms"], row
    print(report)  # shown with -s / -rA: the closing note quotes it
