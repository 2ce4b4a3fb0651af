"""Result files (``streamkit.batch.output``): records, append-only writes, resume."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from batchfiles import lines as _lines

from streamkit.batch.output import ErrorLog, RecordWriter, errors_path
from streamkit.batch.records import result_record
from streamkit.batch.resume import repair, scan_output
from streamkit.errors import ConfigError
from streamkit.records import Result, Stats, Timing

# --- output and resume -------------------------------------------------------------


def test_errors_path() -> None:
    assert errors_path("results.jsonl") == "results.errors.jsonl"
    assert errors_path("dir/out.txt") == "dir/out.txt.errors.jsonl"


def _ok_result(rid: str, text: str = "hi") -> Result:
    return Result(id=rid, model="m", host="http://h:1", text=text, done_reason="stop",
                  stats=Stats(eval_count=2), timing=Timing(started_ns=0, sent_ns=10**6,
                                                           first_token_ns=3 * 10**6,
                                                           done_ns=5 * 10**6, chunks=2),
                  attempts=1)


def test_result_record_shape() -> None:
    record = result_record(_ok_result("a"), "a")
    assert list(record) == ["id", "model", "host", "response", "done_reason", "stats",
                            "timing", "attempts"]
    assert record["timing"] == {"ttft_ms": 2.0, "total_ms": 5.0, "chunks": 2}
    cached = _ok_result("b")
    cached.thinking, cached.cached = "hmm", True
    record = result_record(cached, "b")
    assert record["thinking"] == "hmm" and record["cached"] is True


def test_writer_one_line_per_record_and_no_duplicates(tmp_path: Path) -> None:
    path = str(tmp_path / "o.jsonl")
    writer = RecordWriter(path)
    assert writer.write({"id": "a", "response": "x\ny"})
    assert not writer.write({"id": "a", "response": "again"})
    writer.close()
    writer.close()
    assert _lines(path) == [{"id": "a", "response": "x\ny"}]


@pytest.mark.parametrize("tail", [b'{"id": "c", "resp', b'{"id": "c"}', b"\x00\x00\x00\n",
                                  b'{"no_id": 1}\n'])
def test_torn_last_line_is_detected_and_repaired(tmp_path: Path, tail: bytes) -> None:
    path = tmp_path / "o.jsonl"
    good = b'{"id": "a"}\n{"id": "b"}\n'
    path.write_bytes(good + tail)
    state = scan_output(str(path))
    assert state.done == {"a", "b"} and state.torn_bytes == len(tail)
    repair(str(path), state)
    assert path.read_bytes() == good


def test_bad_line_before_the_last_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "o.jsonl"
    path.write_bytes(b'{"id": "a"}\ngarbage\n{"id": "b"}\n')
    with pytest.raises(ConfigError, match=r"o\.jsonl:2: not a JSON result record"):
        scan_output(str(path))


def test_error_log_keeps_the_latest_failure_of_unfinished_ids(tmp_path: Path) -> None:
    path = str(tmp_path / "o.errors.jsonl")
    Path(path).write_text('{"id": "a", "type": "Old"}\n{"id": "b", "type": "Old"}\n{"id": "c"\n')
    log = ErrorLog(path, done={"b"}, resume=True)
    assert [r["id"] for r in _lines(path)] == ["a"]  # b is done; the torn line is gone
    log.add({"id": "a", "type": "New"})
    log.add({"id": "d", "type": "New"})
    log.close(done={"b", "d"})
    assert _lines(path) == [{"id": "a", "type": "New"}]
    ErrorLog(path, done={"a"}, resume=True).close(done={"a"})
    assert not os.path.exists(path)  # no entries: no file
