"""``Emulator``: runs the asyncio server in one daemon thread."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import threading
from typing import Any, Callable, Dict, Optional

from ..errors import ConfigError
from .api import Service
from .counters import Counters
from .faults import FaultPlan, FaultsLike, coerce_faults
from .http import Conn
from .settings import EmulatorConfig

__all__ = ["Emulator"]

THREAD_NAME = "streamkit-emulator"
_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 10.0


class Emulator:
    """An Ollama-compatible server on a background thread.

    ``Emulator(config)`` or ``Emulator(**overrides)`` (fields of
    EmulatorConfig; with both, the overrides replace fields of ``config``).
    Use as a context manager, or call :meth:`start`/:meth:`stop` (both
    idempotent). ``stop()`` closes every connection and the listening
    socket and joins the thread.
    """

    def __init__(self, config: Optional[EmulatorConfig] = None, **overrides: Any) -> None:
        base = config if config is not None else EmulatorConfig()
        self.config = dataclasses.replace(base, **overrides) if overrides else base
        self._counters = Counters()
        self._plan = FaultPlan(self.config.faults, self.config.seed)
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._stop_event: Optional[asyncio.Event] = None
        self._ready = threading.Event()
        self._error: Optional[BaseException] = None
        self._port = 0

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> Emulator:
        """Start listening; returns once the port is bound (idempotent).

        Raises:
            ConfigError: the host/port cannot be bound.
        """
        with self._lock:
            if self._thread is not None:
                return self
            self._ready.clear()
            self._error = None
            thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
            self._thread = thread
            thread.start()
            if not self._ready.wait(_START_TIMEOUT_S):
                raise ConfigError("the emulator did not start in time")
            error = self._startup_error()
            if error is not None:
                thread.join(_STOP_TIMEOUT_S)
                self._thread = None
                raise ConfigError(f"cannot listen on {self.config.host}:{self.config.port}: "
                                  f"{error}") from error
        return self

    def _startup_error(self) -> Optional[BaseException]:
        return self._error  # set by the loop thread before it signals ready

    def stop(self) -> None:
        """Close all connections and the listener, join the thread (idempotent)."""
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is None:
                return
            loop, event = self._loop, self._stop_event
            if loop is not None and event is not None:
                with contextlib.suppress(RuntimeError):  # loop already closed
                    loop.call_soon_threadsafe(event.set)
            thread.join(_STOP_TIMEOUT_S)

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:  # reported to start()
            self._error = exc
        finally:
            self._ready.set()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            self._loop = None

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        service = Service(self.config, self._counters, self._plan)
        # the system's backlog, not asyncio's 100 (why: the module docstring of
        # streamkit.emulator, "Connections")
        server = await loop.create_server(lambda: Conn(service.open, service.lost),
                                          self.config.host, self.config.port,
                                          backlog=socket.SOMAXCONN)
        self._port = server.sockets[0].getsockname()[1]
        self._stop_event = asyncio.Event()
        self._ready.set()
        try:
            await self._stop_event.wait()
        finally:
            server.close()
            await service.shutdown()
            await server.wait_closed()

    # -- observation and control ------------------------------------------------------
    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:PORT`` (valid once started)."""
        host = self.config.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self._port}"

    def counters(self) -> Dict[str, Any]:
        """A snapshot (deep copy) of the counters."""
        return self._counters.snapshot()

    def reset_counters(self) -> None:
        self._counters.reset()

    def set_faults(self, faults: FaultsLike) -> None:
        """Replace the fault specs (Faults or a spec string); restarts their counts.

        Raises:
            ConfigError: a bad spec.
        """
        self._plan.replace(coerce_faults(faults))

    def wait_until(self, predicate: Callable[[Dict[str, Any]], bool],
                   timeout: float = 5.0) -> bool:
        """Block until ``predicate(counters)`` holds; False after ``timeout`` seconds."""
        return self._counters.wait_until(predicate, timeout)

    def __repr__(self) -> str:
        state = "running" if self._thread is not None else "stopped"
        return f"<Emulator {state} {self.url if self._port else ''}>"
