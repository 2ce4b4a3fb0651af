"""What the inference endpoints share: their kind, and the service face they use.

Kept apart from ``api.py`` so that the endpoint modules (``embed.py``) can
name the service they run on without importing it back (no import cycle).
"""

from __future__ import annotations

from typing import Protocol, Tuple

from .counters import Counters
from .faults import Fault, FaultPlan
from .http import Conn, Request
from .settings import EmulatorConfig
from .slots import Models

__all__ = ["Inference", "ServiceFace"]


class Inference:
    """What distinguishes the inference endpoints (Go type name, OpenAI shape, chat)."""

    def __init__(self, go_type: str, openai: bool, chat: bool) -> None:
        self.go_type = go_type
        self.openai = openai
        self.chat = chat


class ServiceFace(Protocol):
    """The part of ``api.Service`` an endpoint module calls."""

    config: EmulatorConfig
    counters: Counters
    plan: FaultPlan
    models: Models

    def _error(self, conn: Conn, req: Request, kind: Inference, status: int, message: str,
               extra: Tuple[Tuple[str, str], ...] = ()) -> None: ...

    async def _pre_fault(self, conn: Conn, req: Request, kind: Inference,
                         fault: Fault) -> bool: ...

    def _count_disconnect(self, *, waiting: bool) -> None: ...
