"""The chat / generate / check / pull commands (``streamkit.cli``)."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest
from rawserver import RawServer, Wire, wire_handler

from streamkit import Chunk, Result
from streamkit.cli import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, main
from streamkit.cli.chat import chat_loop
from streamkit.emulator import Emulator, EmulatorConfig, expected


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def test_chat_builtin_prints_emulator_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["chat", "--host", "builtin", "-m", "demo", "Hello"]) == EXIT_OK
    out, err = capsys.readouterr()
    assert out == expected("demo", {"messages": [user("Hello")]}).text + "\n"
    assert err == ""


def test_chat_with_system_and_options(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["chat", "--host", "builtin", "-m", "demo", "--system", "Be terse",
                 "-O", "num_predict=3", "--option", "seed=5", "Hi"])
    assert code == EXIT_OK
    body = {"messages": [{"role": "system", "content": "Be terse"}, user("Hi")],
            "options": {"num_predict": 3, "seed": 5}}
    assert capsys.readouterr().out == expected("demo", body).text + "\n"


def test_generate_builtin(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "--host", "builtin", "-m", "demo", "Once upon"]) == EXIT_OK
    assert capsys.readouterr().out == expected("demo", {"prompt": "Once upon"}).text + "\n"


def test_unknown_model_on_builtin_names_the_emulator_models(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["chat", "--host", "builtin", "-m", "nosuch", "Hello"]) == EXIT_FAILED
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert err.count("nosuch") == 1  # said once
    assert "the built-in emulator has demo" in err and "ollama pull" not in err


def test_unreachable_host_one_line_how_to_start_ollama(
        capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["generate", "--host", f"127.0.0.1:{closed_port()}", "-m", "demo", "hi"])
    assert code == EXIT_FAILED
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "ollama serve" in err


def test_bad_host_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--host", "::1"]) == EXIT_USAGE
    assert "::1" in capsys.readouterr().err


def test_check_builtin(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--host", "builtin"]) == EXIT_OK
    out = capsys.readouterr().out
    assert f"version: {EmulatorConfig().version}" in out
    assert "demo" in out


def test_check_unreachable(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--host", f"127.0.0.1:{closed_port()}"]) == EXIT_FAILED
    assert "ollama serve" in capsys.readouterr().err


def test_pull_without_tty_prints_final_line_only(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pull", "--host", "builtin", "demo"]) == EXIT_OK
    out, err = capsys.readouterr()
    assert out == "demo: success\n"
    assert err == ""  # no progress bar when stderr is not a terminal


def test_interactive_chat_keeps_history(monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hello\n\nWho are you?\n"))
    assert main(["chat", "--host", "builtin", "-m", "demo"]) == EXIT_OK
    out = capsys.readouterr().out
    first = expected("demo", {"messages": [user("Hello")]}).text
    second = expected("demo", {"messages": [user("Hello"),
                                            {"role": "assistant", "content": first},
                                            user("Who are you?")]}).text
    assert out == f"{first}\n{second}\n"


class FakeStream:
    """Yields one chunk, then raises KeyboardInterrupt as Ctrl-C would."""

    def __init__(self, interrupt: bool) -> None:
        self.interrupt = interrupt
        self.cancelled = False

    def __enter__(self) -> FakeStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()

    def __iter__(self) -> Iterator[Chunk]:
        yield Chunk("partial")
        if self.interrupt:
            raise KeyboardInterrupt

    def cancel(self) -> None:
        self.cancelled = True

    def result(self, timeout: Optional[float] = None) -> Result:
        return Result(id=None, model="m", host="h", text="partial")


class FakeConversation:
    def __init__(self) -> None:
        self.asked: List[str] = []
        self.streams: List[FakeStream] = []

    def ask(self, text: str) -> Any:
        self.asked.append(text)
        self.streams.append(FakeStream(interrupt=text == "long"))
        return self.streams[-1]


def test_ctrl_c_stops_the_answer_not_the_loop() -> None:
    conv = FakeConversation()
    out, err = io.StringIO(), io.StringIO()
    code = chat_loop(conv, ["long\n", "short\n"], out, err)  # type: ignore[arg-type]
    assert code == EXIT_OK
    assert conv.asked == ["long", "short"]
    assert conv.streams[0].cancelled
    assert "interrupted" in err.getvalue()
    assert out.getvalue() == "partial\npartial\n"


def _read_until(stream: Any, needle: bytes, timeout: float) -> bytes:
    """Read from a pipe in a helper thread until ``needle`` shows up (or timeout)."""
    seen = bytearray()
    found = threading.Event()

    def reader() -> None:
        while not found.is_set():
            byte = stream.read(1)
            if not byte:
                return
            seen.extend(byte)
            if needle in seen:
                found.set()

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    found.wait(timeout)
    thread.join(timeout)
    return bytes(seen)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigint_during_answer_in_a_real_process() -> None:
    """Ctrl-C (SIGINT) mid-answer: the answer stops, the next question is answered."""
    with Emulator(EmulatorConfig(tokens_per_second=10, response_tokens=(40, 40))) as emu:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamkit", "chat", "--host", emu.url, "-m", "demo"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(b"first question\n")
            proc.stdin.flush()
            first_words = expected("demo", {"messages": [user("first question")]}).tokens[0]
            assert first_words.encode() in _read_until(proc.stdout, first_words.encode(), 20)
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(input=b"/bye\n", timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == EXIT_OK, err
        assert b"interrupted" in err


def test_sigint_during_one_shot_exits_130() -> None:
    """Interrupting a one-shot answer ends the program with 130."""
    with Emulator(EmulatorConfig(tokens_per_second=10, response_tokens=(40, 40))) as emu:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamkit", "generate", "--host", emu.url, "-m", "demo",
             "go"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            assert proc.stdout is not None
            word = expected("demo", {"prompt": "go"}).tokens[0].encode()
            assert word in _read_until(proc.stdout, word, 20)
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == EXIT_INTERRUPTED, err


# -- like `ollama run` and `llm`: stdin, --format, --think, --system, --image, -v ------


def _bodies(server: Any) -> List[Dict[str, Any]]:
    return [json.loads(r.body) for r in server.requests if r.method == "POST"]


@pytest.mark.parametrize("command", ["chat", "generate"])
def test_dash_reads_the_prompt_from_stdin(command: str, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("line one\nline two\n"))
    with RawServer(wire_handler(Wire("ollama", command), ["ok"])) as server:
        assert main([command, "--host", server.url, "-m", "demo", "-"]) == EXIT_OK
        [body] = _bodies(server)
    sent = body["prompt"] if command == "generate" else body["messages"][-1]["content"]
    assert sent == "line one\nline two\n"
    assert capsys.readouterr().out == "ok\n"


def test_generate_reads_a_piped_stdin_without_a_prompt(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("Once upon a time"))
    assert main(["generate", "--host", "builtin", "-m", "demo"]) == EXIT_OK
    assert capsys.readouterr().out == expected("demo", {"prompt": "Once upon a time"}).text + "\n"


def test_empty_stdin_prompt_is_a_usage_error(monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("  \n"))
    assert main(["generate", "--host", "builtin", "-m", "demo", "-"]) == EXIT_USAGE
    assert "empty" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["chat", "generate"])
def test_format_think_system_and_images_reach_the_request(
        command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "dot.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\nfake")
    schema = '{"type": "object"}'
    with RawServer(wire_handler(Wire("ollama", command), ["{}"])) as server:
        assert main([command, "--host", server.url, "-m", "demo", "--format", schema,
                     "--think", "low", "--system", "be brief", "--image", str(png),
                     "--image", str(png), "What is this?"]) == EXIT_OK
        [body] = _bodies(server)
    image = base64.b64encode(png.read_bytes()).decode()
    assert body["format"] == {"type": "object"} and body["think"] == "low"
    if command == "generate":
        assert body["system"] == "be brief" and body["images"] == [image, image]
    else:
        assert body["messages"][0] == {"role": "system", "content": "be brief"}
        assert body["messages"][-1]["images"] == [image, image]


def test_chat_images_as_openai_content_parts(tmp_path: Path) -> None:
    png = tmp_path / "dot.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\nfake")
    with RawServer(wire_handler(Wire("openai", "chat"), ["a"])) as server:
        assert main(["chat", "--dialect", "openai", "--host", server.url, "-m", "demo",
                     "--image", str(png), "What is this?"]) == EXIT_OK
        [body] = _bodies(server)
    image = base64.b64encode(png.read_bytes()).decode()
    assert body["messages"][-1]["content"] == [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image}"}}]


def test_missing_image_file_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "--host", "builtin", "-m", "demo", "--image", "/nonexistent.png",
                 "Hi"]) == EXIT_USAGE
    assert "/nonexistent.png" in capsys.readouterr().err


def test_verbose_shows_retries_waits_and_the_host(capsys: pytest.CaptureFixture[str]) -> None:
    def busy(conn: Any) -> None:
        conn.respond(503, b'{"error": "busy"}', {"Retry-After": "0"})

    ok = wire_handler(Wire("ollama", "generate"), ["ok"])
    with RawServer([busy, ok, busy, ok]) as server:
        assert main(["generate", "--host", server.url, "-m", "demo", "Hi"]) == EXIT_OK
        quiet = capsys.readouterr().err
        assert main(["generate", "--host", server.url, "-m", "demo", "-v", "Hi"]) == EXIT_OK
        loud = capsys.readouterr().err
    assert quiet == ""
    assert f"host: {server.url}" in loud
    assert "attempt 1 of 3 failed" in loud and "retrying in 0.00 s" in loud
