"""Messages that help: a missing model, the wrong dialect, a batch without a model,
an empty prompt file, CSV column names, ``Client("builtin")``, the docstrings,
and what a batch says when stderr is not a terminal or the server counts no tokens."""

from __future__ import annotations

import inspect
import json
import socket
from pathlib import Path
from typing import Any, Iterator

import pytest
from batchfiles import lines as _lines
from batchfiles import write as _write
from rawserver import RawServer, Wire, wire_handler

import streamkit as sk
from streamkit import emulator
from streamkit.batch import run as batch_run
from streamkit.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main

MODELS = ("llama3.2", "llama3.1", "qwen3", "gemma3", "mistral", "phi4", "llava")


@pytest.fixture()
def many_models() -> Iterator[emulator.Emulator]:
    with emulator.Emulator(emulator.EmulatorConfig(models=MODELS, embed_models=())) as server:
        yield server


def _assert_names_the_closest_models(err: str) -> None:
    """One line: 'llama3' named once, five of MODELS closest first, the pull hint."""
    [line] = err.strip().splitlines()
    assert line.count("'llama3'") == 1
    named = line.split(" has ", 1)[1].split(";")[0]
    assert named.startswith("llama3.2:latest, llama3.1:latest")  # closest first
    assert named.count(":latest") == 5 and named.endswith("and 2 more")
    assert "ollama pull llama3" in line


def test_unknown_model_said_once_with_the_closest_names(
        many_models: emulator.Emulator, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "--host", many_models.url, "-m", "llama3", "Hi"]) == EXIT_FAILED
    _assert_names_the_closest_models(capsys.readouterr().err)


