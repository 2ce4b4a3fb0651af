"""Frozen, validated configuration: timeouts, retry policy, hosts, the API key.

Nothing here does I/O. Every object validates itself in ``__post_init__`` and
raises :class:`~streamkit.errors.ConfigError` naming the bad field.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Tuple, Union
from urllib.parse import urlsplit

from .errors import ConfigError

__all__ = [
    "API_KEY_ENV",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "HostSpec",
    "RetryPolicy",
    "Secret",
    "Timeouts",
    "api_key_from_env",
    "check_count",
    "dialect_base_url",
    "host_from_env",
    "parse_host",
    "redact_url",
]

DEFAULT_PORT = 11434
DEFAULT_HOST = f"http://127.0.0.1:{DEFAULT_PORT}"

ON_INTERRUPT_CHOICES = ("fail", "replay", "restart")

#: A host as callers give it: a URL, or a ``(URL, parallel limit)`` pair.
HostSpec = Union[str, Tuple[str, int]]


def check_count(name: str, value: object, minimum: int = 1) -> int:
    """``value`` if it is an int >= ``minimum`` (bool is refused: it is an int too).

    Raises:
        ConfigError: naming ``name`` and the value.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _check_seconds(name: str, value: Optional[float], *, allow_none: bool) -> None:
    if value is None:
        if not allow_none:
            raise ConfigError(f"{name} must be a number of seconds, not None")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number of seconds, got {value!r}")
    if value <= 0:
        raise ConfigError(f"{name} must be > 0 seconds, got {value!r}")


@dataclass(frozen=True)
class Timeouts:
    """How long each phase of a stream may take, in seconds (None: no limit).

    - ``connect``: TCP (and TLS) connection setup.
    - ``first_token``: request sent → first chunk. Must cover a cold model
      load, hence the generous default.
    - ``idle``: the longest gap between two chunks once streaming.
    - ``total``: the whole stream, retries included.

    Each expiry raises :class:`~streamkit.errors.StreamTimeout` with ``.phase``
    set to the field's name.
    """

    connect: Optional[float] = 5.0
    first_token: Optional[float] = 300.0
    idle: Optional[float] = 60.0
    total: Optional[float] = None

    def __post_init__(self) -> None:
        for name in ("connect", "first_token", "idle", "total"):
            _check_seconds(f"Timeouts.{name}", getattr(self, name), allow_none=True)


@dataclass(frozen=True)
class RetryPolicy:
    """When and how to retry a stream (the retry boundary is the first chunk).

    - ``attempts``: total HTTP attempts, first included (1 = never retry).
    - ``backoff_base`` / ``backoff_max``: exponential backoff with full
      jitter, ``uniform(0, min(backoff_max, backoff_base * 2**n))``.
    - ``retry_after_max``: a ``Retry-After`` up to this many seconds is
      honoured; a longer one fails at once with ``ServerBusy.retry_after`` set.
    - ``on_interrupt``: what to do when a stream is cut after its first
      chunk (reset, end of body without the done record, truncated body,
      idle timeout; never an in-band error, a protocol error or a total
      timeout), within the ``attempts`` budget:

      - ``"restart"``: if no chunk has reached the caller yet, discard the
        partial reply and send the request again from scratch, to another
        host when there is one; otherwise fail as ``"fail"`` does.
      - ``"replay"``: restart as above if no chunk has reached the caller;
        otherwise re-issue the request and continue seamlessly if the new
        text starts with what was delivered (else ``StreamDiverged``).
      - ``"fail"``: raise StreamInterrupted (or the idle StreamTimeout)
        with the partial text.
      - ``None`` (default): ``"restart"`` where nobody can see the chunks
        (``Dispatcher.map``, ``batch``), ``"fail"`` everywhere else.
    - ``retry_first_token_timeout``: also retry a first_token timeout (off
      by default: a disconnect aborts a cold model load, so retrying it could
      restart the load forever).
    - ``retry_if``: optional predicate ``(exc) -> bool`` replacing the default
      choice of retryable errors.
    - ``wait``: optional wait strategy replacing the default backoff: a
      tenacity wait object (``tenacity.wait_fixed(1)``) or any callable taking
      tenacity's ``RetryCallState`` and returning seconds.
    """

    attempts: int = 3
    backoff_base: float = 0.5
    backoff_max: float = 8.0
    retry_after_max: float = 60.0
    on_interrupt: Optional[str] = None
    retry_first_token_timeout: bool = False
    retry_if: Optional[Callable[[BaseException], bool]] = None
    wait: Optional[Callable[..., Any]] = None

    def __post_init__(self) -> None:
        check_count("RetryPolicy.attempts", self.attempts)
        for name in ("backoff_base", "backoff_max", "retry_after_max"):
            _check_seconds(f"RetryPolicy.{name}", getattr(self, name), allow_none=False)
        if self.on_interrupt is not None and self.on_interrupt not in ON_INTERRUPT_CHOICES:
            raise ConfigError(
                f"RetryPolicy.on_interrupt must be None or one of {ON_INTERRUPT_CHOICES}, "
                f"got {self.on_interrupt!r}")


