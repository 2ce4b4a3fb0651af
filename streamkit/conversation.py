"""Conversation: a chat over a Client that remembers its history."""

from __future__ import annotations

import threading
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from . import _args as args
from .client import Client
from .errors import ConfigError
from .stream import Stream

__all__ = ["Conversation"]


class Conversation:
    """A chat that remembers: each :meth:`ask` sends the history plus a new user turn.

    The user turn and the assistant's reply join the history together once
    the reply has completed successfully; a failed or cancelled reply leaves
    the history as it was, so the question can simply be asked again.

    Turns are sequential: ``ask`` first waits for the previous reply to end
    (it need not have been read: waiting lifts its queue bound), so every
    question is sent with the answers before it. Thread-safe.
    """

    def __init__(self, client: Client, model: str, *, system: Optional[str] = None,
                 options: Optional[Mapping[str, Any]] = None,
                 format: Optional[Union[str, Mapping[str, Any]]] = None,
                 think: Optional[Union[bool, str]] = None) -> None:
        args.check_optional("system", system, str, "a string")
        args.check_common(options, format, think, None, None)
        self.client = client
        self.model = args.check_model(model)
        self.options = options
        self.format = format
        self.think = think
        self._system = system
        self._lock = threading.Lock()   # guards _history and _pending
        self._turn = threading.Lock()   # one ask at a time builds on the history
        self._history: List[Dict[str, Any]] = []
        self._pending: Optional[Tuple[Dict[str, Any], Stream]] = None

    @property
    def history(self) -> List[Dict[str, Any]]:
        """A copy of the completed turns (without the system prompt); never blocks
        on a reply still streaming (it is not part of the history yet)."""
        with self._lock:
            self._settle(wait=False)
            return [dict(m) for m in self._history]

    def reset(self) -> None:
        """Forget every turn (a reply still streaming will not be recorded)."""
        with self._lock:
            self._history.clear()
            self._pending = None

    def ask(self, text: str, *, images: Optional[Sequence[str]] = None) -> Stream:
        """Send ``text`` (with ``images``, base64 strings) as the next user turn;
        returns the reply's Stream (started).

        Blocks while the previous reply is still streaming. Raises
        ConfigError for a non-string ``text`` or bad ``images``.
        """
        if not isinstance(text, str):
            raise ConfigError(f"text must be a string, got {type(text).__name__}")
        args.check_images("images", images)
        user: Dict[str, Any] = {"role": "user", "content": text}
        if images:
            user["images"] = list(images)
        with self._turn:
            with self._lock:
                pending = self._pending
            if pending is not None:
                pending[1].result()  # the previous turn must end first (outside _lock)
            with self._lock:
                self._settle(wait=False)
                messages = list(self._history)
            if self._system is not None:
                messages.insert(0, {"role": "system", "content": self._system})
            messages.append(user)
            stream = self.client.chat(self.model, messages, options=self.options,
                                      format=self.format, think=self.think)
            with self._lock:
                self._pending = (user, stream)
        return stream

    def _settle(self, *, wait: bool) -> None:
        """Move a finished pending turn into the history (call with _lock held)."""
        if self._pending is None:
            return
        user, stream = self._pending
        try:
            result = stream.result(timeout=None if wait else 0)
        except TimeoutError:
            return
        self._pending = None
        if result.error is not None:
            return
        reply: Dict[str, Any] = {"role": "assistant", "content": result.text}
        if result.tool_calls:
            reply["tool_calls"] = list(result.tool_calls)
        self._history.extend([user, reply])