def test_batch_with_an_unknown_model_on_builtin_stops_before_the_first_request(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prompts = _write(tmp_path / "p.txt", b"".join(b"prompt %d\n" % i for i in range(30)))
    out = tmp_path / "o.jsonl"
    assert main(["batch", prompts, "-o", str(out), "-m", "llama3.2",
                 "--host", "builtin"]) == EXIT_USAGE
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.count("'llama3.2'") == 1
    assert "the built-in emulator has demo:latest" in line
    assert "streamkit emulate --model NAME" in line and "ollama pull" not in line
    assert not out.exists() and not (tmp_path / "o.errors.jsonl").exists()  # nothing run


def test_batch_with_an_unknown_model_names_the_closest_ones(
        many_models: emulator.Emulator, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    prompts = _write(tmp_path / "p.txt", b"a\nb\nc\n")
    out = tmp_path / "o.jsonl"
    assert main(["batch", prompts, "-o", str(out), "-m", "llama3",
                 "--host", many_models.url]) == EXIT_USAGE
    _assert_names_the_closest_models(capsys.readouterr().err)
    assert many_models.counters()["inference"] == 0 and not out.exists()


def test_batch_whose_lines_all_name_missing_models_points_to_the_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prompts = _write(tmp_path / "p.jsonl", b'{"prompt": "a", "model": "qwen3"}\n'
                                           b'{"prompt": "b", "model": "gemma3"}\n'
                                           b'{"prompt": "c", "model": "qwen3"}\n')
    out = tmp_path / "o.jsonl"
    assert main(["batch", prompts, "-o", str(out), "--host", "builtin"]) == EXIT_USAGE
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.count("'qwen3'") == 1 and "(also not found: 'gemma3')" in line
    assert 'name one in the "model" field (first asked for on line 1)' in line
    assert "the built-in emulator has demo:latest" in line and "ollama pull" not in line
    assert not out.exists()


def test_batch_line_failing_on_a_missing_model_says_what_the_server_has(
        many_models: emulator.Emulator, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    # One line's own model is missing beside a good one: it fails alone, said once.
    prompts = _write(tmp_path / "p.jsonl", b'{"id": "a", "prompt": "x"}\n'
                                           b'{"id": "b", "prompt": "y", "model": "gema3"}\n'
                                           b'{"id": "c", "prompt": "z", "model": "gema3"}\n')
    out = str(tmp_path / "o.jsonl")
    assert main(["batch", prompts, "-o", out, "-m", "qwen3", "--host", many_models.url,
                 "-q"]) == EXIT_FAILED
    assert [r["id"] for r in _lines(out)] == ["a"]
    failures = _lines(str(tmp_path / "o.errors.jsonl"))
    assert sorted(f["id"] for f in failures) == ["b", "c"]
    for failure in failures:
        assert failure["type"] == "ModelNotFound"
        assert failure["message"].count("'gema3'") == 1
        assert " has gemma3:latest, " in failure["message"]  # the closest first
        assert 'name one in the "model" field' in failure["message"]  # not -m: a line's
    err = capsys.readouterr().err
    assert err.count("model 'gema3' not found") == 1


def test_batch_on_builtin_without_a_model_check_still_names_its_models(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The OpenAI dialect is not checked before the run (llama.cpp answers any
    # name): each failed line's error says what the emulator serves instead.
    prompts = _write(tmp_path / "p.txt", b"a\nb\n")
    out = str(tmp_path / "o.jsonl")
    assert main(["batch", prompts, "-o", out, "-m", "nosuch", "--dialect", "openai",
                 "--host", "builtin", "-q"]) == EXIT_FAILED
    failures = _lines(str(tmp_path / "o.errors.jsonl"))
    assert len(failures) == 2
    for failure in failures:
        assert "the built-in emulator has demo:latest" in failure["message"]
        assert "ollama pull" not in failure["message"]
    err = capsys.readouterr().err
    assert err.count("model 'nosuch' not found") == 1 and "ollama pull" not in err


def test_wrong_dialect_404_suggests_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    def not_ollama(conn: Any) -> None:
        conn.respond(404, b'{"error": {"message": "File Not Found"}}')

    with RawServer(not_ollama) as server:
        assert main(["generate", "--host", server.url, "-m", "m", "Hi"]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert "--dialect openai" in err and 'dialect="openai"' not in err


def test_batch_without_a_model_says_so_once(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    prompts = _write(tmp_path / "p.txt", b"".join(b"prompt %d\n" % i for i in range(300)))
    out = str(tmp_path / "o.jsonl")
    assert main(["batch", prompts, "-o", out, "--host", "http://127.0.0.1:9"]) == EXIT_USAGE
    err = capsys.readouterr().err
    [line] = err.strip().splitlines()
    assert line.endswith(": no model: pass -m MODEL or give each line a model")
    assert main(["batch", prompts, "--check"]) == EXIT_USAGE
    assert "no model: pass -m MODEL or give each line a model" in capsys.readouterr().err


def test_empty_prompt_file_is_nothing_to_do(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    prompts = _write(tmp_path / "p.jsonl", b"\n\n")
    out = str(tmp_path / "o.jsonl")
    assert main(["batch", prompts, "-o", out, "--host", "builtin"]) == EXIT_OK
    err = capsys.readouterr().err
    assert "warning:" in err and "nothing to do" in err


def test_csv_prompt_and_id_columns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prompts = _write(tmp_path / "p.csv", b"key,question\nk1,first\nk2,second\n")
    out = str(tmp_path / "o.jsonl")
    assert main(["batch", prompts, "-o", out, "--host", "builtin", "-q"]) == EXIT_USAGE
    assert "--prompt-column NAME" in capsys.readouterr().err
    assert main(["batch", prompts, "-o", out, "--host", "builtin", "-q",
                 "--prompt-column", "question", "--id-column", "key"]) == EXIT_OK
    assert sorted(r["id"] for r in _lines(out)) == ["k1", "k2"]


def test_client_builtin_points_to_the_emulator(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_dns(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a DNS lookup")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    with pytest.raises(sk.ConfigError, match=r"sk\.Emulator\(\)"):
        sk.Client("builtin")


@pytest.mark.parametrize(("method", "arguments"), [
    (sk.Client.chat, ("model", "messages", "options", "format", "think", "tools",
                      "keep_alive", "id")),
    (sk.Client.generate, ("model", "prompt", "system", "options", "format", "think", "raw",
                          "images", "keep_alive", "suffix", "id")),
])
def test_help_describes_every_argument_with_an_example(method: Any, arguments: Any) -> None:
    doc = inspect.getdoc(method) or ""
    for name in arguments:
        assert f"\n    {name}:" in doc or f"{name}:" in doc.split("Args:")[1], name
    assert "Example::" in doc and "e.g." in doc
    assert "images" in doc  # chat: a message's key; generate: an argument


def test_batch_off_a_terminal_prints_progress_lines(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(batch_run, "PROGRESS_LINE_S", 0.2)
    prompts = _write(tmp_path / "p.txt", b"a\nb\nc\nd\n")
    out = str(tmp_path / "o.jsonl")
    # The built-in emulator is paced (40 tokens/s): each answer takes about a second.
    assert main(["batch", prompts, "-o", out, "--host", "builtin=1"]) == EXIT_OK
    err = capsys.readouterr().err
    progress = [line for line in err.splitlines() if line.startswith("progress: ")]
    assert progress and "/4 prompts" in progress[0]
    assert "done: 4 ok" in err.splitlines()[-1]


def test_batch_says_na_when_the_server_counts_no_tokens(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    llama_cpp = wire_handler(Wire("openai", "generate", usage=False), ["a", "b", "c"])
    prompts = _write(tmp_path / "p.jsonl", json.dumps("x").encode() + b"\n" +
                     json.dumps("y").encode() + b"\n")
    with RawServer(llama_cpp) as server:
        assert main(["batch", prompts, "-o", str(tmp_path / "o.jsonl"), "-m", "m",
                     "--dialect", "openai", "--host", server.url, "-q"]) == EXIT_OK
    summary = capsys.readouterr().err.strip().splitlines()[-1]
    assert "n/a (server sent no token counts" in summary
    assert "chunks, an estimate" in summary and "0 tokens" not in summary
