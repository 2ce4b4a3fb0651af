"""Flags mean one thing in every command: -o the output, -O an option, --api-key,
--max-tokens, the bench aliases and its ``compare`` sub-command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, List

import pytest
from batchfiles import expected as _expected
from batchfiles import lines as _lines
from batchfiles import write as _write
from rawserver import RawServer, Wire, wire_handler

from streamkit import emulator
from streamkit.cli import EXIT_OK, EXIT_USAGE, build_parser, main

KEY = "sk-test-SECRET-4242"


@pytest.fixture()
def emu() -> Iterator[emulator.Emulator]:
    with emulator.Emulator(emulator.EmulatorConfig(parallel=2)) as server:
        yield server


def _subcommand_help(*words: str) -> str:
    parser = build_parser()
    for word in words:
        action = next(a for a in parser._actions if a.choices and word in a.choices)
        parser = action.choices[word]  # type: ignore[index]
    return parser.format_help()


# -- -o is the output, -O the option ----------------------------------------------


def test_batch_output_that_looks_like_an_option_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    prompts = _write(tmp_path / "p.txt", b"hi\n")
    monkeypatch.chdir(tmp_path)
    code = main(["batch", prompts, "-o", "temperature=0", "--host", "builtin"])
    assert code == EXIT_USAGE
    err = capsys.readouterr().err
    assert "-O/--option temperature=0" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "temperature=0").exists()


def test_bench_output_that_looks_like_an_option_is_refused(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--host", "builtin", "-o", "seed=1"]) == EXIT_USAGE
    assert "-O/--option seed=1" in capsys.readouterr().err


def test_batch_short_O_is_an_option_and_the_resume_command_says_so(
        tmp_path: Path, emu: emulator.Emulator, capsys: pytest.CaptureFixture[str]) -> None:
    prompts = _write(tmp_path / "p.txt", b"first\n")
    out = str(tmp_path / "out.jsonl")
    assert main(["batch", prompts, "-o", out, "-m", "demo", "--host", emu.url,
                 "-O", "seed=3", "--max-tokens", "4", "-q"]) == EXIT_OK
    [record] = _lines(out)
    assert record["response"] == _expected("first", options={"seed": 3, "num_predict": 4})
    assert "done: 1 ok" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["chat", "generate"])
def test_chat_and_generate_take_O_and_max_tokens_not_o(
        command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([command, "--host", "builtin", "-m", "demo", "-O", "seed=2",
                 "--max-tokens", "3", "Hi"]) == EXIT_OK
    out = capsys.readouterr().out
    body = {"prompt": "Hi"} if command == "generate" else {
        "messages": [{"role": "user", "content": "Hi"}]}
    assert out == emulator.expected("demo", {**body, "options": {"seed": 2, "num_predict": 3}}
                                    ).text + "\n"
    with pytest.raises(SystemExit):
        main([command, "--host", "builtin", "-m", "demo", "-o", "seed=2", "Hi"])


def test_max_tokens_is_on_every_generating_command() -> None:
    for words in (["chat"], ["generate"], ["batch"], ["bench"]):
        assert "--max-tokens" in _subcommand_help(*words), words
    assert "llama.cpp" in _subcommand_help("chat")


def test_bench_aliases_and_compare_sub_command(tmp_path: Path) -> None:
    args = build_parser().parse_args(
        ["bench", "--request-rate", "2", "--num-prompts", "7", "--out", str(tmp_path)])
    assert (args.rate, args.requests, args.out) == ([2.0], 7, str(tmp_path))
    args = build_parser().parse_args(["bench", "--rate", "3", "-o", "d", "-O", "seed=1"])
    assert (args.rate, args.out, args.option) == ([3.0], "d", [("seed", 1)])
    args = build_parser().parse_args(["bench", "compare", "a", "b", "--out", "c.png"])
    assert (args.bench_command, args.runs, args.compare_out) == ("compare", ["a", "b"], "c.png")
    text = _subcommand_help("bench")
    assert "positional arguments" not in text
    assert "sub-commands:" in text and "bench compare RUN" in text
    assert _subcommand_help("bench", "compare").startswith("usage: streamkit bench compare")


# -- keys --------------------------------------------------------------------------


def _key_server() -> RawServer:
    return RawServer(wire_handler(Wire("ollama", "generate"), ["ok"]))


def _authorization(server: RawServer) -> List[str]:
    return [r.headers.get("authorization", "") for r in server.requests
            if r.path.endswith(("generate", "completions"))]


@pytest.mark.parametrize("command", ["generate", "chat", "check", "batch", "bench"])
def test_api_key_on_every_command_that_talks_to_a_server(command: str) -> None:
    assert "--api-key" in _subcommand_help(command)


def test_api_key_flag_is_sent_and_never_printed(
        capsys: pytest.CaptureFixture[str]) -> None:
    with _key_server() as server:
        assert main(["generate", "--host", server.url, "-m", "demo", "--api-key", KEY,
                     "-v", "Hi"]) == EXIT_OK
        assert _authorization(server) == [f"Bearer {KEY}"]
    captured = capsys.readouterr()
    assert KEY not in captured.out + captured.err
    assert "host: " in captured.err  # -v said which host, without the key


def test_ollama_api_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_API_KEY", "not-this-one")
    with _key_server() as server:
        assert main(["generate", "--host", server.url, "-m", "demo", "Hi"]) == EXIT_OK
        assert _authorization(server) == [f"Bearer {KEY}"]


def test_openai_dialect_reads_openai_key_and_base_url(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    with RawServer(wire_handler(Wire("openai", "generate"), ["ok"])) as server:
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        monkeypatch.setenv("OPENAI_BASE_URL", server.url + "/v1")
        monkeypatch.setenv("OLLAMA_API_KEY", "not-this-one")
        assert main(["generate", "--dialect", "openai", "-m", "demo", "Hi"]) == EXIT_OK
        assert [r.path for r in server.requests] == ["/v1/completions"]
        assert _authorization(server) == [f"Bearer {KEY}"]
    assert capsys.readouterr().out == "ok\n"


def test_key_not_in_errors_or_the_resume_command(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def unauthorized(conn: object) -> None:
        conn.respond(401, b'{"error": "unauthorized"}')  # type: ignore[attr-defined]

    with RawServer(unauthorized) as server:
        assert main(["generate", "--host", server.url, "-m", "demo", "--api-key", KEY,
                     "-v", "Hi"]) != EXIT_OK
        err = capsys.readouterr().err
        assert "401" in err and KEY not in err
    from streamkit.batch import BatchConfig
    from streamkit.batch.config import config_values
    from streamkit.cli.batch import resume_command
    args = build_parser().parse_args(["batch", "p.jsonl", "-o", "o.jsonl", "--api-key", KEY])
    config = BatchConfig(**config_values(vars(args)))
    assert KEY not in resume_command(config) and KEY not in repr(config) and KEY not in repr(args)


def test_batch_sends_the_api_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prompts = _write(tmp_path / "p.jsonl", json.dumps({"id": "a", "prompt": "x"}).encode())
    with _key_server() as server:
        assert main(["batch", prompts, "-o", str(tmp_path / "o.jsonl"), "-m", "demo",
                     "--host", server.url, "--api-key", KEY, "-q", "-v"]) == EXIT_OK
        assert _authorization(server) == [f"Bearer {KEY}"]
    captured = capsys.readouterr()
    assert KEY not in captured.out + captured.err
