"""``streamkit batch`` prompt lines with images (base64, as Ollama expects them)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, Dict, List

import pytest
from batchfiles import write as _write
from rawserver import RawServer, Wire, wire_handler

from streamkit.cli import EXIT_OK, EXIT_USAGE, main

IMAGE = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()


def _bodies(server: Any) -> List[Dict[str, Any]]:
    return [json.loads(r.body) for r in server.requests if r.method == "POST"]


def test_images_field_is_sent_with_the_prompt(tmp_path: Path) -> None:
    line = {"id": "cat", "prompt": "What is this?", "images": [IMAGE]}
    prompts = _write(tmp_path / "p.jsonl", json.dumps(line).encode() + b"\n")
    with RawServer(wire_handler(Wire("ollama", "generate"), ["a cat"])) as server:
        assert main(["batch", prompts, "-o", str(tmp_path / "o.jsonl"), "-m", "llava",
                     "--host", server.url, "-q"]) == EXIT_OK
        [body] = _bodies(server)
    assert body["images"] == [IMAGE] and body["prompt"] == "What is this?"


def test_images_in_a_message_are_sent_with_it(tmp_path: Path) -> None:
    message = {"role": "user", "content": "What is this?", "images": [IMAGE]}
    prompts = _write(tmp_path / "p.jsonl", json.dumps({"messages": [message]}).encode())
    with RawServer(wire_handler(Wire("ollama", "chat"), ["a cat"])) as server:
        assert main(["batch", prompts, "-o", str(tmp_path / "o.jsonl"), "-m", "llava",
                     "--host", server.url, "-q"]) == EXIT_OK
        [body] = _bodies(server)
    assert body["messages"] == [message]


@pytest.mark.parametrize(("line", "says"), [
    ({"prompt": "x", "images": "notalist"}, '"images" must be a list of base64 strings'),
    ({"prompt": "x", "images": ["not base64!"]}, '"images"[0] is not base64'),
    ({"messages": [{"role": "user", "content": "x", "images": [1]}]},
     "messages[0].images must be a list"),
    ({"messages": [{"role": "user", "content": "x"}], "images": [IMAGE]},
     '"images" goes with "prompt"'),
])
def test_bad_images_are_line_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      line: Dict[str, Any], says: str) -> None:
    prompts = _write(tmp_path / "p.jsonl", json.dumps(line).encode() + b"\n")
    assert main(["batch", prompts, "--check", "-m", "m"]) == EXIT_USAGE
    assert f"{prompts}:1: {says}" in capsys.readouterr().err
