"""The first pass over a prompt file: bad lines, duplicate ids, counts.

:func:`scan_prompts` validates a whole file in one streaming pass before any
request is sent; :func:`check_prompts` is ``streamkit batch --check``. A run
with bad lines raises :class:`PromptFileError` unless told to skip them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import IO, Dict, List, Mapping, Optional, Sequence, Set, Tuple

from ..errors import ConfigError
from .config import MAX_PROBLEMS, BatchConfig
from .input import InputFile, Problem, PromptLine, read_prompts
from .output import scan_output

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


class IdChecker:
    """Finds duplicate ids across a file, keeping only the ids (a dict of str → line)."""

    def __init__(self) -> None:
        self._first_line: Dict[str, int] = {}

    def check(self, line: PromptLine, name: str) -> Optional[Problem]:
        """None for a new id; a Problem naming the first occurrence for a repeat."""
        first = self._first_line.setdefault(line.id, line.line)
        if first == line.line:
            return None
        return Problem(name, line.line, f"duplicate id {line.id!r} (first on line {first}); "
                                        "ids must be unique within a file")

    @property
    def ids(self) -> Mapping[str, int]:
        return self._first_line


@dataclass
class Scan:
    """The first pass over a prompt file: counts, ids, bad lines (capped), duplicates."""

    prompts: int = 0                     # good lines (first occurrence of each id)
    problems: List[Problem] = field(default_factory=list)
    problem_count: int = 0
    duplicate_lines: Set[int] = field(default_factory=set)
    ids: IdChecker = field(default_factory=IdChecker)


def scan_prompts(path: str, fmt: str, *, default_model: Optional[str], display: str,
                 max_problems: int, prompt_column: str = "prompt",
                 id_column: str = "id") -> Scan:
    """Validate a whole file in one streaming pass, keeping only ids and problems.

    Raises:
        ConfigError: the file cannot be opened.
    """
    scan = Scan()
    for item in read_prompts(path, fmt, default_model=default_model, display=display,
                             prompt_column=prompt_column, id_column=id_column):
        problem = item if isinstance(item, Problem) else scan.ids.check(item, display)
        if problem is None:
            scan.prompts += 1
            continue
        if not isinstance(item, Problem):
            scan.duplicate_lines.add(item.line)
        scan.problem_count += 1
        if len(scan.problems) < max_problems:
            scan.problems.append(problem)
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
    done = 0
    if output is not None:
        finished = scan_output(output).done
        done = sum(1 for i in scan.ids.ids if i in finished)
    return CheckReport(scan.prompts, done, tuple(scan.problems), scan.problem_count)
