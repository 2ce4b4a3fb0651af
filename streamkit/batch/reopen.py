"""Opening a batch output for a run: what stands from earlier runs, what runs again.

:func:`open_output` runs once per run, before the first request, while the
caller holds the output's lock (:class:`~streamkit.batch.lock.OutputLock`).
On resume it reads OUT back (:func:`~streamkit.batch.resume.scan_output`),
cuts a torn last line off, and drops the line of every id whose request
changed since its answer was written (an edited prompt, a line inserted in
a ``.txt`` file), so that id runs again and is never in OUT twice. Then it
opens the :class:`~streamkit.batch.output.RecordWriter` (with the ids done)
and the :class:`~streamkit.batch.output.ErrorLog`. Without resume OUT is
truncated.

What a line's request hash is depends on the run (a chat or generate
request, or an embed group), so the caller passes it as ``line_hash``.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Set, Tuple

from .check import Scan
from .config import BatchConfig
from .input import read_prompts
from .output import ErrorLog, RecordWriter
from .promptline import Problem, PromptLine
from .resume import ResumeState, drop_ids, repair, scan_output, short_hash

__all__ = ["LISTED_CHANGES", "LineHash", "open_output"]

LISTED_CHANGES = 10         # changed ids named in the message (all are counted)

#: The ``request_hash`` a record of a line would carry now (None: it cannot have one).
LineHash = Callable[[PromptLine], Optional[str]]


def open_output(config: BatchConfig, path: str, display: str, scan: Scan, *,
                line_hash: LineHash, say: Callable[[str], None]
                ) -> Tuple[RecordWriter, ErrorLog, int]:
    """Scan, repair and open the output and error files; (writer, error log, bytes cut off).

    ``path`` is the prompt file (stdin spooled), ``display`` its name in
    messages; ``scan`` the run's first pass over it. ``say`` is told of a
    repair and of superseded ids.

    Raises:
        ConfigError: an output line before the last is not a result record;
            the output is not a regular file, or cannot be written.
        OutputWriteError: rewriting the output failed (disk full).
    """
    done: Set[str] = set()
    repaired = 0
    if config.resume:
        state = scan_output(config.output)
        if state.torn_bytes:
            repair(config.output, state)
            repaired = state.torn_bytes
            say(f"repaired {config.output}: cut off a torn last line "
                f"({state.torn_bytes} bytes, from an interrupted run)")
        _supersede_changed(config, path, display, scan, state, line_hash, say)
        done = state.done
    writer = RecordWriter(config.output, truncate=not config.resume, done=done)
    try:
        errors = ErrorLog(config.errors, done=done, resume=config.resume)
    except BaseException:
        writer.close()
        raise
    return writer, errors, repaired


def _supersede_changed(config: BatchConfig, path: str, display: str, scan: Scan,
                       state: ResumeState, line_hash: LineHash,
                       say: Callable[[str], None]) -> None:
    """Drop the lines of ids whose request changed since; they run again."""
    if not state.hashes:
        return
    changed: List[str] = []
    for item in read_prompts(path, config.format_name, default_model=config.model,
                             display=display, prompt_column=config.prompt_column,
                             id_column=config.id_column):
        if isinstance(item, Problem) or item.line in scan.duplicate_lines:
            continue
        stored = state.hashes.get(item.id)
        if stored is None:
            continue
        current = line_hash(item)
        if current is None or stored != short_hash(current):
            changed.append(item.id)
    if not changed:
        return
    drop_ids(config.output, set(changed))
    state.done.difference_update(changed)
    named = ", ".join(repr(i) for i in changed[:LISTED_CHANGES])
    more = f" and {len(changed) - LISTED_CHANGES} more" if len(changed) > LISTED_CHANGES \
        else ""
    say(f"{len(changed)} prompt(s) changed since their answer was written "
        f"({named}{more}): their old answers are dropped and they run again")
