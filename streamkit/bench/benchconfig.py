"""The configuration of a bench run (:class:`BenchConfig`): validated, frozen, picklable."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from ..config import Timeouts, redact_url
from ..errors import ConfigError
from .arrival import ARRIVALS
from .metrics import Slo
from .search import DEFAULT_MAX_PROBES, DEFAULT_TOLERANCE
from .target import PromptSpec, SenderArgs

__all__ = ["BUILTIN", "DEFAULT_NUM_PREDICT", "BenchConfig"]

BUILTIN = "builtin"
DEFAULT_NUM_PREDICT = 64


@dataclass(frozen=True)
class BenchConfig:
    """What to benchmark and how (validated; frozen; picklable).

    Load: ``concurrency`` (closed loop, one point each) unless ``rates`` is
    given (open loop, one point each, ``arrival`` constant, poisson or gamma
    with ``arrival_shape``, optional ``max_concurrency``; ``ramp``: one point
    rising from ``rates[0]`` to ``rates[1]``), ``replay`` holds recorded
    schedules (:func:`~.workload.read_replay`), or ``search`` looks for the
    highest rate meeting ``slo`` for ``goodput_target`` of the requests.
    Each point runs ``requests`` requests and/or for ``duration`` seconds;
    when neither is set, ``max(10, 4 x concurrency)`` requests (closed) or
    10 s worth of arrivals (open), ``repeat`` times. ``warmup`` requests run
    at the same load first and are discarded. ``input_tokens`` sizes the
    generated prompts in tokens. ``processes`` None shards each point as its
    load needs (:mod:`.sharding`); an integer forces that many.
    ``host="builtin"`` benchmarks an emulator (``emulator``, default: 50
    tok/s, 300 ms to the first token, 4 slots) started in a child process.
    """

    model: str
    host: Optional[str] = None
    dialect: str = "ollama"
    concurrency: Tuple[int, ...] = (1,)
    rates: Tuple[float, ...] = ()
    arrival: str = "constant"
    max_concurrency: Optional[int] = None
    requests: Optional[int] = None
    duration: Optional[float] = None
    warmup: int = 0
    prompts: Tuple[PromptSpec, ...] = ()
    prompt_file: Optional[str] = None
    prompt_words: int = 32
    num_predict: Optional[int] = DEFAULT_NUM_PREDICT
    options: Mapping[str, Any] = field(default_factory=dict)
    think: Optional[Union[bool, str]] = None
    slo: Optional[Slo] = None
    seed: int = 0
    processes: Optional[int] = None
    calibrate: bool = True
    load_model: bool = True
    timeouts: Timeouts = field(default_factory=Timeouts)
    emulator: Any = None
    emulator_in_process: bool = False
    repeat: int = 1
    search: bool = False
    goodput_target: float = 0.95
    search_tolerance: float = DEFAULT_TOLERANCE
    search_max_probes: int = DEFAULT_MAX_PROBES
    arrival_shape: float = 1.0
    ramp: bool = False
    replay: Tuple[Tuple[str, Tuple[int, ...], Tuple[float, ...]], ...] = ()
    replay_file: Optional[str] = None
    input_tokens: Optional[int] = None

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise ConfigError("bench needs a model name (-m MODEL)")
        object.__setattr__(self, "concurrency", tuple(self.concurrency))
        object.__setattr__(self, "rates", tuple(float(r) for r in self.rates))
        if not self.rates and (not self.concurrency or min(self.concurrency) < 1):
            raise ConfigError(f"concurrency must be integers >= 1, got {self.concurrency!r}")
        if any(not r > 0 for r in self.rates):
            raise ConfigError(f"rate must be > 0 requests/s, got {self.rates!r}")
        if self.arrival not in ARRIVALS:
            raise ConfigError(f"arrival must be one of {ARRIVALS}, got {self.arrival!r}")
        self._check_positive("max_concurrency", self.max_concurrency)
        self._check_positive("requests", self.requests)
        self._check_positive("processes", self.processes)
        self._check_positive("prompt_words", self.prompt_words)
        if self.duration is not None and not self.duration > 0:
            raise ConfigError(f"duration must be > 0 seconds, got {self.duration!r}")
        if self.warmup < 0:
            raise ConfigError(f"warmup must be >= 0, got {self.warmup!r}")
        if self.num_predict is not None and self.num_predict < 1:
            raise ConfigError(f"num_predict must be >= 1, got {self.num_predict!r}")
        self._check_positive("repeat", self.repeat)
        if not 0 < self.goodput_target <= 1:
            raise ConfigError(f"goodput target must be in (0, 1], got {self.goodput_target!r}")
        if self.search and self.slo is None:
            raise ConfigError("--search needs --slo (e.g. --slo ttft=500,tpot=50): the "
                              "search looks for the highest rate that meets it")
        if self.search and len(self.rates) > 1:
            raise ConfigError("--search takes at most one --rate (where to start)")
        self._check_workload()

    def _check_workload(self) -> None:
        if not self.arrival_shape > 0:
            raise ConfigError(f"the gamma shape must be > 0, got {self.arrival_shape!r}")
        if self.ramp and (len(self.rates) != 2 or self.search):
            raise ConfigError("--ramp needs --rate FROM,TO (two rates) and no --search")
        if self.replay and (self.rates or self.search):
            raise ConfigError("--replay runs the recorded schedule: no --rate or --search")
        self._check_positive("input_tokens", self.input_tokens)
        if self.input_tokens is not None and self.prompts:
            raise ConfigError("--input-tokens sizes generated prompts: not with a prompt file")

    @staticmethod
    def _check_positive(name: str, value: Optional[int]) -> None:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):
            raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")

    @property
    def open_loop(self) -> bool:
        return bool(self.rates) or self.search or bool(self.replay)

    def sender_args(self, host: str, pool_size: int) -> SenderArgs:
        options = dict(self.options)
        if self.num_predict is not None:
            options["num_predict"] = self.num_predict
        return SenderArgs(host=host, model=self.model, dialect=self.dialect,
                          prompts=self.prompts, prompt_words=self.prompt_words,
                          options=options, think=self.think, timeouts=self.timeouts,
                          pool_size=pool_size, seed=self.seed)

    def as_dict(self) -> Dict[str, Any]:
        """The configuration for run.json (prompts summarized, never the API key
        nor credentials in the host URL)."""
        return {
            "model": self.model, "host": None if self.host is None else redact_url(self.host),
            "dialect": self.dialect,
            "mode": "open" if self.open_loop else "closed",
            "concurrency": list(self.concurrency) if not self.open_loop else None,
            "rates": list(self.rates) or None, "arrival": self.arrival,
            "max_concurrency": self.max_concurrency, "requests": self.requests,
            "duration": self.duration, "warmup": self.warmup,
            "prompt_file": self.prompt_file, "prompts": len(self.prompts) or None,
            "prompt_words": None if self.prompts else self.prompt_words,
            "num_predict": self.num_predict, "options": dict(self.options),
            "think": self.think, "slo": self.slo.as_dict() if self.slo else None,
            "seed": self.seed, "processes": self.processes, "calibrate": self.calibrate,
            "timeouts": {k: getattr(self.timeouts, k)
                         for k in ("connect", "first_token", "idle", "total")},
            "emulator": _emulator_dict(self.emulator) if self.host == BUILTIN else None,
            "repeat": self.repeat, "search": self.search,
            "goodput_target": self.goodput_target if self.search else None,
            "arrival_shape": self.arrival_shape if self.arrival == "gamma" else None,
            "ramp": self.ramp, "replay": self.replay_file, "input_tokens": self.input_tokens,
        }


def _emulator_dict(config: Any) -> Optional[Dict[str, Any]]:
    if config is None:
        return None
    keys = ("tokens_per_second", "first_token_delay", "load_time", "parallel",
            "tokens_per_chunk", "max_queue")
    return {k: getattr(config, k) for k in keys if hasattr(config, k)}
