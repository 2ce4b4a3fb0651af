"""Helpers for the batch tests: prompt and result files, the emulator's answers."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, Dict, List

from streamkit import emulator


def write(path: Path, data: bytes) -> str:
    """Write ``data`` to ``path``; return the path as a string."""
    path.write_bytes(data)
    return str(path)


def lines(path: str) -> List[Dict[str, Any]]:
    """The JSON records of a JSONL file."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def prompts(tmp_path: Path, n: int, name: str = "p.jsonl") -> str:
    """A JSONL prompt file of ``n`` prompts with ids q0, q1..."""
    rows = [json.dumps({"id": f"q{i}", "prompt": f"prompt number {i}"}) for i in range(n)]
    return write(tmp_path / name, ("\n".join(rows) + "\n").encode())


def expected(prompt: str, model: str = "demo", **body: Any) -> str:
    """The emulator's answer to a generate request."""
    text: str = emulator.expected(model, {"prompt": prompt, **body}).text
    return text

#: How long a batch subprocess in a test may run before it is killed.
RUN_TIMEOUT_S = 30.0


def finish(proc: subprocess.Popen[bytes], timeout: float = RUN_TIMEOUT_S) -> str:
    """Wait for a batch subprocess (killed past ``timeout``); return its stderr."""
    try:
        _, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return err.decode(errors="replace")
