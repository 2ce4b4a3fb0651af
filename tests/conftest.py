"""Shared fixtures. The autouse ``no_leaks`` fixture fails any test that leaves
a thread or a socket behind (waiting up to 2 s for them to wind down)."""

from __future__ import annotations

import gc
import signal
import time
from typing import Iterator

import pytest
from leakcheck import live_threads, socket_inodes

LEAK_GRACE_S = 2.0

# A run started in the background by a non-interactive shell (as CI may do)
# inherits SIGINT ignored: Python then never raises KeyboardInterrupt, and an
# ignored signal stays ignored in every child across exec. The Ctrl-C tests
# need the normal behaviour, so restore it for this process and its children.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    if request.node.get_closest_marker("allow_leaks"):
        yield
        return
    threads_before = live_threads()
    sockets_before = socket_inodes()
    yield
    deadline = time.monotonic() + LEAK_GRACE_S
    while True:
        gc.collect()
        extra_threads = live_threads() - threads_before
        extra_sockets = socket_inodes() - sockets_before
        if not extra_threads and not extra_sockets:
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.02)  # polling a condition with a deadline, not waiting on an event
    names = sorted(t.name for t in extra_threads)
    pytest.fail(f"test leaked {len(extra_threads)} thread(s) {names} and "
                f"{len(extra_sockets)} socket(s)", pytrace=False)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "allow_leaks: skip the thread/socket leak check")
