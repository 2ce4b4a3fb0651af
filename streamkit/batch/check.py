"""The first pass over a prompt file: bad lines, duplicate ids, counts.

:func:`scan_prompts` validates a whole file in one streaming pass before any
request is sent; :func:`check_prompts` is ``streamkit batch --check``. A run
with bad lines raises :class:`PromptFileError` unless told to skip them.

Duplicate ids are found with an index of every id and its first line: a
dict up to SPILL_AFTER ids (about 120 bytes each), then an SQLite file in
the temporary directory (about 40 bytes an id on disk, a few MB of page
cache in memory), so a file of any length is checked in bounded memory.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from dataclasses import dataclass, field
from typing import IO, Dict, List, Optional, Sequence, Set, Tuple

from ..errors import ConfigError
from .config import MAX_PROBLEMS, BatchConfig
from .input import InputFile, read_prompts
from .promptline import Problem, PromptLine
from .resume import scan_output

__all__ = ["CheckReport", "IdChecker", "PromptFileError", "Scan", "check_prompts",
           "scan_file", "scan_prompts"]


class PromptFileError(ConfigError):
    """The prompt file has bad lines. ``problems`` lists the first ones, ``total`` counts all."""

    def __init__(self, problems: Sequence[Problem], total: int) -> None:
        lines = [str(p) for p in problems]
        if total > len(problems):
            lines.append(f"... and {total - len(problems)} more")
        lines.append(f"{total} bad line(s): fix them, or pass --skip-invalid to run the rest")
        super().__init__("\n".join(lines))
        self.problems = list(problems)
        self.total = total


SPILL_AFTER = 100_000   # ids kept in a dict before the index moves to a file
MAX_MODELS = 64         # distinct models a scan keeps for the model check; more: unchecked
_INDEX_CACHE_KIB = 4096  # SQLite's page cache for the on-disk index


class IdChecker:
    """Finds duplicate ids across a file: an index of id → first line, in a dict
    and past SPILL_AFTER ids in a temporary SQLite file (see the module docstring).

    ``close()`` deletes the file; idempotent.
    """

    def __init__(self) -> None:
        self._first_line: Dict[str, int] = {}
        self._db: Optional[sqlite3.Connection] = None
        self._dir: Optional[tempfile.TemporaryDirectory[str]] = None

    def check(self, line: PromptLine, name: str) -> Optional[Problem]:
        """None for a new id; a Problem naming the first occurrence for a repeat."""
        first = self._first(line.id, line.line)
        if first == line.line:
            return None
        return Problem(name, line.line, f"duplicate id {line.id!r} (first on line {first}); "
                                        "ids must be unique within a file")

    def _first(self, record_id: str, line: int) -> int:
        if self._db is None:
            first = self._first_line.setdefault(record_id, line)
            if len(self._first_line) > SPILL_AFTER:
                self._spill()
            return first
        if self._db.execute("INSERT OR IGNORE INTO ids VALUES (?, ?)",
                            (record_id, line)).rowcount == 1:
            return line
        row = self._db.execute("SELECT line FROM ids WHERE id = ?", (record_id,)).fetchone()
        return int(row[0])

    def _spill(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="streamkit-ids-")
        db = sqlite3.connect(os.path.join(self._dir.name, "ids.db"), isolation_level=None)
        # A scratch index: no journal, no fsync (a crash loses nothing of value).
        db.execute("PRAGMA journal_mode=OFF")
        db.execute("PRAGMA synchronous=OFF")
        db.execute(f"PRAGMA cache_size=-{_INDEX_CACHE_KIB}")
        db.execute("CREATE TABLE ids (id TEXT PRIMARY KEY, line INTEGER) WITHOUT ROWID")
        db.execute("BEGIN")  # one transaction: committing every insert would be slow
        db.executemany("INSERT INTO ids VALUES (?, ?)", self._first_line.items())
        self._db, self._first_line = db, {}

    def count_in(self, done: Set[str]) -> int:
        """How many indexed ids are in ``done``."""
        if self._db is None:
            return sum(1 for i in self._first_line if i in done)
        if len(done) < SPILL_AFTER:
            lookup = "SELECT 1 FROM ids WHERE id = ?"
            return sum(1 for i in done if self._db.execute(lookup, (i,)).fetchone() is not None)
        return sum(1 for (i,) in self._db.execute("SELECT id FROM ids") if i in done)

    def close(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None


@dataclass
class Scan:
    """The first pass over a prompt file: counts, ids, bad lines (capped), duplicates."""

    prompts: int = 0                     # good lines (first occurrence of each id)
    problems: List[Problem] = field(default_factory=list)
    problem_count: int = 0
    duplicate_lines: Set[int] = field(default_factory=set)
    ids: IdChecker = field(default_factory=IdChecker)
    # The models the good lines ask for → the first line asking; None past MAX_MODELS.
    models: Optional[Dict[str, int]] = field(default_factory=dict)

    def add_model(self, model: Optional[str], line: int) -> None:
        if self.models is None or model is None or model in self.models:
            return
        self.models[model] = line
        if len(self.models) > MAX_MODELS:
            self.models = None

    def close(self) -> None:
        """Delete the id index's file, if any."""
        self.ids.close()


