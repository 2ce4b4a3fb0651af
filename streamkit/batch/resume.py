"""Reading a batch output back: the ids done, a torn tail, edited prompts.

Before a run appends, :func:`scan_output` reads the ids already in the
output and finds a torn last line (a crash artefact), which :func:`repair`
cuts off.

Each result record carries ``request_hash``, the hash of the request that
produced it (:func:`~streamkit.batch.cache.request_key`). On resume, an id
whose request changed since is *superseded*: :func:`drop_ids` rewrites the
file without its line (temporary file, fsync, atomic rename) before the id
is run again, so a reader never sees two lines for one id. A record
without ``request_hash`` (written by an older version) is kept as is.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Dict, Optional, Set, Tuple

from .. import _json
from ..errors import ConfigError
from .output import require_regular_file, write_error

__all__ = ["ResumeState", "drop_ids", "repair", "scan_output", "short_hash"]


@dataclass
class ResumeState:
    """What an existing OUT holds: its ids, and how much of it is sound."""

    done: Set[str] = field(default_factory=set)
    # id → short_hash(request_hash), where stored (an int: a third of the memory of the text)
    hashes: Dict[str, int] = field(default_factory=dict)
    good_size: int = 0        # bytes up to the end of the last complete record
    torn_bytes: int = 0       # bytes after it (a torn last line) to be cut off
    records: int = 0


def scan_output(path: str) -> ResumeState:
    """Read the ids in an existing OUT (an absent file is empty); find a torn tail.

    A last line without a newline, or a last line that is not a JSON object
    with an id, is torn. Does not modify the file (see :func:`repair`).

    Raises:
        ConfigError: a bad line *before* the last one (not a crash artefact:
            someone edited the file); names the file and line. ``path`` is
            not a regular file.
    """
    state = ResumeState()
    require_regular_file(path)
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return state
    except OSError as exc:
        raise ConfigError(f"cannot read {path!r}: {exc.strerror}") from exc
    with handle:
        bad_line: Optional[int] = None
        for number, raw in enumerate(handle, start=1):
            if bad_line is not None:
                raise ConfigError("not a JSON result record; fix or delete this line, then "
                                  "rerun", path=path, line=bad_line)
            record = _record(raw) if raw.endswith(b"\n") else None
            if record is None:
                bad_line = number
                state.torn_bytes = len(raw)
                continue
            record_id, request_hash = record
            state.done.add(record_id)
            if request_hash is not None:
                state.hashes[record_id] = short_hash(request_hash)
            state.records += 1
            state.good_size += len(raw)
    return state


def _record(raw: bytes) -> Optional[Tuple[str, Optional[str]]]:
    """(id, request_hash or None) of a result line; None if it is not one."""
    try:
        value = _json.loads(raw)
    except _json.DECODE_ERRORS:
        return None
    record_id = value.get("id") if isinstance(value, dict) else None
    if not isinstance(record_id, str):
        return None
    request_hash = value.get("request_hash")
    return record_id, request_hash if isinstance(request_hash, str) else None


def short_hash(request_hash: str) -> int:
    """The first 64 bits of a hex ``request_hash`` (what resume compares); -1 if not hex."""
    try:
        return int(request_hash[:16], 16)
    except ValueError:
        return -1


def repair(path: str, state: ResumeState) -> None:
    """Cut a torn last line off ``path`` (no-op when there is none)."""
    if state.torn_bytes:
        os.truncate(path, state.good_size)


def drop_ids(path: str, ids: Set[str]) -> None:
    """Rewrite ``path`` without the lines of ``ids`` (temp file, fsync, atomic rename).

    A reader sees the old file or the new one, never a mix; the caller must
    hold the output's lock. Lines are copied as they are, streaming.

    Raises:
        OutputWriteError: the copy cannot be written (the original is kept).
    """
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(path, "rb") as src, open(tmp, "wb") as dst:
            for raw in src:
                record = _record(raw)
                if record is None or record[0] not in ids:
                    dst.write(raw)
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise write_error(path, exc) from exc
