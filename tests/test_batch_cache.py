"""SQLiteCache: keys, round trip, concurrency, persistence."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import List

import pytest

from streamkit.batch.cache import SQLiteCache, request_key
from streamkit.errors import ConfigError, ConnectError
from streamkit.records import ChatRequest, GenerateRequest, Result, Stats, Timing


def _result(text: str = "hello", **kw: object) -> Result:
    return Result(id="x", model="m", host="http://h:1", text=text, thinking="hmm",
                  done_reason="stop", stats=Stats(eval_count=3, total_duration=10),
                  timing=Timing(started_ns=1, done_ns=2), attempts=2, **kw)  # type: ignore[arg-type]


def test_key_ignores_id_keep_alive_and_empty_options() -> None:
    a = GenerateRequest("m", "hi", id="1", keep_alive="5m")
    b = GenerateRequest("m", "hi", id="2", options={})
    assert request_key(a) == request_key(b)


def test_key_depends_on_everything_that_shapes_the_answer() -> None:
    base = GenerateRequest("m", "hi")
    variants = [
        GenerateRequest("m2", "hi"),
        GenerateRequest("m", "hi!"),
        GenerateRequest("m", "hi", system="be brief"),
        GenerateRequest("m", "hi", options={"seed": 1}),
        GenerateRequest("m", "hi", format="json"),
        GenerateRequest("m", "hi", think=True),
        GenerateRequest("m", "hi", think=False),
        ChatRequest("m", [{"role": "user", "content": "hi"}]),
    ]
    keys = {request_key(base)} | {request_key(v) for v in variants}
    assert len(keys) == len(variants) + 1


def test_key_is_independent_of_option_order() -> None:
    a = GenerateRequest("m", "hi", options={"seed": 1, "temperature": 0})
    b = GenerateRequest("m", "hi", options={"temperature": 0, "seed": 1})
    assert request_key(a) == request_key(b)


def test_round_trip(tmp_path: Path) -> None:
    request = GenerateRequest("m", "hi", id="q7")
    with SQLiteCache(str(tmp_path / "c.db")) as cache:
        assert cache.get(request) is None
        cache.put(request, _result())
        hit = cache.get(request)
    assert hit is not None
    assert (hit.id, hit.text, hit.thinking, hit.done_reason) == ("q7", "hello", "hmm", "stop")
    assert hit.stats == Stats(eval_count=3, total_duration=10)
    assert hit.cached and hit.ok and hit.attempts == 2
    assert hit.timing == Timing()  # fresh, not the stored run's


def test_failures_are_not_stored(tmp_path: Path) -> None:
    request = GenerateRequest("m", "hi")
    with SQLiteCache(str(tmp_path / "c.db")) as cache:
        cache.put(request, _result(error=ConnectError("down")))
        assert cache.get(request) is None
        assert len(cache) == 0


def test_persists_across_instances(tmp_path: Path) -> None:
    path = str(tmp_path / "c.db")
    request = ChatRequest("m", [{"role": "user", "content": "hi"}])
    with SQLiteCache(path) as cache:
        cache.put(request, _result("persisted"))
    with SQLiteCache(path) as cache:
        hit = cache.get(request)
    assert hit is not None and hit.text == "persisted"


def test_concurrent_workers(tmp_path: Path) -> None:
    path = str(tmp_path / "c.db")
    errors: List[BaseException] = []
    with SQLiteCache(path) as cache, SQLiteCache(path) as other:
        def work(n: int) -> None:
            try:
                for i in range(25):
                    request = GenerateRequest("m", f"p{n}-{i}")
                    (cache if i % 2 else other).put(request, _result(f"t{n}-{i}"))
                    hit = cache.get(request)
                    assert hit is not None and hit.text == f"t{n}-{i}"
            except BaseException as exc:  # collected and asserted below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert not errors
        assert len(cache) == 200


def test_close_is_idempotent_and_use_after_close_fails(tmp_path: Path) -> None:
    cache = SQLiteCache(str(tmp_path / "c.db"))
    cache.close()
    cache.close()
    with pytest.raises(ConfigError, match="closed"):
        cache.get(GenerateRequest("m", "hi"))


def test_unopenable_path_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot open cache"):
        SQLiteCache(str(tmp_path / "missing-dir" / "c.db"))


def test_not_a_database_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(ConfigError):
        SQLiteCache(str(path))
