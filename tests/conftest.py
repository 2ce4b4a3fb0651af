"""Shared fixtures. The autouse ``no_leaks`` fixture fails any test that leaves
a thread or a socket behind (waiting up to 2 s for them to wind down)."""

from __future__ import annotations

import gc
import os
import threading
import time
from typing import Iterator, Set

import pytest

LEAK_GRACE_S = 2.0


def _socket_inodes() -> Set[str]:
    found = set()
    fd_dir = "/proc/self/fd"
    if not os.path.isdir(fd_dir):  # not Linux: socket check is skipped
        return found
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        if target.startswith("socket:"):
            found.add(target)
    return found


def _live_threads() -> Set[threading.Thread]:
    return {t for t in threading.enumerate() if t.is_alive()}


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    if request.node.get_closest_marker("allow_leaks"):
        yield
        return
    threads_before = _live_threads()
    sockets_before = _socket_inodes()
    yield
    deadline = time.monotonic() + LEAK_GRACE_S
    while True:
        gc.collect()
        extra_threads = _live_threads() - threads_before
        extra_sockets = _socket_inodes() - sockets_before
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
