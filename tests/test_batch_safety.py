"""Hostile conditions for ``streamkit batch``: each test reproduces a way a run
could lose, duplicate or misattribute answers, or hang, and checks the fix.

Concurrent runs on one output, prompts edited under the same id, a re-pulled
model behind the cache, outputs that are not regular files, a full disk,
records no JSON encoder can write as-is, two SIGINTs at once, a locked cache.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import select
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
from batchfiles import RUN_TIMEOUT_S, finish
from batchfiles import expected as _expected
from batchfiles import lines as _lines
from batchfiles import prompts as _prompts
from rawserver import RawConn, RawServer

from streamkit import _json, emulator
from streamkit.batch import run_batch
from streamkit.batch.cache import SQLiteCache
from streamkit.cli import main

POLL_S = 0.01


@pytest.fixture()
def emu() -> Iterator[Any]:
    with emulator.Emulator(emulator.EmulatorConfig(parallel=4)) as server:
        yield server


def _slow_emulator() -> Any:
    # 400 tokens at 20 tokens/s: a prompt takes 20 s, so a run is still going
    # when the test acts on it.
    config = emulator.EmulatorConfig(parallel=4, tokens_per_second=20,
                                     response_tokens=(400, 400))
    return emulator.Emulator(config)


def _command(prompts: str, out: str, url: str, *extra: str) -> List[str]:
    return [sys.executable, "-m", "streamkit", "batch", prompts, "-o", out, "-m", "demo",
            "--host", f"{url}=4", "--quiet", *extra]


def _start(command: List[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _strict(path: str) -> List[Dict[str, Any]]:
    """Every line of ``path`` as strict JSON (no NaN/Infinity, valid UTF-8)."""
    def refuse(name: str) -> Any:
        raise ValueError(f"not JSON: {name}")
    with open(path, "rb") as f:
        return [json.loads(raw.decode("utf-8"), parse_constant=refuse) for raw in f]


# --- concurrent runs on one output ----------------------------------------------------


def test_second_run_on_one_output_fails_at_once_naming_the_holder(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prompts = _prompts(tmp_path, 8)
    out = str(tmp_path / "out.jsonl")
    with _slow_emulator() as slow:
        first = _start(_command(prompts, out, slow.url))
        try:
            assert slow.wait_until(lambda c: c["in_flight"] >= 4, timeout=RUN_TIMEOUT_S), \
                slow.counters()
            started = time.monotonic()
            code = main(["batch", prompts, "-o", out, "-m", "demo", "--host", slow.url,
                         "--quiet", "--timeout", "2"])
            elapsed = time.monotonic() - started
            err = capsys.readouterr().err
            assert code == 2, err
            assert elapsed < 2.0
            assert f"pid {first.pid}" in err and out in err
            # The holder dies without cleaning up: the OS releases the lock.
            first.kill()
        finally:
            finish(first)
    with emulator.Emulator(emulator.EmulatorConfig(parallel=4,
                                                   response_tokens=(400, 400))) as fast:
        assert main(["batch", prompts, "-o", out, "-m", "demo", "--host", fast.url,
                     "--quiet"]) == 0
    ids = [r["id"] for r in _lines(out)]
    assert sorted(ids) == sorted(f"q{i}" for i in range(8))


# --- an edited prompt under the same id -----------------------------------------------


def test_edited_and_shifted_prompts_are_rerun_without_duplicates(
        tmp_path: Path, emu: Any, capsys: pytest.CaptureFixture[str]) -> None:
    prompts = tmp_path / "p.txt"
    out = str(tmp_path / "out.jsonl")
    prompts.write_text("Say hi\nCapital of France?\n")
    base = ["batch", str(prompts), "-o", out, "-m", "demo", "--host", emu.url, "--quiet"]
    assert main(base) == 0
    # A line inserted before "France": ids are line numbers, so ids 2 and 3 change.
    prompts.write_text("Say hi\nTranslate hello\nCapital of France?\n")
    assert main(base) == 0
    err = capsys.readouterr().err
    assert "changed" in err and "'2'" in err
    records = _lines(out)
    assert sorted(r["id"] for r in records) == ["1", "2", "3"]  # no id twice
    by_id = {r["id"]: r["response"] for r in records}
    assert by_id == {"1": _expected("Say hi"), "2": _expected("Translate hello"),
                     "3": _expected("Capital of France?")}
    # A third run has nothing to do.
    assert main(base) == 0
    assert "0 ok, 0 failed, 3 already done" in capsys.readouterr().err


def test_cache_key_includes_the_model_digest_and_hits_add_no_tokens(
        tmp_path: Path, emu: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    prompts = _prompts(tmp_path, 3)
    cache = str(tmp_path / "cache.db")
    out = str(tmp_path / "out.jsonl")
    common: Dict[str, Any] = dict(model="demo", hosts=[emu.url], cache=cache, resume=False,
                                  progress=False)
    first = run_batch(prompts, out, **common)
    assert (first.ok, first.cached) == (3, 0) and first.output_tokens > 0
    again = run_batch(prompts, out, **common)
    assert (again.ok, again.cached) == (3, 3)
    assert again.output_tokens == 0 and "(0 tok/s)" in again.line()
    assert emu.counters()["inference"] == 3
    # The model is pulled again (new digest): the old answers must not be served.
    from streamkit._emulator import catalog
    real_digest = catalog._digest
    monkeypatch.setattr(catalog, "_digest", lambda name, salt="": real_digest(name, "v2" + salt))
    repulled = run_batch(prompts, out, **common)
    assert (repulled.ok, repulled.cached) == (3, 0)
    assert emu.counters()["inference"] == 6


# --- outputs that are not regular files -----------------------------------------------


@pytest.mark.parametrize("kind", ["fifo", "/dev/full"])
def test_non_regular_output_is_refused(tmp_path: Path, kind: str) -> None:
    prompts = _prompts(tmp_path, 2)
    if kind == "fifo":
        out = str(tmp_path / "out.jsonl")
        os.mkfifo(out)
    else:
        out = kind
        if not os.path.exists(out):
            pytest.skip("no /dev/full here")
    proc = _start(_command(prompts, out, "http://127.0.0.1:9"))
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=15.0)  # before the fix: it hangs (FIFO) or reads forever
    err = finish(proc, timeout=1.0)
    assert proc.returncode == 2, err
    assert "not a regular file" in err


# --- a full disk, and records no encoder can write as-is ---------------------------------


def test_disk_full_is_a_clear_message_a_distinct_exit_code_and_a_resume_hint(
        tmp_path: Path, emu: Any, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    prompts = _prompts(tmp_path, 6)
    out = str(tmp_path / "out.jsonl")
    real_write = os.write
    written: List[int] = []

    def write(fd: int, data: Any) -> int:
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if target == out:
            if written:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            written.append(fd)
        return real_write(fd, data)

    if not os.path.exists("/proc/self/fd"):
        pytest.skip("needs /proc to tell the output's descriptor")
    monkeypatch.setattr(os, "write", write)
    code = main(["batch", prompts, "-o", out, "-m", "demo", "--host", f"{emu.url}=1",
                 "--quiet"])
    monkeypatch.setattr(os, "write", real_write)
    err = capsys.readouterr().err
    assert code == 3, err
    assert "no space left" in err.lower() and "resume with: streamkit batch" in err
    assert "Traceback" not in err
    assert len(_strict(out)) == 1  # what was written is kept, and is whole
    assert main(["batch", prompts, "-o", out, "-m", "demo", "--host", emu.url,
                 "--quiet"]) == 0
    assert sorted(r["id"] for r in _strict(out)) == sorted(f"q{i}" for i in range(6))


def _hostile_reply(conn: RawConn) -> None:
    """q0: a lone surrogate in the text; q1: numbers JSON cannot carry."""
    conn.send_head(200, {"Content-Type": "application/x-ndjson"})
    if b"number 0" in conn.request.body:
        conn.send_chunk(b'{"model":"demo","response":"a\\ud800b","done":false}\n')
        conn.send_chunk(b'{"model":"demo","response":"","done":true,"done_reason":"stop",'
                        b'"eval_count":2,"eval_duration":1000}\n')
    else:
        conn.send_chunk(b'{"model":"demo","response":"c","done":false,"x":NaN}\n')
        conn.send_chunk(b'{"model":"demo","response":"","done":true,"done_reason":"stop",'
                        b'"eval_count":1e999,"eval_duration":1000}\n')
    conn.end_chunks()


@pytest.mark.parametrize("backend", ["json", "orjson"])
def test_lone_surrogates_and_non_finite_numbers_never_make_invalid_json(
        tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    if backend == "orjson":
        if _json.fast_loads is None:
            pytest.skip("the fast extra (orjson) is not installed")
        monkeypatch.setattr(_json, "loads", _json.fast_loads)
    else:
        monkeypatch.setattr(_json, "loads", _json.stdlib_loads)
    prompts = _prompts(tmp_path, 2)
    out = str(tmp_path / "out.jsonl")
    command = ["batch", prompts, "-o", out, "-m", "demo", "--host", "URL", "--quiet",
               "--retries", "0"]
    with RawServer(_hostile_reply) as server:
        code = main([server.url if word == "URL" else word for word in command])
    err = capsys.readouterr().err
    assert code == 1, err  # q1 failed: its records are not JSON a decoder may accept
    assert [(r["id"], r["response"]) for r in _strict(out)] == [("q0", "a\ufffdb")]
    failures = _strict(str(tmp_path / "out.errors.jsonl"))
    assert [(r["id"], r["type"]) for r in failures] == [("q1", "ProtocolError")]
    assert "nan" not in err.lower() and "inf tok/s" not in err
    # A later resume accepts both files and retries q1 only.
    with RawServer(_hostile_reply) as server:
        assert main([server.url if word == "URL" else word for word in command]) == 1
        # One inference request (the model list asked first is a GET).
        assert [r.method for r in server.requests if r.method == "POST"] == ["POST"]
    assert "1 already done" in capsys.readouterr().err


@pytest.mark.parametrize("data", [b'"a\\ud800b"', b'"\\udfff"', b'["x", "\\uD83D"]',
                                  b'{"n": NaN}', b'{"n": -Infinity}', b'{"n": 1e999}',
                                  b'"\\ud83d\\ude00"', b'{"n": 1.5}'])
def test_both_json_backends_decode_hostile_values_alike(data: bytes) -> None:
    if _json.fast_loads is None:
        pytest.skip("the fast extra (orjson) is not installed")
    results = []
    for loads in (_json.stdlib_loads, _json.fast_loads):
        try:
            results.append(loads(data))
        except _json.DECODE_ERRORS:
            results.append("refused")
    assert results[0] == results[1]


# --- two SIGINTs at once ------------------------------------------------------------------


def _read_until(proc: subprocess.Popen[bytes], marker: bytes, timeout: float) -> bytes:
    """stderr of ``proc`` up to and including ``marker`` (b"" if it never comes)."""
    assert proc.stderr is not None
    fd, seen = proc.stderr.fileno(), b""
    deadline = time.monotonic() + timeout
    while marker not in seen:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return b""
        data = os.read(fd, 4096)
        if not data:
            return b""
        seen += data
    return seen


def test_two_sigints_at_once_stop_cleanly_like_one(tmp_path: Path) -> None:
    prompts = _prompts(tmp_path, 8)
    out = str(tmp_path / "out.jsonl")
    with _slow_emulator() as slow:
        proc = _start(_command(prompts, out, slow.url))
        try:
            assert slow.wait_until(lambda c: c["in_flight"] >= 4, timeout=RUN_TIMEOUT_S), \
                slow.counters()
            # What `timeout -s INT` hitting the process group looks like: a second
            # SIGINT right after the first one was handled.
            proc.send_signal(signal.SIGINT)
            head = _read_until(proc, b"stopping", timeout=10.0)
            assert head, "the first SIGINT was not handled"
            proc.send_signal(signal.SIGINT)
        finally:
            err = finish(proc)
    assert proc.returncode == 130, err
    assert "interrupted:" in err and "resume with: streamkit batch" in err


# --- a locked cache -------------------------------------------------------------------------


def test_a_locked_cache_never_slows_the_run(tmp_path: Path, emu: Any,
                                            caplog: pytest.LogCaptureFixture) -> None:
    prompts = _prompts(tmp_path, 4)
    cache = str(tmp_path / "cache.db")
    SQLiteCache(cache).close()
    holder = sqlite3.connect(cache, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another process's write transaction
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="streamkit"):
            summary = run_batch(prompts, str(tmp_path / "out.jsonl"), model="demo",
                                hosts=[emu.url], cache=cache, progress=False)
        elapsed = time.monotonic() - started
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert summary.ok == 4
    assert elapsed < 5.0, f"a busy cache slowed the run to {elapsed:.1f} s"
    busy = [r for r in caplog.records if "busy" in r.getMessage()]
    assert len(busy) == 1, [r.getMessage() for r in caplog.records]