class Secret:
    """A string that never shows itself in a repr, log line or error message."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


#: The environment variable holding each dialect's API key (as its own SDK reads it).
API_KEY_ENV = {"ollama": "OLLAMA_API_KEY", "openai": "OPENAI_API_KEY"}


def api_key_from_env(environ: Optional[Mapping[str, str]] = None,
                     dialect: str = "ollama") -> Optional[Secret]:
    """The dialect's API key variable (``OLLAMA_API_KEY``, or ``OPENAI_API_KEY``
    for ``"openai"``) as a Secret; None when unset or empty."""
    name = API_KEY_ENV.get(dialect, API_KEY_ENV["ollama"])
    value = (os.environ if environ is None else environ).get(name, "")
    return Secret(value) if value else None


def host_from_env(dialect: str = "ollama",
                  environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """The host to use when none is given: ``OPENAI_BASE_URL`` for the openai
    dialect (as the OpenAI SDK reads it) when set; otherwise None, which
    :func:`parse_host` turns into ``OLLAMA_HOST`` or the default."""
    if dialect != "openai":
        return None
    return (os.environ if environ is None else environ).get("OPENAI_BASE_URL") or None


def _bracket_ipv6(hostname: str) -> str:
    try:
        if isinstance(ipaddress.ip_address(hostname), ipaddress.IPv6Address):
            return f"[{hostname}]"
    except ValueError:
        pass
    return hostname


def redact_url(url: str) -> str:
    """``url`` with any userinfo (``user:password@``) replaced by ``***@``.

    For every place a URL may be printed or written: messages, logs, reports.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        authority = "***@" + authority.rsplit("@", 1)[1]
    return f"{scheme}{sep}{authority}{slash}{path}"


def parse_host(host: Optional[str] = None,
               environ: Optional[Mapping[str, str]] = None) -> str:
    """Normalise a host the way ollama-python reads ``OLLAMA_HOST``.

    ``host`` None falls back to ``OLLAMA_HOST``, then to
    ``http://127.0.0.1:11434``. The scheme defaults to http; the port to
    11434, or 80/443 when the scheme is given explicitly; an empty hostname
    means 127.0.0.1; a path is kept with its slashes trimmed; IPv6 literals
    are bracketed. A bare ``::1`` is ambiguous and rejected.

    Credentials in the URL (``http://user:password@host``) are refused, not
    used: a host is printed in messages, logs and reports, and a password
    in it would travel with it. Send credentials with ``api_key`` (Bearer)
    or ``headers`` (e.g. ``Authorization: Basic ...``), which are never
    printed.

    Raises:
        ConfigError: the host cannot be parsed, or carries credentials (names
            the value, credentials masked).
    """
    if host is None:
        host = (os.environ if environ is None else environ).get("OLLAMA_HOST", "")
    text = host
    scheme, sep, rest = text.partition("://")
    if sep:
        default_port = {"http": 80, "https": 443}.get(scheme, DEFAULT_PORT)
    else:
        scheme, rest, default_port = "http", text, DEFAULT_PORT
    try:
        parts = urlsplit(f"{scheme}://{rest}")
        port = parts.port or default_port
    except ValueError as exc:
        raise ConfigError(f"cannot parse host {redact_url(host)!r}: "
                          f"{redact_url(str(exc))}") from None  # exc may quote the password
    if "@" in parts.netloc:
        raise ConfigError(f"host {redact_url(host)!r} carries credentials (user:password@); "
                          "streamkit does not take them from a URL, which is printed in "
                          "logs and reports: pass api_key=... (sent as a Bearer token) or "
                          "headers={'Authorization': 'Basic ...'} instead")
    hostname = _bracket_ipv6(parts.hostname or "127.0.0.1")
    base = f"{scheme}://{hostname}:{port}"
    path = parts.path.strip("/")
    return f"{base}/{path}" if path else base


def dialect_base_url(base: str, dialect: str) -> str:
    """The base URL a dialect's relative paths hang off.

    The OpenAI paths (``chat/completions``...) are relative to ``.../v1``, so
    ``http://h:8080`` and ``http://h:8080/v1`` both become ``http://h:8080/v1``;
    the Ollama dialect keeps ``base`` as it is.
    """
    if dialect == "openai" and not base.endswith("/v1"):
        return base + "/v1"
    return base
