"""What the pool and ``map``/``events`` need of a job's work: a Stream or an EmbedCall."""

from __future__ import annotations

from typing import Any, Callable, Optional, Protocol

from .._http import Poller

__all__ = ["Task"]


class Task(Protocol):
    """A request run by a dispatcher worker; ``_run`` never raises and ends it exactly once.

    :class:`~streamkit.Stream` (chat, generate) and
    :class:`~streamkit._dispatch.embed.EmbedCall` (embed) are the two kinds.
    """

    @property
    def id(self) -> Optional[str]: ...

    @property
    def host(self) -> Optional[str]: ...

    @property
    def request(self) -> Any: ...

    def _run(self, sink: Optional[Callable[[Any], None]] = None,
             poller: Optional[Poller] = None) -> None: ...

    def cancel(self) -> bool: ...

    def result(self, timeout: Optional[float] = None) -> Any: ...
