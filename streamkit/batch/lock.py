"""One batch run per output file: an exclusive ``flock`` on ``OUT.lock``.

Two runs appending to one output would each answer every prompt once, so
the file would hold every id twice. :class:`OutputLock` takes an exclusive,
non-blocking ``flock`` on a lock file beside the output and writes the
holder's PID into it. The kernel releases the lock when the process ends,
however it ends (``kill -9`` included), so a stale lock file is harmless:
the next run locks it again. The file is left in place (removing it would
race with a run that has just opened it).

Where ``fcntl`` does not exist (Windows) there is no lock.
"""

from __future__ import annotations

import os
from typing import Optional

from ..errors import ConfigError

__all__ = ["OutputBusy", "OutputLock", "lock_path"]

try:
    import fcntl
    _HAVE_FLOCK = True
except ImportError:  # Windows: no flock
    _HAVE_FLOCK = False


class OutputBusy(ConfigError):
    """Another process holds the output's lock; ``pid`` is its PID when known."""

    def __init__(self, output: str, pid: Optional[int]) -> None:
        holder = f"pid {pid}" if pid is not None else "another process"
        super().__init__(f"{output!r} is in use by another streamkit batch ({holder}); "
                         "wait for it to finish or stop it, then rerun")
        self.pid = pid


def lock_path(output: str) -> str:
    """``results.jsonl`` → ``results.jsonl.lock``."""
    return output + ".lock"


class OutputLock:
    """An exclusive lock on ``output``, held from construction until :meth:`close`.

    Never blocks: a held lock raises at once.

    Raises:
        OutputBusy: another process holds it (its PID read from the file).
        ConfigError: the lock file cannot be created.
    """

    def __init__(self, output: str) -> None:
        self.path = lock_path(output)
        self._fd: Optional[int] = None
        if not _HAVE_FLOCK:
            return
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(self.path, flags, 0o644)
        except OSError as exc:
            raise ConfigError(f"cannot create the lock file {self.path!r}: "
                              f"{exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pid = _read_pid(fd)
            os.close(fd)
            raise OutputBusy(output, pid) from None
        # Ours now: record who holds it, for the message a second run prints.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def close(self) -> None:
        """Release the lock; idempotent."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the last descriptor releases the flock

    def __enter__(self) -> OutputLock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _read_pid(fd: int) -> Optional[int]:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
