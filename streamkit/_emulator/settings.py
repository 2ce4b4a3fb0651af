"""``EmulatorConfig``: the frozen, validated settings of one emulator."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Tuple

from ..errors import ConfigError
from .faults import Fault, coerce_faults, normalize_model

__all__ = ["EmulatorConfig"]


def _check_number(name: str, value: Any, *, minimum: float, integer: bool = False) -> None:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        what = "an integer" if integer else "a number"
        raise ConfigError(f"EmulatorConfig.{name} must be {what}, got {value!r}")
    if value < minimum:
        raise ConfigError(f"EmulatorConfig.{name} must be >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class EmulatorConfig:
    """Settings of an :class:`~streamkit.emulator.Emulator` (all validated).

    - ``host``/``port``: where to listen (port 0 picks a free port).
    - ``models``: the model names served (``demo`` also answers ``demo:latest``).
    - ``tokens_per_second``: pacing; 0 streams as fast as the client reads.
    - ``first_token_delay``: seconds from slot acquired to the first token.
    - ``load_time``: seconds to "load" a model on its first use (``load_duration``).
    - ``parallel``: generation slots per model; ``max_queue``: how many requests
      may wait for a slot before 503.
    - ``faults``: Fault objects or a spec string (see :mod:`streamkit.emulator`).
    - ``stamp``: add ``"_sent_ns": perf_counter_ns()`` to each streamed chunk.
    - ``tokens_per_chunk``: tokens per streamed chunk.
    - ``response_tokens``: (min, max) natural response length in tokens.
    - ``think_tokens``: thinking tokens sent first when the request asks to think.
    - ``version``: what ``/api/version`` reports; ``seed``: mixes into all text.
    - ``exotic``: add tokens with raw U+0085 and U+2028 to the vocabulary.
    - ``embed_models``: embedding models, served besides ``models``; they embed
      and cannot generate (a model of ``models`` generates and cannot embed).
      Like Ollama, each has one slot, whatever ``parallel`` says.
    - ``embed_dim``: length of the vectors; ``embed_request_cost`` (seconds per
      request) and ``embed_token_cost`` (seconds per input token) are how long
      an embed request holds its model's slot.
    """

    host: str = "127.0.0.1"
    port: int = 0
    models: Tuple[str, ...] = ("demo",)
    tokens_per_second: float = 0.0
    first_token_delay: float = 0.0
    load_time: float = 0.0
    parallel: int = 4
    max_queue: int = 512
    faults: Tuple[Fault, ...] = ()
    stamp: bool = False
    tokens_per_chunk: int = 1
    response_tokens: Tuple[int, int] = (8, 48)
    think_tokens: int = 8
    version: str = "0.12.6"
    seed: int = 0
    exotic: bool = False
    embed_models: Tuple[str, ...] = ("demo-embed",)
    embed_dim: int = 768
    embed_request_cost: float = 0.0
    embed_token_cost: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "models", self._names("models", allow_empty=False))
        object.__setattr__(self, "faults", coerce_faults(self.faults))
        object.__setattr__(self, "embed_models", self._names("embed_models", allow_empty=True))
        _check_number("embed_dim", self.embed_dim, minimum=1, integer=True)
        for name in ("embed_request_cost", "embed_token_cost"):
            _check_number(name, getattr(self, name), minimum=0)
        _check_number("port", self.port, minimum=0, integer=True)
        if self.port > 65535:
            raise ConfigError(f"EmulatorConfig.port must be <= 65535, got {self.port!r}")
        for name in ("tokens_per_second", "first_token_delay", "load_time"):
            _check_number(name, getattr(self, name), minimum=0)
        _check_number("parallel", self.parallel, minimum=1, integer=True)
        _check_number("max_queue", self.max_queue, minimum=0, integer=True)
        _check_number("tokens_per_chunk", self.tokens_per_chunk, minimum=1, integer=True)
        _check_number("think_tokens", self.think_tokens, minimum=0, integer=True)
        _check_number("seed", self.seed, minimum=-(2**63), integer=True)
        self._check_response_tokens()

    def _names(self, field: str, *, allow_empty: bool) -> Tuple[str, ...]:
        raw: Any = getattr(self, field)
        names = (raw,) if isinstance(raw, str) else tuple(raw)
        if (not names and not allow_empty) or not all(isinstance(m, str) and m for m in names):
            raise ConfigError(f"EmulatorConfig.{field} must be non-empty names, got {raw!r}")
        return names

    @property
    def served(self) -> Tuple[str, ...]:
        """Every model served: ``models`` then ``embed_models``."""
        return self.models + tuple(m for m in self.embed_models if m not in self.models)

    def embeds(self, name: str) -> bool:
        """True if ``name`` (with or without ``:latest``) is an embedding model."""
        wanted = normalize_model(name)
        return any(normalize_model(m) == wanted for m in self.embed_models)

    def _check_response_tokens(self) -> None:
        pair = tuple(self.response_tokens)
        if len(pair) != 2 or not all(isinstance(n, int) and not isinstance(n, bool)
                                     for n in pair) or not 1 <= pair[0] <= pair[1]:
            raise ConfigError("EmulatorConfig.response_tokens must be (min, max) with "
                              f"1 <= min <= max, got {self.response_tokens!r}")
        object.__setattr__(self, "response_tokens", pair)
