"""Fixtures for the ``real`` tests: a llama.cpp server with a real small model.

The install/start/stop logic lives once, in ``scripts/real_server.py``
(loaded by ``realserver.py``). The build (minutes, on a fresh machine) runs
in ``pytest_collection_finish`` when any ``real`` test is selected, so it is
not charged to the first test's 60 s timeout; the default run (``-m 'not slow
and not real'``) selects none and never touches the cache.

``STREAMKIT_REAL_URL`` (as exported by ``scripts/real-server.sh run``) points
the tests at a server that is already running instead of starting one.
``STREAMKIT_REAL_REQUIRED=1`` (CI) turns "no tool chain, skipping" into a
failure.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator, Optional, Tuple

import pytest
from realserver import RealServer, tool

# Why the server cannot run, as (skip?, message); None when the install went fine.
_install_problem: Optional[Tuple[bool, str]] = None


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build the server once, before any test runs, if a ``real`` test is selected."""
    global _install_problem
    wanted = any(item.get_closest_marker("real") for item in session.items)
    if not wanted or os.environ.get("STREAMKIT_REAL_URL"):
        return
    # Let the build's progress notes through: a first build is silent for minutes otherwise.
    capture = session.config.pluginmanager.getplugin("capturemanager")
    try:
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            tool.install()
    except tool.ToolchainMissing as exc:
        _install_problem = (True, f"the real llama.cpp server cannot be built here: {exc}")
    except tool.InstallError as exc:  # a real failure: every real test reports it
        _install_problem = (False, f"installing the real llama.cpp server failed: {exc}")


@pytest.fixture(scope="session")
def real_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    """The server for this test session: started here (and stopped after), or external."""
    external = os.environ.get("STREAMKIT_REAL_URL")
    if external:
        log = os.environ.get("STREAMKIT_REAL_LOG")
        yield RealServer(external, os.environ.get("STREAMKIT_REAL_MODEL", tool.MODEL_ALIAS),
                         Path(log) if log else None)
        return
    if _install_problem is not None:
        skippable, message = _install_problem
        if skippable and not os.environ.get("STREAMKIT_REAL_REQUIRED"):
            pytest.skip(message)
        pytest.fail(message, pytrace=False)
    log_path = tmp_path_factory.mktemp("real-server") / "server.log"
    server = tool.Server(log_path=log_path)
    server.start()
    try:
        yield RealServer(server.url, tool.MODEL_ALIAS, log_path)
    finally:
        server.stop()
