"""Credentials never reach a report, a log line or an error message.

Userinfo in a host URL (``http://user:pw@host``) is refused with a
ConfigError that does not repeat the password; a key a server echoes back
in an error body is redacted before the body becomes an error.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, List

import pytest
from rawserver import RawConn, RawServer

from streamkit import Client, ResponseError
from streamkit.bench import BenchConfig
from streamkit.cli import main
from streamkit.config import parse_host, redact_url
from streamkit.dispatch import Dispatcher
from streamkit.emulator import Emulator
from streamkit.errors import ConfigError

PASSWORD = "hunter2-pw"
KEY = "sk-test-0123456789abcdef"


@pytest.mark.parametrize("host", [f"http://user:{PASSWORD}@127.0.0.1:11434",
                                  f"user:{PASSWORD}@localhost",
                                  f"https://{PASSWORD}@example.invalid/v1"])
def test_userinfo_in_a_host_is_refused_without_repeating_it(host: str) -> None:
    for make in (lambda: parse_host(host), lambda: Client(host),
                 lambda: Dispatcher(hosts=[host, "http://127.0.0.1:1"])):
        with pytest.raises(ConfigError) as info:
            make()
        assert PASSWORD not in str(info.value)
        assert "credentials" in str(info.value)


def test_redact_url() -> None:
    assert redact_url(f"http://u:{PASSWORD}@h:1/x") == "http://***@h:1/x"
    assert redact_url("http://h:1/a@b") == "http://h:1/a@b"  # '@' in the path is no userinfo
    assert redact_url(f"u:{PASSWORD}@h") == "***@h"


def test_bench_with_userinfo_writes_no_password(tmp_path: Any, capsys: Any,
                                                caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "run"
    with Emulator() as emu, caplog.at_level(logging.DEBUG):
        host = emu.url.replace("://", f"://user:{PASSWORD}@")
        code = main(["bench", "--host", host, "-m", "demo", "--requests", "1",
                     "--num-predict", "2", "--no-calibrate", "--out", str(out), "--no-plot",
                     "-q"])
    printed = capsys.readouterr()
    assert code == 2, printed
    assert PASSWORD not in printed.out + printed.err + caplog.text
    for root, _, files in os.walk(tmp_path):
        for name in files:
            with open(os.path.join(root, name), "rb") as fh:
                assert PASSWORD.encode() not in fh.read(), name


def test_bench_config_for_run_json_never_holds_userinfo() -> None:
    config = BenchConfig(model="demo", host=f"http://user:{PASSWORD}@h:1")
    assert PASSWORD not in repr(config.as_dict())
    assert config.as_dict()["host"] == "http://***@h:1"


def _echo_auth(conn: RawConn) -> None:
    headers = conn.request.headers
    message = (f"unauthorized: bad key in header {headers.get('authorization', '')} "
               f"(x-api-key {headers.get('x-api-key', '')})")
    conn.respond(401, json.dumps({"error": message}).encode(),
                 {"Content-Type": "application/json"})


def test_a_key_echoed_in_a_401_body_is_redacted(caplog: pytest.LogCaptureFixture) -> None:
    texts: List[str] = []
    with RawServer(_echo_auth) as server, caplog.at_level(logging.DEBUG), \
            Client(server.url, api_key=KEY, headers={"X-Api-Key": KEY + "-2"}) as c:
        result = c.generate("m", "hi").result(timeout=10)
        assert isinstance(result.error, ResponseError)
        texts += [str(result.error), repr(result.error), str(result.error.body)]
        with pytest.raises(ResponseError) as info:
            c.models()
        texts += [str(info.value), repr(info.value), str(info.value.body)]
        assert server.requests[0].headers["authorization"] == f"Bearer {KEY}"  # it was sent
    texts.append(caplog.text)
    assert all(KEY not in t for t in texts), [t for t in texts if KEY in t]  # KEY-2 too
    assert "unauthorized" in texts[0]  # the rest of the server's message is kept
