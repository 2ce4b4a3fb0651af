"""Result files for ``streamkit batch``: append-only JSONL, resume, the error file.

Crash safety rests on three rules:

1. Every record is one ``os.write`` of a complete line (``O_APPEND``), so a
   crash leaves at most one torn line, and only at the end of the file.
2. Before appending, the resume scan reads the ids already present and
   cuts a torn last line (no newline, or not JSON) off the file.
3. The writer refuses an id it has already written.

Reading an output back (rule 2, and superseding edited prompts) is
:mod:`streamkit.batch.resume`; what a record says, and its encoding, is
:mod:`streamkit.batch.records`.

Only regular files are accepted (:func:`require_regular_file`): the file is
read back on resume, and a pipe or a device cannot be. A failed write (disk
full) raises :class:`OutputWriteError`; everything written before it is
whole and kept.

Records reach the kernel at once (no userspace buffer); a :class:`Syncer`
thread fsyncs dirty files every second, and :meth:`RecordWriter.close`
fsyncs once more.

The error file (``OUT.errors.jsonl``) holds, for each id that has no result
in OUT, its latest failure. It is compacted (rewritten through a temporary
file and an atomic rename) when a run starts and when it ends; during a run
new failures are appended, so after a crash it may also hold an entry that
the next run drops.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import threading
from typing import IO, Any, Dict, Iterable, Iterator, List, Mapping, Optional, Protocol, Set

from .. import _json
from ..errors import ConfigError, StreamkitError
from .records import encode

__all__ = [
    "ErrorLog",
    "OutputWriteError",
    "RecordWriter",
    "Syncer",
    "errors_path",
    "require_regular_file",
    "write_error",
]

FSYNC_INTERVAL_S = 1.0


def errors_path(output: str) -> str:
    """``results.jsonl`` → ``results.errors.jsonl``; other names get ``.errors.jsonl`` appended."""
    stem = output[: -len(".jsonl")] if output.endswith(".jsonl") else output
    return stem + ".errors.jsonl"


class OutputWriteError(StreamkitError):
    """A result or error file could not be written (disk full, quota, I/O error).

    ``errno`` is the OS error number. Every record written before it is whole.
    """

    def __init__(self, path: str, exc: OSError) -> None:
        super().__init__(f"cannot write {path!r}: {exc.strerror or exc}")
        self.path = path
        self.errno = exc.errno


# Out of room or failing storage: the run stops (OutputWriteError). Other
# errors (permissions, a missing directory) are configuration errors.
_STORAGE_ERRNOS = frozenset(getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EFBIG", "EIO")
                            if hasattr(errno, name))


def write_error(path: str, exc: OSError) -> StreamkitError:
    """The error for a failed write: OutputWriteError for storage, else ConfigError."""
    if exc.errno in _STORAGE_ERRNOS:
        return OutputWriteError(path, exc)
    return ConfigError(f"cannot write {path!r}: {exc.strerror}")


def require_regular_file(path: str) -> None:
    """Refuse an existing ``path`` that is not a regular file (a pipe, a device).

    Checked with ``stat`` before any open: opening a FIFO blocks, and a
    device like ``/dev/zero`` reads forever.

    Raises:
        ConfigError: ``path`` exists and is not a regular file.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError(f"cannot read {path!r}: {exc.strerror}") from exc
    if not stat.S_ISREG(mode):
        raise ConfigError(f"{path!r} is not a regular file: the output must be one, since "
                          "it is read back to resume (write to a file, then copy it)")


# --- writers -------------------------------------------------------------------


