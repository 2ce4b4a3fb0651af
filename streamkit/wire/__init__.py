"""Pure wire codecs: request bodies out, bytes in → records out. No I/O here.

Each dialect module (``ollama``, ``openai``) exposes one object implementing
:class:`Dialect`; the stream layer drives it and never looks at JSON itself.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Protocol, Tuple

from ..errors import ResponseError
from ..records import ChatRequest, Chunk, GenerateRequest, Stats

__all__ = ["Decoder", "Dialect", "get_dialect"]


class Decoder(Protocol):
    """Decodes the body of one HTTP attempt. A new one per attempt.

    ``feed`` takes the bytes of one socket read and the ``perf_counter_ns()``
    stamped when they arrived, and returns the chunks completed by them (in
    order; chunk indexes start at ``first_index``). It raises
    ``ServerStreamError`` for an in-band error record and ``ProtocolError``
    for undecodable data or an oversize line; the stream layer fills in
    ``.partial``. After the end marker, further data is ignored.

    ``close`` is called at EOF and raises ``StreamInterrupted`` if the end
    marker (Ollama ``done: true``, OpenAI ``[DONE]``) was not seen, after
    flushing a final line that had no newline.

    The stream layer reads these attributes directly:

    - ``completed``: the list the latest decoding pass fills as records
      complete; after a raise it holds the records before the bad one (so a
      failing read still delivers them), after a normal return it is the very
      list ``feed``/``close`` returned;
    - ``done``: the end marker was seen;
    - ``done_reason``, ``model``, ``stats``: from the final record (``stats``
      empty until then).
    """

    completed: List[Chunk]
    done: bool
    done_reason: Optional[str]
    model: Optional[str]
    stats: Stats

    def feed(self, data: bytes, received_ns: int) -> List[Chunk]: ...

    def close(self, received_ns: int) -> List[Chunk]: ...

    def activity(self) -> bool:
        """True if the last feed carried real records (not just keep-alive comments)."""


class Dialect(Protocol):
    """Everything one wire dialect knows: paths, bodies, decoding, error statuses."""

    name: str

    def chat(self, request: ChatRequest) -> Tuple[str, Dict[str, Any]]:
        """(path relative to the base URL, JSON body) for a chat request."""

    def generate(self, request: GenerateRequest) -> Tuple[str, Dict[str, Any]]:
        """(path, JSON body) for a generate/completions request."""

    def decoder(self, *, first_index: int = 0, max_line: int = ...) -> Decoder:
        """A fresh decoder for one attempt's body."""

    def error_for_status(self, status: int, body: bytes, headers: Mapping[str, str],
                         model: str) -> ResponseError:
        """The typed error for a non-2xx reply (ModelNotFound, ServerBusy, ResponseError).

        ``headers`` keys are lower-case. ServerBusy gets ``retry_after`` parsed
        from a ``Retry-After`` header in seconds or as an HTTP date.
        """


def get_dialect(name: str) -> Dialect:
    """The dialect object for ``"ollama"`` or ``"openai"``; ConfigError otherwise."""
    from ..errors import ConfigError
    if name == "ollama":
        from .ollama import OLLAMA
        return OLLAMA
    if name == "openai":
        from .openai import OPENAI
        return OPENAI
    raise ConfigError(f"dialect must be 'ollama' or 'openai', got {name!r}")
