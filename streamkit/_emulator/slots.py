"""Per-model state: loading on first use and ``parallel`` FIFO generation slots."""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Deque, Dict, List, Optional

from .counters import Counters
from .faults import normalize_model
from .http import Conn
from .settings import EmulatorConfig

__all__ = ["BUSY", "BUSY_MESSAGE", "DISCONNECTED", "OK", "Models"]

OK, BUSY, DISCONNECTED = "ok", "busy", "disconnected"
BUSY_MESSAGE = "server busy, please try again.  maximum pending requests exceeded"


class _Model:
    def __init__(self, parallel: int) -> None:
        self.free = parallel
        self.waiters: Deque[asyncio.Future[None]] = collections.deque()
        self.load: Optional[asyncio.Task[None]] = None
        self.loaded = False
        self.used_at = 0.0


class Models:
    """Loads models on first use and hands out slots in FIFO order.

    A slot is handed straight to the oldest live waiter on release, so a
    newcomer can never overtake the queue. Runs on the loop thread only.
    """

    def __init__(self, config: EmulatorConfig, counters: Counters) -> None:
        self.config = config
        self.counters = counters
        self.waiting = 0
        # Ollama loads an embedding model with one slot, whatever OLLAMA_NUM_PARALLEL says.
        self._models: Dict[str, _Model] = {
            normalize_model(m): _Model(1 if config.embeds(m) else config.parallel)
            for m in config.served}

    def known(self, name: str) -> bool:
        return normalize_model(name) in self._models

    def loaded(self) -> List[str]:
        items = [(m.used_at, name) for name, m in self._models.items() if m.loaded]
        return [name for _, name in sorted(items, reverse=True)]

    async def _load(self, model: _Model) -> None:
        self.counters.add("loads")
        await asyncio.sleep(self.config.load_time)
        model.loaded = True

    async def ensure_loaded(self, name: str, conn: Conn) -> Optional[int]:
        """Nanoseconds spent getting the model ready; None if the client left."""
        started = time.perf_counter_ns()
        model = self._models[normalize_model(name)]
        model.used_at = time.time()
        if not model.loaded:
            if model.load is None:
                model.load = asyncio.get_running_loop().create_task(self._load(model))
            if not await conn.wait_future(model.load):  # type: ignore[arg-type]
                return None
        return max(1, time.perf_counter_ns() - started)

    async def acquire(self, name: str, conn: Conn) -> str:
        """OK with a slot held, BUSY (queue full: answer 503) or DISCONNECTED."""
        model = self._models[normalize_model(name)]
        if model.free > 0 and not model.waiters:
            model.free -= 1
            return OK
        if self.waiting >= self.config.max_queue:
            return BUSY
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        model.waiters.append(fut)
        self.waiting += 1
        self.counters.add("waiting")
        try:
            granted = await conn.wait_future(fut)  # type: ignore[arg-type]
        finally:
            self.waiting -= 1
            self.counters.add("waiting", -1)
        if granted:
            return OK
        if fut.done() and not fut.cancelled():
            self.release(name)  # handed a slot in the same instant the client left
        else:
            fut.cancel()
            model.waiters.remove(fut)
        return DISCONNECTED

    def release(self, name: str) -> None:
        model = self._models[normalize_model(name)]
        while model.waiters:
            fut = model.waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        model.free += 1

    def cancel_loads(self) -> None:
        for model in self._models.values():
            if model.load is not None and not model.load.done():
                model.load.cancel()
