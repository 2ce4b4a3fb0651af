"""streamkit: stream LLM output from Ollama and OpenAI-compatible servers into
synchronous Python — worker threads, bounded queues, cancellation, timeouts,
retries, bounded fan-out, resumable batch runs and trustworthy benchmarks.

Quick start::

    import streamkit as sk
    with sk.Client("http://127.0.0.1:11434") as client:
        for chunk in client.generate("llama3.2", "Why is the sky blue?"):
            print(chunk.text, end="", flush=True)

Heavy modules load lazily on first use (module ``__getattr__``, as
``concurrent.futures`` does), so ``import streamkit`` stays cheap and the
emulator does not pull in requests.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .config import RetryPolicy, Timeouts
from .errors import (
    Cancelled,
    ConfigError,
    ConnectError,
    ModelNotFound,
    ProtocolError,
    ResponseError,
    ResponseTooLarge,
    ServerBusy,
    ServerStreamError,
    StreamDiverged,
    StreamError,
    StreamInterrupted,
    StreamkitError,
    StreamTimeout,
)
from .records import (
    END,
    ChatRequest,
    Chunk,
    EmbedRequest,
    EmbedResult,
    GenerateRequest,
    Result,
    Stats,
    Timing,
)

if TYPE_CHECKING:
    from ._http import CancelToken
    from .batch import run_batch
    from .batch.cache import SQLiteCache
    from .client import Client
    from .conversation import Conversation
    from .dispatch import Dispatcher
    from .emulator import Emulator, EmulatorConfig, Fault
    from .stream import Stream

logging.getLogger("streamkit").addHandler(logging.NullHandler())

_LAZY = {
    "CancelToken": "_http",
    "Client": "client",
    "Conversation": "conversation",
    "Dispatcher": "dispatch",
    "Emulator": "emulator",
    "EmulatorConfig": "emulator",
    "Fault": "emulator",
    "SQLiteCache": "batch.cache",
    "Stream": "stream",
    "run_batch": "batch",
}

__all__ = [
    "CancelToken",
    "Cancelled",
    "ChatRequest",
    "Chunk",
    "Client",
    "ConfigError",
    "ConnectError",
    "Conversation",
    "Dispatcher",
    "END",
    "EmbedRequest",
    "EmbedResult",
    "Emulator",
    "EmulatorConfig",
    "Fault",
    "GenerateRequest",
    "ModelNotFound",
    "ProtocolError",
    "ResponseError",
    "ResponseTooLarge",
    "Result",
    "RetryPolicy",
    "SQLiteCache",
    "ServerBusy",
    "ServerStreamError",
    "Stats",
    "Stream",
    "StreamDiverged",
    "StreamError",
    "StreamInterrupted",
    "StreamTimeout",
    "StreamkitError",
    "Timeouts",
    "Timing",
    "__version__",
    "run_batch",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'streamkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
