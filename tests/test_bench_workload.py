"""Workloads: arrival shapes and ramps, prompts sized in tokens, prompt files, replay."""

from __future__ import annotations

import json
import statistics
from typing import Any, List, Optional

import pytest

from streamkit.bench import BenchConfig, arrival_offsets, report, run_bench
from streamkit.bench.runner import plans
from streamkit.bench.workload import fit_prompt_words, prompt_size_report, read_replay
from streamkit.cli import main
from streamkit.emulator import EmulatorConfig
from streamkit.errors import ConfigError


def gaps(offsets: List[float]) -> List[float]:
    return [b - a for a, b in zip(offsets, offsets[1:])]


def cv(values: List[float]) -> float:
    return statistics.pstdev(values) / statistics.fmean(values)


def test_gamma_arrivals_keep_the_rate_and_set_the_burstiness() -> None:
    bursty = arrival_offsets(10.0, "gamma", count=4000, shape=0.25, seed=1)
    smooth = arrival_offsets(10.0, "gamma", count=4000, shape=16.0, seed=1)
    for offsets in (bursty, smooth):
        assert statistics.fmean(gaps(offsets)) == pytest.approx(0.1, rel=0.08)
    # gamma gaps have CV 1/sqrt(shape): 2 for shape 0.25, 0.25 for shape 16
    assert cv(gaps(bursty)) == pytest.approx(2.0, rel=0.15)
    assert cv(gaps(smooth)) == pytest.approx(0.25, rel=0.15)
    assert arrival_offsets(10.0, "gamma", count=50, shape=0.5, seed=3) == \
        arrival_offsets(10.0, "gamma", count=50, shape=0.5, seed=3)
    with pytest.raises(ConfigError, match="shape"):
        arrival_offsets(1.0, "gamma", count=3, shape=0.0)


def test_ramp_rises_linearly_from_the_first_rate_to_the_second() -> None:
    offsets = arrival_offsets(2.0, "constant", count=60, ramp_to=10.0)
    assert len(offsets) == 60 and offsets[0] == 0.0
    span = 2 * 60 / (2.0 + 10.0)  # the mean rate is the midpoint: 10 s
    assert offsets[-1] == pytest.approx(span, rel=0.05)
    first, last = gaps(offsets)[0], gaps(offsets)[-1]
    assert 1 / first == pytest.approx(2.0, rel=0.15) and 1 / last == pytest.approx(10.0, rel=0.1)
    # by duration: the rate reaches the end value at the end of the duration
    timed = arrival_offsets(1.0, "poisson", duration=20.0, ramp_to=5.0, seed=2)
    assert all(t < 20.0 for t in timed) and 40 <= len(timed) <= 80  # ~60 expected


def test_ramp_is_one_point_at_the_mean_rate() -> None:
    config = BenchConfig(model="m", rates=(2.0, 6.0), ramp=True, requests=20)
    (label, plan), = plans(config)
    assert label == "ramp 2->6/s" and plan.rate == 4.0 and len(plan.offsets) == 20
    with pytest.raises(ConfigError, match="--ramp"):
        BenchConfig(model="m", rates=(2.0,), ramp=True)


def test_prompt_fit_inverts_the_servers_count() -> None:
    # a server whose template adds 30 tokens and whose tokenizer gives 1.3 tokens/word
    asked: List[int] = []

    def counted(words: int) -> Optional[int]:
        asked.append(words)
        return round(30 + 1.3 * words)

    fit = fit_prompt_words(500, counted)
    assert len(asked) == 2 and fit.slope == pytest.approx(1.3, rel=0.01)
    assert 30 + 1.3 * fit.words == pytest.approx(500, abs=2)
    prompt_size_report(fit, [498, 502, None])
    assert fit.achieved_mean == 500 and fit.error_pct == 0.0
    assert "target 500" in fit.sentence and "prompt_eval_count" in fit.sentence
    blind = fit_prompt_words(64, lambda words: None)
    assert blind.words == 64 and "no usable prompt token counts" in blind.sentence


def test_input_tokens_against_the_emulator_lands_on_target(tmp_path: Any) -> None:
    emulator = EmulatorConfig(tokens_per_second=0.0)
    run = run_bench(BenchConfig(model="demo", host="builtin", emulator=emulator,
                                input_tokens=100, requests=4, num_predict=2,
                                calibrate=False, load_model=False))
    fit = run.input_tokens
    assert fit is not None and fit.achieved_mean is not None
    assert abs(fit.error_pct or 0) <= 2.0
    assert all(abs((r.prompt_eval_count or 0) - 100) <= 2 for r in run.points[0].records)
    report.write_outputs(run, str(tmp_path), plots=False)
    data = json.loads((tmp_path / "run.json").read_text())
    assert data["input_tokens"]["target"] == 100 and data["config"]["input_tokens"] == 100


def test_replay_reruns_the_recorded_schedule(tmp_path: Any) -> None:
    emulator = EmulatorConfig(tokens_per_second=0.0)
    first = run_bench(BenchConfig(model="demo", host="builtin", emulator=emulator,
                                  rates=(20.0,), arrival="poisson", requests=8, warmup=2,
                                  num_predict=2, calibrate=False, load_model=False))
    report.write_outputs(first, str(tmp_path / "a"), plots=False)
    schedule = read_replay(str(tmp_path / "a" / "requests.jsonl"))
    (label, indices, offsets), = schedule
    assert label == "rate 20/s" and indices == tuple(range(8))  # warm-up left out
    recorded = sorted((r.scheduled_ns - first.points[0].base_ns) / 1e9
                      for r in first.points[0].records if not r.warmup)
    assert list(offsets) == pytest.approx(recorded, abs=1e-5)
    again = run_bench(BenchConfig(model="demo", host="builtin", emulator=emulator,
                                  replay=schedule, num_predict=2, calibrate=False,
                                  load_model=False))
    point = again.points[0]
    assert point.summary.label == "replay rate 20/s" and point.summary.ok == 8
    replayed = sorted((r.scheduled_ns - point.base_ns) / 1e9 for r in point.records)
    assert replayed == pytest.approx(recorded, abs=1e-5)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    with pytest.raises(ConfigError, match=r"bad\.jsonl:1"):
        read_replay(str(bad))


def test_cli_prompts_gamma_and_replay_flags(tmp_path: Any, capsys: Any) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "why is the sky blue?"}\n{"prompt": "two rivers"}\n')
    out = str(tmp_path / "a")
    assert main(["bench", "--host", "builtin", "--prompts", str(prompts), "--rate", "20",
                 "--arrival", "gamma", "--gamma-shape", "0.5", "--requests", "3",
                 "--num-predict", "2", "--no-calibrate", "--no-plot", "--processes", "1",
                 "--out", out, "-q"]) == 0
    data = json.loads((tmp_path / "a" / "run.json").read_text())
    assert data["config"]["arrival"] == "gamma" and data["config"]["arrival_shape"] == 0.5
    assert data["config"]["prompt_file"] == str(prompts)
    assert main(["bench", "--host", "builtin", "--replay", f"{out}/requests.jsonl",
                 "--num-predict", "2", "--no-calibrate", "--no-plot", "-q"]) == 0
    assert "replay rate 20/s" in capsys.readouterr().out
