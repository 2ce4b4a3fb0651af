"""Dispatcher with EmbedRequests: submit, map (alone and mixed with chat), events, routing."""

from __future__ import annotations

from typing import Iterator, List

import pytest

from streamkit import Cancelled, ModelNotFound
from streamkit.dispatch import Dispatcher
from streamkit.emulator import Emulator, EmulatorConfig, expected_embedding
from streamkit.records import EmbedRequest, EmbedResult, GenerateRequest, Result

DIM = 16
CONFIG = EmulatorConfig(embed_dim=DIM)


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(CONFIG) as e:
        yield e


def _groups(n: int, size: int) -> List[List[str]]:
    texts = [f"document number {i}" for i in range(n)]
    return [texts[i:i + size] for i in range(0, n, size)]


def test_map_yields_one_embed_result_per_request(emu: Emulator) -> None:
    groups = _groups(20, 4)
    with Dispatcher(host=emu.url, workers=3) as d:
        results = list(d.map((EmbedRequest("demo-embed", g) for g in groups), ordered=True))
    assert [r.id for r in results] == [str(i) for i in range(len(groups))]
    for result, group in zip(results, groups):
        assert isinstance(result, EmbedResult) and result.ok
        assert result.vectors == expected_embedding("demo-embed", group, CONFIG)
        assert result.host == emu.url


def test_chat_and_embed_requests_mix_in_one_map(emu: Emulator) -> None:
    requests = [GenerateRequest("demo", "hello", id="gen"),
                EmbedRequest("demo-embed", "hello", id="emb")]
    with Dispatcher(host=emu.url, workers=2) as d:
        results = {r.id: r for r in d.map(requests)}
    assert isinstance(results["gen"], Result) and results["gen"].text
    assert isinstance(results["emb"], EmbedResult)
    assert results["emb"].vectors == expected_embedding("demo-embed", "hello", CONFIG)


def test_map_raises_a_failed_embed_unless_return_exceptions(emu: Emulator) -> None:
    bad = [EmbedRequest("demo-embed", "a"), EmbedRequest("no-such-model", "b")]
    with Dispatcher(host=emu.url, workers=2) as d:
        with pytest.raises(ModelNotFound):
            list(d.map(bad))
        failed = [r for r in d.map(bad, return_exceptions=True) if not r.ok]
    assert [r.id for r in failed] == ["1"]
    assert isinstance(failed[0].error, ModelNotFound)


def test_submit_returns_a_call_with_a_result(emu: Emulator) -> None:
    with Dispatcher(host=emu.url, workers=1) as d:
        call = d.submit(EmbedRequest("demo-embed", ["x", "y"], id="c1"))
        result = call.result(timeout=10)
        assert call.done and call.host == emu.url and call.id == "c1"
    assert result.vectors == expected_embedding("demo-embed", ["x", "y"], CONFIG)
    assert call.cancel() is False  # already ended


def test_a_call_cancelled_before_it_starts_ends_with_cancelled(emu: Emulator) -> None:
    slow = EmulatorConfig(embed_dim=DIM, embed_request_cost=0.5)
    with Emulator(slow) as e, Dispatcher(host=e.url, workers=1) as d:
        first = d.submit(EmbedRequest("demo-embed", "first"))
        queued = d.submit(EmbedRequest("demo-embed", "second"))
        assert e.wait_until(lambda c: c["inference"] >= 1, timeout=5), e.counters()
        assert queued.cancel() is True   # still queued behind ``first`` on the one worker
        assert first.cancel() is True    # running: its socket is shut
        assert isinstance(first.result(timeout=10).error, Cancelled)
        assert isinstance(queued.result(timeout=10).error, Cancelled)
        assert e.counters()["inference"] == 1  # the queued one never reached the server
        # The server saw the running one go away and did not finish it.
        assert e.wait_until(lambda c: c["disconnects"] >= 1, timeout=5), e.counters()
        assert e.counters()["completed"] == 0


def test_events_yield_only_the_terminal_result_for_an_embed(emu: Emulator) -> None:
    with Dispatcher(host=emu.url, workers=2) as d:
        events = list(d.events([EmbedRequest("demo-embed", "one", id="e")]))
    assert len(events) == 1
    request_id, result = events[0]
    assert request_id == "e" and isinstance(result, EmbedResult) and result.ok


def test_embed_requests_are_routed_over_the_hosts() -> None:
    slow = EmulatorConfig(embed_dim=DIM, embed_request_cost=0.05)
    with Emulator(slow) as a, Emulator(slow) as b:
        with Dispatcher(hosts=[(a.url, 1), (b.url, 1)], workers=2) as d:
            results = list(d.map(EmbedRequest("demo-embed", f"t{i}") for i in range(8)))
        assert {r.host for r in results} == {a.url, b.url}
        # Inference is counted when a request arrives, before its reply.
        assert a.counters()["inference"] + b.counters()["inference"] == 8
