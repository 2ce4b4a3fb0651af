"""``bench --embed`` (``streamkit.bench.embed``, ``streamkit.cli.bench_embed``)."""

from __future__ import annotations

import importlib
from typing import Any, Iterator, List

import pytest

from streamkit.bench import embed as bench_embed
from streamkit.bench.embed import (
    OLLAMA_MISSING,
    EmbedBenchConfig,
    format_embed,
    generated_inputs,
    run_embed_bench,
)
from streamkit.cli import main
from streamkit.emulator import Emulator, EmulatorConfig
from streamkit.errors import ConfigError


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(EmulatorConfig(embed_dim=32)) as e:
        yield e


def test_both_clients_are_measured_on_the_same_groups(emu: Emulator) -> None:
    config = EmbedBenchConfig(url=emu.url, model="demo-embed",
                              inputs=generated_inputs(10, 6), group=4, requests=3, rounds=2)
    before = emu.counters()
    rows = run_embed_bench(config)
    # The emulator counts an embed's inputs just after sending its reply.
    want = before["embed_inputs"] + 4 * (2 + 2 + 12)
    assert emu.wait_until(lambda c: c["embed_inputs"] >= want, timeout=5.0), emu.counters()
    after = emu.counters()
    assert [row.client for row in rows] == ["streamkit", "ollama"]
    for row in rows:
        assert len(row.latencies_s) == 6 and row.inputs_per_s > 0
        assert row.latency_ms(0.5) <= row.latency_ms(0.95)
    # 2 (the vector check) + 2 x 1 warm-up + 2 clients x 2 rounds x 3 requests
    assert after["inference"] - before["inference"] == 2 + 2 + 12
    assert after["embed_inputs"] - before["embed_inputs"] == 4 * (2 + 2 + 12)
    table = format_embed(rows, config)
    assert "streamkit / ollama inputs/s" in table and "group=4" in table


def test_groups_take_the_inputs_round_robin() -> None:
    config = EmbedBenchConfig(url="http://x", model="m", inputs=("a", "b", "c"), group=2,
                              requests=2)
    assert config.groups() == [["a", "b"], ["c", "a"]]
    with pytest.raises(ConfigError, match="group must be an int >= 1"):
        EmbedBenchConfig(url="http://x", model="m", inputs=("a",), group=0)


def test_without_the_ollama_package_streamkit_alone_is_measured(
        emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.import_module

    def no_ollama(name: str, *args: Any) -> Any:
        if name == "ollama":
            raise ImportError("No module named 'ollama'")
        return real(name, *args)

    monkeypatch.setattr(bench_embed.importlib, "import_module", no_ollama)
    notes: List[str] = []
    config = EmbedBenchConfig(url=emu.url, model="demo-embed", inputs=("x",), group=1,
                              requests=1, rounds=1)
    rows = run_embed_bench(config, notes.append)
    assert [row.client for row in rows] == ["streamkit"]
    assert OLLAMA_MISSING in notes and "pip install ollama" in OLLAMA_MISSING
    assert "streamkit / ollama" not in format_embed(rows, config)


def test_cli_bench_embed_with_builtin(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", "--embed", "--host", "builtin", "--embed-batch", "8",
                 "--requests", "2", "-q"])
    out = capsys.readouterr().out
    assert code == 0
    assert "model=demo-embed group=8 requests=2" in out
    assert "\nstreamkit  " in out and "\nollama  " in out and "streamkit / ollama" in out