def scan_prompts(path: str, fmt: str, *, default_model: Optional[str], display: str,
                 max_problems: int, prompt_column: str = "prompt",
                 id_column: str = "id") -> Scan:
    """Validate a whole file in one streaming pass, keeping only ids and problems.

    The caller closes the Scan (its id index may be a temporary file).

    Raises:
        ConfigError: the file cannot be opened.
    """
    scan = Scan()
    try:
        for item in read_prompts(path, fmt, default_model=default_model, display=display,
                                 prompt_column=prompt_column, id_column=id_column):
            if isinstance(item, Problem):
                problem = item
            else:
                duplicate = scan.ids.check(item, display)
                if duplicate is None:
                    scan.prompts += 1
                    scan.add_model(item.model or default_model, item.line)
                    continue
                problem = duplicate
                scan.duplicate_lines.add(item.line)
            scan.problem_count += 1
            if len(scan.problems) < max_problems:
                scan.problems.append(problem)
    except BaseException:
        scan.close()
        raise
    return scan


def scan_file(path: str, config: BatchConfig, display: str) -> Scan:
    """The first pass over ``path`` with ``config``'s model, format and problem cap."""
    return scan_prompts(path, config.format_name, default_model=config.model,
                        display=display, max_problems=config.max_problems,
                        prompt_column=config.prompt_column, id_column=config.id_column)


@dataclass(frozen=True)
class CheckReport:
    """The result of :func:`check_prompts`."""

    prompts: int            # valid prompts
    done: int               # of them, already in the output
    problems: Tuple[Problem, ...]
    problem_count: int

    @property
    def ok(self) -> bool:
        return self.problem_count == 0


def check_prompts(inputs: str, output: Optional[str] = None, *, model: Optional[str] = None,
                  input_format: Optional[str] = None, max_problems: int = MAX_PROBLEMS,
                  stdin: Optional[IO[bytes]] = None, prompt_column: str = "prompt",
                  id_column: str = "id") -> CheckReport:
    """Validate a prompt file without sending anything (``streamkit batch --check``).

    Streams through the file once (stdin included), keeping only the ids.
    With ``output``, also counts the prompts an existing output already holds.

    Raises:
        ConfigError: the file cannot be read, an unknown format, a corrupt output.
    """
    config = BatchConfig(inputs, output or "unused.jsonl", model=model,
                         input_format=input_format, max_problems=max_problems,
                         prompt_column=prompt_column, id_column=id_column)
    with InputFile(inputs, stdin) as (path, display):
        scan = scan_file(path, config, display)
    try:
        done = scan.ids.count_in(scan_output(output).done) if output is not None else 0
    finally:
        scan.close()
    return CheckReport(scan.prompts, done, tuple(scan.problems), scan.problem_count)