class RecordWriter:
    """Appends JSON lines to a file, one ``os.write`` per record, no duplicate ids.

    Not thread-safe for writing (the batch loop is the only writer); ``sync``
    may be called from the Syncer thread.
    """

    def __init__(self, path: str, *, truncate: bool = False,
                 done: Optional[Set[str]] = None) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
        if truncate:
            flags |= os.O_TRUNC
        try:
            self._fd = os.open(path, flags, 0o644)
        except OSError as exc:
            raise ConfigError(f"cannot write {path!r}: {exc.strerror}") from exc
        self.path = path
        self.done: Set[str] = done if done is not None else set()
        self._lock = threading.Lock()
        self._dirty = False
        self._closed = False
        self._sync_error: Optional[OSError] = None

    def write(self, record: Mapping[str, Any]) -> bool:
        """Append one record; False (nothing written) if its id is already in the file."""
        if record["id"] in self.done:
            return False
        return self.write_encoded(record["id"], encode(record))

    def write_encoded(self, record_id: str, line: bytes) -> bool:
        """Append one record already encoded as a JSON line with this id (as ``write``)."""
        if record_id in self.done:
            return False
        self._write(line)
        self.done.add(record_id)
        self._dirty = True
        return True

    def append(self, record: Mapping[str, Any]) -> None:
        """Append one record whatever its id (for the error file)."""
        self._write(encode(record))
        self._dirty = True

    def _write(self, data: bytes) -> None:
        try:
            _write_all(self._fd, data)
        except OSError as exc:
            raise write_error(self.path, exc) from exc

    def sync(self) -> None:
        """fsync if anything was written since the last sync.

        A failure is kept and raised by :meth:`close` (the Syncer thread
        has no one to raise it to).
        """
        with self._lock:
            if self._dirty and not self._closed:
                self._dirty = False
                try:
                    os.fsync(self._fd)
                except OSError as exc:
                    self._sync_error = self._sync_error or exc

    def close(self) -> None:
        """fsync and close; idempotent.

        Raises:
            OutputWriteError: an fsync failed (disk full, I/O error).
        """
        self.sync()
        with self._lock:
            if not self._closed:
                self._closed = True
                os.close(self._fd)
            error, self._sync_error = self._sync_error, None
        if error is not None:
            raise write_error(self.path, error)


def _write_all(fd: int, data: bytes) -> None:
    # A regular file takes the whole line in one write; the loop only matters
    # on a short write (disk full, a signal), where the line may then be torn
    # and the next run repairs it.
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class _Syncable(Protocol):
    def sync(self) -> None: ...


class Syncer:
    """A thread that fsyncs its writers every ``interval`` seconds; ``close`` stops it.

    A crash loses nothing already written (the kernel has it); the fsync
    bounds what a power loss can take to about one interval.
    """

    def __init__(self, writers: Iterable[_Syncable],
                 interval: float = FSYNC_INTERVAL_S) -> None:
        self._writers = list(writers)
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="streamkit-batch-fsync",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            for writer in self._writers:
                writer.sync()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10.0)


# --- the error file ------------------------------------------------------------


class ErrorLog:
    """``OUT.errors.jsonl``: the latest failure of each id that has no result yet.

    Holds the current entries in memory (failures are few) so it can compact.
    The file exists only while it has entries.
    """

    def __init__(self, path: str, *, done: Set[str], resume: bool) -> None:
        self.path = path
        self._latest: Dict[str, Dict[str, Any]] = {}
        if resume:
            for record in _read_records(path):
                if record["id"] not in done:
                    self._latest[record["id"]] = record
        _rewrite(path, self._latest.values())
        self._writer: Optional[RecordWriter] = None
        self._closed = False

    def add(self, record: Dict[str, Any]) -> None:
        """Append a failure (one write) and remember it as the id's latest."""
        if self._writer is None:
            self._writer = RecordWriter(self.path)
        self._writer.append(record)
        self._latest[record["id"]] = record

    def sync(self) -> None:
        if self._writer is not None:
            self._writer.sync()

    def count(self) -> int:
        """How many ids currently have an entry."""
        return len(self._latest)

    def close(self, done: Set[str]) -> None:
        """Drop entries whose id now has a result, rewrite the file, close; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            self._writer.close()
        self._latest = {i: r for i, r in self._latest.items() if i not in done}
        _rewrite(self.path, self._latest.values())


def _read_records(path: str) -> List[Dict[str, Any]]:
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return []
    with handle:
        records = []
        for raw in handle:
            try:
                value = _json.loads(raw)
            except _json.DECODE_ERRORS:
                continue  # a torn line from a crash; the next failure rewrites the id
            if isinstance(value, dict) and isinstance(value.get("id"), str):
                records.append(value)
        return records


@contextlib.contextmanager
def atomic_replace(path: str) -> Iterator[IO[bytes]]:
    """A temporary file whose contents replace ``path`` atomically when the block ends.

    A reader sees the old file or the new one, never a mix (fsync, then
    rename). If the block raises, ``path`` is kept and the temporary removed.

    Raises:
        OutputWriteError: the new contents cannot be written.
    """
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if isinstance(exc, OSError):
            raise write_error(path, exc) from exc
        raise


def _rewrite(path: str, records: Iterable[Mapping[str, Any]]) -> None:
    """Replace ``path`` atomically with ``records``; no records: remove ``path``."""
    rows = list(records)
    if not rows:
        try:
            if os.path.exists(path):
                os.remove(path)
        except OSError as exc:
            raise write_error(path, exc) from exc
        return
    with atomic_replace(path) as out:
        for row in rows:
            out.write(encode(row))
