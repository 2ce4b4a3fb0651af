"""streamkit.config: OLLAMA_HOST parsing (ollama-python's rules), Timeouts, RetryPolicy."""

from __future__ import annotations

import sys
from typing import Any, Callable, Dict, Optional

import pytest

from streamkit.config import (
    DEFAULT_HOST,
    RetryPolicy,
    Secret,
    Timeouts,
    api_key_from_env,
    parse_host,
)
from streamkit.errors import ConfigError

# The host-parsing table of ollama-python's _parse_host, plus the
# cases of its doctest.
HOST_TABLE = [
    (None, "http://127.0.0.1:11434"),
    ("", "http://127.0.0.1:11434"),
    ("0.0.0.0", "http://0.0.0.0:11434"),
    (":8080", "http://127.0.0.1:8080"),
    ("example.com", "http://example.com:11434"),
    ("example.com:56789", "http://example.com:56789"),
    ("http://h", "http://h:80"),
    ("https://h", "https://h:443"),
    ("https://example.com:56789", "https://example.com:56789"),
    ("ollama.com", "http://ollama.com:11434"),
    ("example.com/api/", "http://example.com:11434/api"),
    ("example.com:56789/path/", "http://example.com:56789/path"),
    ("[::1]", "http://[::1]:11434"),
    ("[0001:002:003:0004::1]:56789/path", "http://[0001:002:003:0004::1]:56789/path"),
    ("https://[0001:002:003:0004::1]", "https://[0001:002:003:0004::1]:443"),
    ('"127.0.0.1"', 'http://"127.0.0.1":11434'),
    ("1.2.3.4:56789", "http://1.2.3.4:56789"),
]


@pytest.mark.parametrize(("host", "expected"), HOST_TABLE)
def test_parse_host_table(host: Optional[str], expected: str) -> None:
    assert parse_host(host, environ={}) == expected


def test_bare_ipv6_is_rejected() -> None:
    with pytest.raises(ConfigError, match="::1"):
        parse_host("::1", environ={})


def test_parse_host_reads_ollama_host_only_when_host_is_none() -> None:
    env = {"OLLAMA_HOST": "gpu-box:9000"}
    assert parse_host(None, environ=env) == "http://gpu-box:9000"
    assert parse_host("other", environ=env) == "http://other:11434"
    assert parse_host(None, environ={}) == DEFAULT_HOST


def _ollama_parse_host() -> Callable[[Optional[str]], str]:
    pytest.importorskip("ollama")
    module = sys.modules["ollama._client"]
    fn: Callable[[Optional[str]], str] = module._parse_host
    return fn


PEER_INPUTS = [h for h, _ in HOST_TABLE] + [
    "localhost", "LOCALHOST:1", "https://Example.COM/v1/", "http://h:0", "h:65535",
    "[fe80::1]:8080", "http://[::1]/x/y/", "127.0.0.1:11434/", "a.b.c/d/e",
    "::1",
]


@pytest.mark.parametrize("host", PEER_INPUTS)
def test_parse_host_matches_ollama_python(host: Optional[str]) -> None:
    """Same inputs, same outputs as the installed ollama-python (errors: both raise)."""
    theirs_fn = _ollama_parse_host()
    try:
        theirs: Any = theirs_fn(host)
    except ValueError as exc:
        theirs = type(exc)
    try:
        ours: Any = parse_host(host, environ={})
    except ConfigError:
        ours = ValueError  # ConfigError is a ValueError, as theirs is
    assert ours == theirs


@pytest.mark.parametrize("kwargs", [
    {"connect": 0}, {"first_token": -1}, {"idle": "5"}, {"total": True}, {"connect": 0.0},
])
def test_timeouts_reject_bad_values_naming_the_field(kwargs: Dict[str, Any]) -> None:
    (name,) = kwargs
    with pytest.raises(ConfigError, match=f"Timeouts.{name}"):
        Timeouts(**kwargs)


def test_timeouts_defaults_none_and_frozen() -> None:
    t = Timeouts(total=None, idle=None, connect=0.5)
    assert (t.connect, t.first_token, t.idle, t.total) == (0.5, 300.0, None, None)
    with pytest.raises(AttributeError):
        t.connect = 1  # type: ignore[misc]
    assert "connect=0.5" in repr(t)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"attempts": 0}, "attempts"),
    ({"attempts": 1.5}, "attempts"),
    ({"attempts": True}, "attempts"),
    ({"backoff_max": 0}, "backoff_max"),
    ({"backoff_base": None}, "backoff_base"),
    ({"retry_after_max": -5}, "retry_after_max"),
    ({"on_interrupt": "retry"}, "on_interrupt"),
])
def test_retry_policy_rejects_bad_values_naming_the_field(
        kwargs: Dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=f"RetryPolicy.{field}"):
        RetryPolicy(**kwargs)


def test_retry_policy_defaults() -> None:
    p = RetryPolicy()
    # None: "restart" where nobody sees chunks (map, batch), "fail" elsewhere.
    assert (p.attempts, p.backoff_max, p.retry_after_max, p.on_interrupt) == (3, 8.0, 60.0, None)
    assert not p.retry_first_token_timeout
    for mode in ("fail", "replay", "restart"):
        assert RetryPolicy(attempts=1, on_interrupt=mode).on_interrupt == mode


def test_api_key_from_env_is_a_secret() -> None:
    assert api_key_from_env({}) is None
    assert api_key_from_env({"OLLAMA_API_KEY": ""}) is None
    key = api_key_from_env({"OLLAMA_API_KEY": "sk-very-secret"})
    assert isinstance(key, Secret)
    assert key.reveal() == "sk-very-secret"
    assert "sk-very-secret" not in repr(key) and "sk-very-secret" not in str(key)
    assert f"{key}" == "Secret('***')"
