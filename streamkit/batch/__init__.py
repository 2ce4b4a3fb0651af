"""Batch runs of prompt files: validated, resumable, exactly once.

- :mod:`.config`: :class:`BatchConfig`, the one list of batch options.
- :mod:`.promptline`: one prompt line (PromptLine, Problem) and its validation.
- :mod:`.input`: prompt files (formats, line numbers).
- :mod:`.output`: result files (append-only JSONL, resume, the error file).
- :mod:`.records`: what a result or error line says, and its JSON encoding.
- :mod:`.check`: the first pass over a prompt file; :func:`check_prompts`.
- :mod:`.reopen`: opening an output for a run (resume, repair, changed prompts).
- :mod:`.run`: :func:`run_batch`.
- :mod:`.cache`: :class:`SQLiteCache`, a persistent response cache.
"""

from __future__ import annotations

from .check import CheckReport, PromptFileError, check_prompts
from .config import BatchConfig
from .run import run_batch
from .summary import BatchSummary

__all__ = ["BatchConfig", "BatchSummary", "CheckReport", "PromptFileError", "check_prompts",
           "run_batch"]
