"""The Ray-free half of streamkit.ray: slot shares, results across processes, rows.

These run in the default suite (no Ray needed); tests/test_ray.py runs the
real thing on a local Ray instance.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
from typing import Any, Dict, List

import pytest

from streamkit._raywork import (
    OUTPUT_COLUMNS,
    pack,
    row_output,
    row_request,
    rows_of,
    split_count,
    split_hosts,
    unpack,
)
from streamkit.batch import BatchConfig
from streamkit.errors import Cancelled, ConfigError, ServerBusy, StreamkitError
from streamkit.records import ChatRequest, GenerateRequest, Result, Stats

DEFAULTS = BatchConfig("-", "rows.jsonl", model="demo", options={"temperature": 0})


def test_shares_add_up_and_differ_by_at_most_one() -> None:
    for total in range(1, 12):
        for actors in range(1, 6):
            shares = [split_count(total, actors, rank) for rank in range(actors)]
            assert sum(shares) == total and max(shares) - min(shares) <= 1


def test_split_hosts_per_rank_drops_empty_shares_and_keeps_bare_urls() -> None:
    hosts: List[Any] = [("http://a:1", 4), ("http://b:1", 1), "http://c:1"]
    assert split_hosts(hosts, 2, 0) == [("http://a:1", 2), ("http://b:1", 1), "http://c:1"]
    assert split_hosts(hosts, 2, 1) == [("http://a:1", 2), "http://c:1"]


def test_split_hosts_without_rank_stays_within_the_limit_or_refuses() -> None:
    assert split_hosts([("http://a:1", 5)], 2) == [("http://a:1", 2)]
    with pytest.raises(ConfigError, match="at least 3"):
        split_hosts([("http://a:1", 2)], 3)
    with pytest.raises(ConfigError, match="run fewer actors"):
        split_hosts([("http://a:1", 1)], 2, 1)
    with pytest.raises(ConfigError, match="actors must be"):
        split_hosts([("http://a:1", 1)], 0)


def test_pack_unpack_keeps_error_class_message_and_status() -> None:
    busy = ServerBusy("busy, try later", status_code=503, retry_after=2.0)
    result = Result(id="x", model="demo", host="h", text="part", stats=Stats(eval_count=3),
                    attempts=3, error=busy)
    back = unpack(pickle.loads(pickle.dumps(pack(result))))
    assert isinstance(back.error, ServerBusy) and str(back.error) == "busy, try later"
    assert back.error.status_code == 503
    assert (back.id, back.text, back.attempts, back.stats.eval_count) == ("x", "part", 3, 3)
    cancelled = unpack(pack(Result(id="y", model="demo", host="", error=Cancelled())))
    assert isinstance(cancelled.error, Cancelled)


def test_unpack_of_an_unknown_error_class_is_a_streamkit_error() -> None:
    result = Result(id="x", model="demo", host="")
    back = unpack((result, ("KeyError", "'boom'", None)))
    assert type(back.error) is StreamkitError and str(back.error) == "'boom'"


def test_row_request_uses_the_batch_line_rules_and_defaults() -> None:
    request = row_request({"id": "a", "prompt": "hi", "system": "be brief", "extra": 1}, 0,
                          DEFAULTS)
    assert isinstance(request, GenerateRequest)
    assert (request.id, request.model, request.system) == ("0", "demo", "be brief")
    assert request.options == {"temperature": 0}
    chat = row_request({"messages": [{"role": "user", "content": "hi"}], "model": "m2"}, 1,
                       DEFAULTS)
    assert isinstance(chat, ChatRequest) and chat.model == "m2"
    assert row_request({"prompt": "a", "messages": []}, 2, DEFAULTS) == \
        'give exactly one of "prompt" or "messages"'
    assert "must be true, false" in str(row_request({"prompt": "a", "think": "max"}, 3,
                                                    DEFAULTS))


def test_row_request_reads_columns_as_ray_data_hands_them() -> None:
    # A column some rows lack is None or NaN; nested values are numpy-like;
    # Arrow turns a struct's ints into floats where some rows lack the field.
    class Array(list):  # type: ignore[type-arg]
        def tolist(self) -> List[Any]:
            return list(self)

    row: Dict[str, Any] = {"prompt": None, "system": float("nan"),
                           "messages": Array([{"role": "user", "content": "hi"}]),
                           "options": {"num_predict": 3.0, "temperature": 0.5, "seed": None}}
    request = row_request(row, 7, BatchConfig("-", "rows.jsonl", model="demo"))
    assert isinstance(request, ChatRequest)
    assert request.options == {"num_predict": 3, "temperature": 0.5}
    assert list(request.messages) == [{"role": "user", "content": "hi"}]


def test_rows_of_accepts_a_dict_of_columns() -> None:
    assert rows_of({"prompt": ["a", "b"], "id": [1, 2]}) == [{"prompt": "a", "id": 1},
                                                             {"prompt": "b", "id": 2}]
    with pytest.raises(ConfigError, match="batch_format"):
        rows_of([{"prompt": "a"}])


def test_row_output_has_every_column_and_a_string_error() -> None:
    ok = row_output({"id": "a", "prompt": "p"},
                    Result(id="0", model="demo", host="h", text="t", done_reason="stop",
                           attempts=1))
    assert set(OUTPUT_COLUMNS) <= set(ok) and ok["response"] == "t" and ok["error"] is None
    failed = row_output({"prompt": "p"}, Result(id="0", model="demo", host="h",
                                                error=ServerBusy("busy", status_code=503)))
    assert failed["error"] == "ServerBusy: busy"
    invalid = row_output({"prompt": ""}, None, '"prompt" is empty')
    assert invalid["error"] == 'ConfigError: "prompt" is empty' and invalid["attempts"] == 0


def test_import_streamkit_never_imports_ray() -> None:
    code = ("import sys, streamkit, streamkit.batch, streamkit.cli; "
            "print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "False"
