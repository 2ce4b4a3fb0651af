"""Fault specs: parsing (``parse_faults``) and per-request selection (``FaultPlan``).

The syntax is documented in :mod:`streamkit.emulator`.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple, Union

from ..errors import ConfigError

__all__ = ["KINDS", "Fault", "FaultPlan", "FaultsLike", "coerce_faults", "normalize_model",
           "parse_faults"]

# Kinds that act before any response byte, and kinds that act mid-body.
PRE_KINDS = ("refuse", "reset", "status", "slow_headers")
BODY_KINDS = ("cut", "stall", "error", "malformed", "blank", "nodone")
KINDS = PRE_KINDS + BODY_KINDS

_DEFAULT_AFTER = 1
_DEFAULT_SLOW_HEADERS_S = 1.0
_KEYS_BY_KIND: Dict[str, Tuple[str, ...]] = {
    "status": ("retry_after", "retry_after_date", "message"),
    "error": ("after", "message"),
    "cut": ("after",), "stall": ("after",), "malformed": ("after",),
    "slow_headers": ("delay",),
}
_TRIGGER_KEYS = ("p", "first", "nth", "every", "model")


@dataclass(frozen=True)
class Fault:
    """One fault spec: what to do (``kind`` and its options) and when (triggers).

    ``code`` is the status of a ``status`` fault; ``after`` the number of
    chunks sent before a mid-body fault fires; ``delay`` the pause of
    ``slow_headers``. Triggers: ``p`` (probability), ``first`` (the first N
    matching requests), ``nth`` (only the Nth), ``every`` (every Nth),
    ``model`` (only that model). All given triggers must hold; none means
    every request.
    """

    kind: str
    code: int = 0
    after: int = _DEFAULT_AFTER
    delay: float = _DEFAULT_SLOW_HEADERS_S
    retry_after: Optional[float] = None
    retry_after_date: Optional[float] = None
    message: Optional[str] = None
    p: Optional[float] = None
    first: Optional[int] = None
    nth: Optional[int] = None
    every: Optional[int] = None
    model: Optional[str] = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"unknown fault kind {self.kind!r}; expected one of "
                              f"{', '.join(KINDS)}")
        if self.kind == "status" and not 100 <= self.code <= 599:
            raise ConfigError(f"fault status needs a code 100..599, got {self.code!r}")
        if self.after < 0 or self.delay < 0:
            raise ConfigError("fault after/delay must be >= 0")
        if self.p is not None and not 0.0 <= self.p <= 1.0:
            raise ConfigError(f"fault p must be in 0..1, got {self.p!r}")
        for name in ("first", "nth", "every"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"fault {name} must be >= 1, got {value!r}")

    def triggered(self, count: int, rng: random.Random) -> bool:
        """Whether the ``count``-th matching request (1-based) gets this fault."""
        if self.first is not None and count > self.first:
            return False
        if self.nth is not None and count != self.nth:
            return False
        if self.every is not None and count % self.every != 0:
            return False
        return self.p is None or rng.random() < self.p


FaultsLike = Union[str, Sequence[Fault], None]


def _number(part: str, key: str, value: str, kind: type) -> float:
    try:
        number = kind(value)
    except ValueError:
        raise ConfigError(f"fault spec {part!r}: {key}={value!r} is not "
                          f"{'an integer' if kind is int else 'a number'}") from None
    return float(number) if kind is float else number


def _parse_one(part: str) -> Fault:
    head, *options = [item.strip() for item in part.split(",")]
    kind, _, arg = head.partition(":")
    kind = kind.strip().lower()
    if kind not in KINDS:
        raise ConfigError(f"fault spec {part!r}: unknown kind {kind!r}; expected one of "
                          f"{', '.join(KINDS)}")
    fields: Dict[str, object] = {"kind": kind}
    if kind == "status":
        if not arg:
            raise ConfigError(f"fault spec {part!r}: status needs a code, e.g. status:503")
        fields["code"] = int(_number(part, "status", arg, int))
    elif arg:
        raise ConfigError(f"fault spec {part!r}: kind {kind!r} takes no ':' argument")
    allowed = _KEYS_BY_KIND.get(kind, ()) + _TRIGGER_KEYS
    for option in options:
        key, eq, value = option.partition("=")
        key = key.strip()
        if not eq or key not in allowed:
            raise ConfigError(f"fault spec {part!r}: bad option {option!r}; "
                              f"{kind} accepts {', '.join(allowed)}")
        if key in ("message", "model"):
            fields[key] = value
        elif key in ("after", "first", "nth", "every"):
            fields[key] = int(_number(part, key, value, int))
        else:
            fields[key] = _number(part, key, value, float)
    try:
        return Fault(**fields)  # type: ignore[arg-type]
    except ConfigError as exc:
        raise ConfigError(f"fault spec {part!r}: {exc}") from None


def parse_faults(spec: str) -> Tuple[Fault, ...]:
    """Parse ``KIND[:ARG][,key=value]...`` specs joined by ``;`` into Faults.

    Raises:
        ConfigError: naming the bad spec part and what was expected.
    """
    parts = [part.strip() for part in spec.split(";")]
    return tuple(_parse_one(part) for part in parts if part)


def coerce_faults(faults: FaultsLike) -> Tuple[Fault, ...]:
    """A spec string, a sequence of Faults or None, as a tuple of Faults."""
    if faults is None:
        return ()
    if isinstance(faults, str):
        return parse_faults(faults)
    result = tuple(faults)
    for fault in result:
        if not isinstance(fault, Fault):
            raise ConfigError(f"faults must be Fault objects or a spec string, got {fault!r}")
    return result


class FaultPlan:
    """Picks at most one fault per inference request (first matching spec wins).

    Each spec counts the requests that match its ``model`` filter; the count
    drives ``first``/``nth``/``every``. Thread-safe (set from any thread).
    """

    def __init__(self, faults: Sequence[Fault], seed: int) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._seed = seed
        self.replace(faults)

    def replace(self, faults: Sequence[Fault]) -> None:
        with self._lock:
            self._faults = tuple(faults)
            self._counts = [0] * len(self._faults)
            self._rng = random.Random(self._seed)

    def pick(self, model: str) -> Optional[Fault]:
        chosen: Optional[Fault] = None
        with self._lock:
            for i, fault in enumerate(self._faults):
                if fault.model is not None and not _same_model(fault.model, model):
                    continue
                self._counts[i] += 1
                if fault.triggered(self._counts[i], self._rng) and chosen is None:
                    chosen = fault
        return chosen


def normalize_model(name: str) -> str:
    """``name`` with the default ``:latest`` tag added when it has none."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def _same_model(a: str, b: str) -> bool:
    return normalize_model(a) == normalize_model(b)
