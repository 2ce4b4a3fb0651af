"""Thread-safe counters that tests can read and wait on."""

from __future__ import annotations

import copy
import threading
import time
from typing import Any, Callable, Dict

__all__ = ["Counters"]

_SCALARS = ("requests", "inference", "chunks_sent", "completed", "disconnects",
            "disconnects_waiting", "busy_rejections", "in_flight", "waiting", "loads",
            "embed_inputs", "peak_in_flight")


class Counters:
    """Counts what the emulator saw. Written on the loop thread, read anywhere.

    Every change notifies a condition variable, so :meth:`wait_until` wakes
    as soon as a predicate can become true (no polling).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._values: Dict[str, Any] = {}
        self.reset()

    def reset(self) -> None:
        """Zero the totals; ``in_flight`` and ``waiting`` are live gauges and stay."""
        with self._cond:
            live = {k: self._values.get(k, 0) for k in ("in_flight", "waiting")}
            self._values = {name: 0 for name in _SCALARS}
            self._values.update(live)
            self._values["peak_in_flight"] = live["in_flight"]
            self._values["faults"] = {}
            self._values["by_path"] = {}
            self._cond.notify_all()

    def add(self, name: str, n: int = 1) -> None:
        if n:
            with self._cond:
                self._values[name] += n
                if name == "in_flight":
                    self._values["peak_in_flight"] = max(self._values["peak_in_flight"],
                                                         self._values["in_flight"])
                self._cond.notify_all()

    def add_to(self, table: str, key: str) -> None:
        with self._cond:
            bucket = self._values[table]
            bucket[key] = bucket.get(key, 0) + 1
            self._cond.notify_all()

    def snapshot(self) -> Dict[str, Any]:
        with self._cond:
            return copy.deepcopy(self._values)

    def wait_until(self, predicate: Callable[[Dict[str, Any]], bool],
                   timeout: float) -> bool:
        """Block until ``predicate(snapshot)`` is true or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(copy.deepcopy(self._values)):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True
