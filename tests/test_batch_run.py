"""Batch runs (``streamkit.batch.run``): requests, validation before any request,
and runs against the in-process emulator."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
from batchfiles import expected as _expected
from batchfiles import lines as _lines
from batchfiles import prompts as _prompts
from batchfiles import write as _write

from streamkit import emulator
from streamkit.batch import BatchConfig, PromptFileError, run_batch
from streamkit.batch.output import (
    errors_path,
)
from streamkit.batch.promptline import PromptLine
from streamkit.batch.run import build_request
from streamkit.errors import ConnectError, ModelNotFound
from streamkit.records import ChatRequest, GenerateRequest


@pytest.fixture()
def emu() -> Iterator[Any]:
    with emulator.Emulator(emulator.EmulatorConfig(parallel=4)) as server:
        yield server


# --- requests ------------------------------------------------------------------


def test_line_fields_override_defaults() -> None:
    config = BatchConfig("p.jsonl", "o.jsonl", model="dm", system="ds",
                         options={"temperature": 0, "seed": 1}, format="json", think=False)
    plain = build_request(PromptLine(1, "1", prompt="hi"), config)
    assert plain == GenerateRequest("dm", "hi", system="ds", options={"temperature": 0, "seed": 1},
                                    format="json", think=False, id="1")
    line = PromptLine(2, "x", prompt="hi", model="lm", system="ls", options={"seed": 2},
                      format={"type": "object"}, think=True)
    custom = build_request(line, config)
    assert custom == GenerateRequest("lm", "hi", system="ls",
                                     options={"temperature": 0, "seed": 2},
                                     format={"type": "object"}, think=True, id="x")


def test_chat_lines_get_the_system_message_unless_they_have_one() -> None:
    config = BatchConfig("p.jsonl", "o.jsonl", model="m", system="sys")
    user = [{"role": "user", "content": "hi"}]
    request = build_request(PromptLine(1, "1", messages=user), config)
    assert isinstance(request, ChatRequest)
    assert list(request.messages) == [{"role": "system", "content": "sys"}, *user]
    own = [{"role": "system", "content": "mine"}, *user]
    request = build_request(PromptLine(1, "1", messages=own), config)
    assert isinstance(request, ChatRequest) and list(request.messages) == own


# --- validation before any request ------------------------------------------------


def test_run_batch_reports_all_problems_before_any_request(tmp_path: Path) -> None:
    prompts = _write(tmp_path / "p.jsonl",
                     b'{"prompt": "a", "id": "x"}\n{"prompt": 1}\nnot json\n'
                     b'{"prompt": "b", "id": "x"}\n')
    out = tmp_path / "out.jsonl"
    # No server exists at this host: reaching it would be a ConnectError, not a PromptFileError.
    with pytest.raises(PromptFileError) as info:
        run_batch(prompts, str(out), model="m", hosts=["http://127.0.0.1:9"])
    assert [p.line for p in info.value.problems] == [2, 3, 4]
    assert "duplicate id 'x' (first on line 1)" in str(info.value)
    assert "--skip-invalid" in str(info.value)
    assert not out.exists()


def test_problem_list_is_capped_with_a_count(tmp_path: Path) -> None:
    prompts = _write(tmp_path / "p.jsonl", b"{bad\n" * 30)
    with pytest.raises(PromptFileError) as info:
        run_batch(prompts, str(tmp_path / "o.jsonl"), model="m")
    assert len(info.value.problems) == 20 and info.value.total == 30
    assert "... and 10 more" in str(info.value)


# --- runs against the emulator -----------------------------------------------------

def test_run_writes_every_id_once_with_the_right_text(tmp_path: Path, emu: Any) -> None:
    prompts = _prompts(tmp_path, 12)
    out = str(tmp_path / "out.jsonl")
    summary = run_batch(prompts, out, model="demo", hosts=[emu.url], workers=4)
    assert (summary.ok, summary.failed, summary.exit_code) == (12, 0, 0)
    records = {r["id"]: r for r in _lines(out)}
    assert sorted(records) == sorted(f"q{i}" for i in range(12))
    for i in range(12):
        record = records[f"q{i}"]
        assert record["response"] == _expected(f"prompt number {i}")
        assert record["host"] == emu.url and record["done_reason"] == "stop"
        assert record["stats"]["eval_count"] > 0 and record["attempts"] == 1
    assert not os.path.exists(errors_path(out))
    # Resume: nothing left to do, nothing sent.
    before = emu.counters()["inference"]
    again = run_batch(prompts, out, model="demo", hosts=[emu.url])
    assert (again.ok, again.skipped, again.exit_code) == (0, 12, 0)
    assert emu.counters()["inference"] == before
    assert len(_lines(out)) == 12


def test_ordered_output_follows_input_order(tmp_path: Path, emu: Any) -> None:
    prompts = _prompts(tmp_path, 10)
    out = str(tmp_path / "out.jsonl")
    run_batch(prompts, out, model="demo", hosts=[emu.url], workers=4, ordered=True)
    assert [r["id"] for r in _lines(out)] == [f"q{i}" for i in range(10)]


def test_failures_go_to_the_error_file_and_are_retried(tmp_path: Path, emu: Any) -> None:
    prompts = _write(tmp_path / "p.jsonl",
                     b'{"id": "good", "prompt": "x"}\n{"id": "bad", "prompt": "y", '
                     b'"model": "no-such-model"}\n')
    out = str(tmp_path / "out.jsonl")
    summary = run_batch(prompts, out, model="demo", hosts=[emu.url])
    assert (summary.ok, summary.failed, summary.exit_code) == (1, 1, 1)
    errors = _lines(errors_path(out))
    assert len(errors) == 1
    assert errors[0]["id"] == "bad" and errors[0]["line"] == 2
    assert errors[0]["type"] == "ModelNotFound" and "no-such-model" in errors[0]["message"]
    assert errors[0]["attempts"] == 1 and errors[0]["host"] == emu.url
    # The next run retries only the failed id; the error file then holds its latest failure.
    before = emu.counters()["inference"]
    again = run_batch(prompts, out, model="demo", hosts=[emu.url])
    assert (again.ok, again.failed, again.skipped) == (0, 1, 1)
    assert emu.counters()["inference"] == before + 1
    assert [e["id"] for e in _lines(errors_path(out))] == ["bad"]


def test_a_missing_run_model_stops_before_any_request(tmp_path: Path, emu: Any) -> None:
    prompts = _write(tmp_path / "p.jsonl", b'{"id": "a", "prompt": "x"}\n'
                                           b'{"id": "b", "prompt": "y", "model": "demo"}\n')
    out = tmp_path / "out.jsonl"
    with pytest.raises(ModelNotFound, match=r"'Demo3' not found: the server has demo:latest"):
        run_batch(prompts, str(out), model="Demo3", hosts=[emu.url])
    assert emu.counters()["inference"] == 0 and not out.exists()
    # The check is as lenient as Ollama's name rules: no tag is :latest; case aside.
    summary = run_batch(prompts, str(out), model="DEMO:latest", hosts=[emu.url])
    assert summary.ok + summary.failed == 2


def test_skip_invalid_runs_the_good_lines(tmp_path: Path, emu: Any) -> None:
    prompts = _write(tmp_path / "p.jsonl",
                     b'"a"\n{"prompt": 1}\n"a"\n{"id": "1", "prompt": "dup"}\n')
    out = str(tmp_path / "out.jsonl")
    messages: List[str] = []
    summary = run_batch(prompts, out, model="demo", hosts=[emu.url], skip_invalid=True,
                        report=messages.append)
    assert (summary.ok, summary.invalid, summary.exit_code) == (2, 2, 1)
    assert sorted(r["id"] for r in _lines(out)) == ["1", "3"]
    assert any(":2: " in m for m in messages) and any(":4: duplicate id" in m for m in messages)


def test_per_line_options_reach_the_server(tmp_path: Path, emu: Any) -> None:
    prompts = _write(tmp_path / "p.jsonl",
                     b'{"id": "short", "prompt": "x", "options": {"num_predict": 3}}\n'
                     b'{"id": "default", "prompt": "x"}\n')
    out = str(tmp_path / "out.jsonl")
    run_batch(prompts, out, model="demo", hosts=[emu.url], options={"num_predict": 5})
    records = {r["id"]: r for r in _lines(out)}
    assert records["short"]["stats"]["eval_count"] == 3
    assert records["default"]["stats"]["eval_count"] == 5
    assert records["short"]["response"] == _expected("x", options={"num_predict": 3})


def test_stop_event_cancels_in_flight_streams(tmp_path: Path) -> None:
    config = emulator.EmulatorConfig(parallel=4, tokens_per_second=20)
    with emulator.Emulator(config) as server:
        prompts = _prompts(tmp_path, 20)
        out = str(tmp_path / "out.jsonl")
        stop = threading.Event()
        outcome: Dict[str, Any] = {}

        def run() -> None:
            outcome["summary"] = run_batch(prompts, out, model="demo", hosts=[server.url],
                                           workers=4, options={"num_predict": 200}, stop=stop)

        thread = threading.Thread(target=run)
        thread.start()
        assert server.wait_until(lambda c: c["in_flight"] >= 4, timeout=10)
        stop.set()
        thread.join(timeout=10)
        assert not thread.is_alive()
        summary = outcome["summary"]
        assert summary.interrupted and summary.exit_code == 130
        assert summary.not_run == 20 and summary.ok == 0
        assert server.wait_until(lambda c: c["disconnects"] >= 4, timeout=5)
    assert not os.path.exists(errors_path(out))  # a cancel is not a failure


def test_unreachable_host_fails_every_prompt(tmp_path: Path) -> None:
    prompts = _prompts(tmp_path, 2)
    out = str(tmp_path / "out.jsonl")
    from streamkit.config import RetryPolicy
    summary = run_batch(prompts, out, model="demo", hosts=["http://127.0.0.1:9"],
                        retry=RetryPolicy(attempts=1))
    assert (summary.ok, summary.failed, summary.exit_code) == (0, 2, 1)
    assert {e["type"] for e in _lines(errors_path(out))} == {ConnectError.__name__}


def test_cache_second_run_sends_nothing_and_writes_the_same_answers(tmp_path: Path,
                                                                     emu: Any) -> None:
    prompts = _write(tmp_path / "p.jsonl",
                     b'{"id": "a", "prompt": "x"}\n{"id": "b", "prompt": "y", "think": true}\n'
                     b'{"id": "c", "messages": [{"role": "user", "content": "z"}]}\n')
    cache = str(tmp_path / "cache.db")
    first, second = str(tmp_path / "first.jsonl"), str(tmp_path / "second.jsonl")
    summary = run_batch(prompts, first, model="demo", hosts=[emu.url], cache=cache)
    assert (summary.ok, summary.cached) == (3, 0)
    before = emu.counters()
    summary = run_batch(prompts, second, model="demo", hosts=[emu.url], cache=cache)
    assert (summary.ok, summary.cached) == (3, 3)
    after = emu.counters()
    # No generation; the one request is /api/tags, for the model's digest (the cache key).
    assert (after["inference"], after["requests"]) == (before["inference"],
                                                        before["requests"] + 1)

    def answer(record: Dict[str, Any]) -> Dict[str, Any]:
        keep = ("id", "model", "response", "thinking", "done_reason", "stats")
        return {k: record.get(k) for k in keep}

    fresh = sorted(_lines(first), key=lambda r: r["id"])
    cached = sorted(_lines(second), key=lambda r: r["id"])
    assert [answer(r) for r in fresh] == [answer(r) for r in cached]
    assert all(r["cached"] is True for r in cached) and not any("cached" in r for r in fresh)
    assert fresh[1]["thinking"]  # the think request's reasoning survives the cache


def test_no_resume_starts_over(tmp_path: Path, emu: Any) -> None:
    prompts = _prompts(tmp_path, 3)
    out = str(tmp_path / "out.jsonl")
    run_batch(prompts, out, model="demo", hosts=[emu.url])
    summary = run_batch(prompts, out, model="demo", hosts=[emu.url], resume=False)
    assert (summary.ok, summary.skipped) == (3, 0)
    assert len(_lines(out)) == 3
