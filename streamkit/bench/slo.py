"""Service-level objectives for bench: ``ttft=MS,tpot=MS,e2e=MS``, checked per request."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Mapping, Optional

from ..errors import ConfigError

__all__ = ["Slo"]


@dataclass(frozen=True)
class Slo:
    """Service-level objectives in ms; a request meets them when every set one holds."""

    ttft: Optional[float] = None
    tpot: Optional[float] = None
    e2e: Optional[float] = None

    @classmethod
    def parse(cls, text: str) -> Slo:
        """Parse ``ttft=MS,tpot=MS,e2e=MS`` (any subset). Raises ConfigError."""
        values: Dict[str, float] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, value = part.partition("=")
            key = key.strip().lower()
            if not sep or key not in ("ttft", "tpot", "e2e"):
                raise ConfigError(f"bad SLO {part!r}: use ttft=MS,tpot=MS,e2e=MS")
            try:
                values[key] = float(value)
            except ValueError as exc:
                raise ConfigError(f"bad SLO value {part!r}: not a number of ms") from exc
            if values[key] <= 0:
                raise ConfigError(f"bad SLO value {part!r}: must be > 0 ms")
        if not values:
            raise ConfigError("empty SLO: use ttft=MS,tpot=MS,e2e=MS")
        return cls(**values)

    def met(self, derived: Mapping[str, Any]) -> bool:
        """True when the derived metrics of one successful request meet every SLO.

        A request with one output token has no TPOT; it counts as 0 (vLLM's rule).
        Without a server token count the TPOT estimate from chunks is checked.
        """
        checks = (("ttft", "ttft_ms"), ("tpot", "tpot_ms"), ("e2e", "e2e_ms"))
        for name, key in checks:
            limit = getattr(self, name)
            if limit is None:
                continue
            value = derived.get(key)
            if value is None and key == "tpot_ms":
                value = derived.get("tpot_ms_estimated")
            if value is None:
                if key == "tpot_ms":
                    continue
                return False
            if value > limit:
                return False
        return True

    def as_dict(self) -> Dict[str, float]:
        return {k: v for k, v in asdict(self).items() if v is not None}
