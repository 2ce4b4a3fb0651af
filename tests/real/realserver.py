"""Helpers for the ``real`` tests (imported by conftest.py and the test modules).

``tool`` is ``scripts/real_server.py`` loaded as a module: the one
implementation of install/start/stop. ``RealServer`` describes the running
server and reads its log.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import List, Optional

import pytest

import streamkit as sk

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "real_server.py"
LOG_POLL_S = 0.1

# Generous: on an idle 2-core machine the model streams 40-70 tokens/s and
# answers its first token in well under a second, but a machine busy with
# other test runs can be 10-20x slower, and the server serves one request at
# a time, so a queued stream waits for those ahead of it.
REAL_TIMEOUTS = sk.Timeouts(connect=5, first_token=150, idle=60, total=170)
# Per-test limit for the real tests (pytest-timeout's default is 60 s).
REAL_TEST_TIMEOUT_S = 180
RESULT_TIMEOUT_S = REAL_TIMEOUTS.total
# Greedy and seeded: the same request gives the same text.
GREEDY = {"temperature": 0, "seed": 1}


def _load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("streamkit_real_server", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclass/annotation lookups need it registered
    spec.loader.exec_module(module)
    return module


tool = _load_tool()

@dataclass(frozen=True)
class RealServer:
    """A running server: ``url`` (base, ends in /v1), ``model``, and its log file."""

    url: str
    model: str
    log_path: Optional[Path]

    def client(self, **options: object) -> sk.Client:
        options.setdefault("timeouts", REAL_TIMEOUTS)
        return sk.Client(self.url, dialect="openai", **options)  # type: ignore[arg-type]

    def log_offset(self) -> int:
        """Where the log ends now: pass it to ``log_since`` to see only newer lines."""
        if self.log_path is None:
            return 0
        return self.log_path.stat().st_size

    def log_since(self, offset: int) -> str:
        if self.log_path is None:
            return ""
        with self.log_path.open("rb") as handle:
            handle.seek(offset)
            return handle.read().decode("utf-8", "replace")

    def wait_for_log(self, pattern: str, offset: int, *, count: int = 1,
                     timeout: float = 15.0) -> List[str]:
        """Block until ``pattern`` (a regex) matched ``count`` lines after ``offset``.

        Returns the matches; fails the test after ``timeout`` seconds.
        """
        if self.log_path is None:
            pytest.skip("the external server's log is unknown (set STREAMKIT_REAL_LOG)")
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            matches = regex.findall(self.log_since(offset))
            if len(matches) >= count:
                return list(matches)
            if time.monotonic() > deadline:
                pytest.fail(f"{count} x {pattern!r} not in the server log after {timeout} s; "
                            f"new log lines:\n{self.log_since(offset)[-3000:]}")
            time.sleep(LOG_POLL_S)  # polling another process's log file with a deadline
