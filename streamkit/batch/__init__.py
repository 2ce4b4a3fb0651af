"""Batch runs of prompt files: validated, resumable, exactly once.

- :mod:`.config`: :class:`BatchConfig`, the one list of batch options.
- :mod:`.input`: prompt files (formats, validation, line numbers).
- :mod:`.output`: result files (append-only JSONL, resume, the error file).
- :mod:`.run`: :func:`run_batch` and :func:`check_prompts`.
- :mod:`.cache`: :class:`SQLiteCache`, a persistent response cache.
"""

from __future__ import annotations

from .config import BatchConfig
from .run import BatchSummary, CheckReport, PromptFileError, check_prompts, run_batch

__all__ = ["BatchConfig", "BatchSummary", "CheckReport", "PromptFileError", "check_prompts",
           "run_batch"]
