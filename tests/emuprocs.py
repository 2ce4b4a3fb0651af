"""Emulator hosts in their own processes (``streamkit emulate``), for fleet tests.

A host killed with SIGKILL dies as a crashed server does: the kernel closes
its sockets (the client sees streams cut and connections refused), and
nothing in the test process can soften it.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from typing import List, Optional

START_TIMEOUT_S = 30.0


class EmulatorProcess:
    """One ``streamkit emulate --port 0`` process; ``url`` once it listens."""

    def __init__(self, *args: str, port: int = 0) -> None:
        self.args = list(args)
        self.port = port
        self.proc: Optional[subprocess.Popen[str]] = None
        self.url = ""

    def spawn(self) -> EmulatorProcess:
        """Start the process (does not wait for it to listen: see ``wait_url``)."""
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamkit", "emulate", "--port", str(self.port),
             *self.args],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        return self

    def wait_url(self) -> str:
        """Block until the process prints its URL (bounded by the pipe: it exits or prints)."""
        assert self.proc is not None and self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("http://"):
            self.kill()
            raise RuntimeError(f"the emulator did not start (printed {line!r})")
        self.url = line
        self.port = int(line.rsplit(":", 1)[1])
        return line

    def kill(self) -> None:
        """SIGKILL the process and reap it; idempotent."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        try:
            proc.wait(timeout=START_TIMEOUT_S)
        finally:
            if proc.stdout is not None:
                proc.stdout.close()

    def restart(self) -> str:
        """Start it again on the same port (after ``kill``); its URL."""
        self.spawn()
        return self.wait_url()


def start_hosts(n: int, *args: str) -> List[EmulatorProcess]:
    """``n`` emulator processes started in parallel; each has its ``url``."""
    hosts = [EmulatorProcess(*args).spawn() for _ in range(n)]
    try:
        for host in hosts:
            host.wait_url()
    except BaseException:
        stop_hosts(hosts)
        raise
    return hosts


def stop_hosts(hosts: List[EmulatorProcess]) -> None:
    for host in hosts:
        host.kill()
