"""What a test may leave behind: live threads and open sockets (Linux /proc)."""

from __future__ import annotations

import os
import threading
from typing import Set

FD_DIR = "/proc/self/fd"


def socket_inodes() -> Set[str]:
    """Inode numbers of this process's open sockets (empty where /proc is absent)."""
    found: Set[str] = set()
    if not os.path.isdir(FD_DIR):
        return found
    for fd in os.listdir(FD_DIR):
        try:
            target = os.readlink(os.path.join(FD_DIR, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(target[len("socket:["):-1])
    return found


def live_threads() -> Set[threading.Thread]:
    return {t for t in threading.enumerate() if t.is_alive()}
