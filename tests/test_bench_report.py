"""report.html, the chart rules and `bench compare` refusing unlike runs (synthetic runs)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import replace
from typing import Any, List

import pytest
from test_bench_metrics import make_run

from streamkit.bench import plot, report
from streamkit.bench.compare import mismatches
from streamkit.bench.metrics import Slo
from streamkit.cli import main
from streamkit.errors import ConfigError

ENV = {"cpu": "Test CPU", "cpu_count": 2, "memory_bytes": 2**33, "os": "TestOS",
       "python": "CPython 3.x", "streamkit": "0.0", "server_version": "0.12.6",
       "host": "http://127.0.0.1:11434", "dialect": "ollama", "model": "m"}


def run_with_env(**config_changes: Any) -> Any:
    run = make_run()
    run.environment = dict(ENV)
    run.started_at = "2026-01-02T03:04:05+0000"
    if config_changes:
        run.config = replace(run.config, **config_changes)
    return run


def test_report_html_is_self_contained_with_metadata_and_charts(tmp_path: Any) -> None:
    pytest.importorskip("matplotlib")
    report.write_outputs(run_with_env(slo=Slo(ttft=310.0)), str(tmp_path))
    text = (tmp_path / "report.html").read_text(encoding="utf-8")
    # nothing fetched from anywhere: no script, no stylesheet link, no remote src
    assert "<script" not in text and "<link" not in text
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
    assert text.count('src="data:image/png;base64,') == 5  # load, knee, ECDF, 2 timelines
    for needle in ("version 0.12.6", "Test CPU", "2026-01-02T03:04:05", "ollama",
                   "client floor", "TTFT p90", "concurrency 4", "example warning"):
        assert needle in text


def test_report_html_without_matplotlib_keeps_tables_and_says_why(
        tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(plot, "available", lambda: False)
    paths = report.write_outputs(run_with_env(), str(tmp_path))
    assert not [p for p in paths if p.endswith(".png")]
    text = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "<img" not in text and "streamkit[plot]" in text
    assert "concurrency 1" in text and "TTFT p99" in text


def _summaries() -> List[Any]:
    return [p.summary.as_dict() for p in make_run().points]


def test_load_chart_log2_axis_ticks_at_tested_points_and_distinct_percentiles() -> None:
    pytest.importorskip("matplotlib")
    summaries = _summaries()
    fig = plot.load_figure([("run", summaries)], {"ttft": 310.0})
    ttft = fig.axes[0]
    assert ttft.get_xscale() == "log"
    assert list(ttft.get_xticks()) == [1.0, 4.0]
    assert [t.get_text() for t in ttft.get_xticklabels()] == ["1", "4"]
    styles = {line.get_label(): (line.get_color(), line.get_marker(), line.get_linestyle())
              for line in ttft.get_lines()}
    assert {"p50", "p90", "p99", "SLO ttft 310 ms"} <= set(styles)
    assert len({styles[p] for p in ("p50", "p90", "p99")}) == 3
    # whole numbers only on the concurrency-reached axis
    ticks = fig.axes[5].get_yticks()
    assert all(float(t).is_integer() for t in ticks)


def test_open_loop_runs_are_drawn_on_a_rate_axis() -> None:
    pytest.importorskip("matplotlib")
    summaries = [dict(s, mode="open", rate=r, concurrency=None, label=f"rate {r:g}/s")
                 for s, r in zip(_summaries(), (0.5, 4.0))]
    fig = plot.load_figure([("run", summaries)], {})
    assert fig.axes[0].get_xlabel() == "offered rate (requests/s)"
    assert list(fig.axes[0].get_xticks()) == [0.5, 4.0]


def test_compare_names_unlike_settings(tmp_path: Any) -> None:
    a, b, c = (str(tmp_path / n) for n in "abc")
    report.write_outputs(run_with_env(), a, plots=False)
    report.write_outputs(run_with_env(num_predict=16), b, plots=False)
    report.write_outputs(run_with_env(rates=(1.0,)), c, plots=False)
    runs = [(n, report.load_run(p)) for n, p in (("a", a), ("b", b), ("c", c))]
    assert mismatches(runs[:1] * 2) == []
    problems = mismatches(runs)
    assert any(p.startswith("output token budget") and "b: 16" in p for p in problems)
    assert any(p.startswith("load shape") for p in problems)


def test_cli_compare_refuses_unlike_runs_unless_forced(tmp_path: Any, capsys: Any) -> None:
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    report.write_outputs(run_with_env(), a, plots=False)
    report.write_outputs(run_with_env(num_predict=16), b, plots=False)
    assert main(["bench", "compare", a, b]) == 2
    assert "num_predict" in capsys.readouterr().err
    assert main(["bench", "compare", a, b, "--force"]) == 0
    assert "WARNING: not like for like: output token budget" in capsys.readouterr().out


def test_compare_chart_refuses_mixed_load_shapes(tmp_path: Any) -> None:
    pytest.importorskip("matplotlib")
    closed = _summaries()
    opened = [dict(s, mode="open", rate=1.0) for s in closed]
    with pytest.raises(ConfigError, match="one axis"):
        plot.render_compare([("a", closed), ("b", opened)], str(tmp_path / "c.png"))


CHROMIUM = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser",
                                                         "google-chrome")) if p), None)


@pytest.mark.skipif(CHROMIUM is None, reason="needs a chromium binary (apt-get install "
                    "chromium) to load report.html headless")
def test_report_html_renders_in_headless_chromium_offline(tmp_path: Any) -> None:
    pytest.importorskip("matplotlib")
    assert CHROMIUM is not None
    out = tmp_path / "out"
    report.write_outputs(run_with_env(slo=Slo(ttft=310.0)), str(out))
    shot = tmp_path / "report.png"
    # every host name resolves to nothing: a report that needed the network would break
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
           "--disable-background-networking", "--disable-component-update", "--no-first-run",
           f"--user-data-dir={tmp_path / 'profile'}", "--host-resolver-rules=MAP * ~NOTFOUND",
           "--window-size=1400,2400", f"--screenshot={shot}", (out / "report.html").as_uri()]
    done = subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    with open(shot, "rb") as fh:
        data = fh.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    # a blank page compresses to a few kB; the tables and charts do not
    assert len(data) > 50_000
    keep = os.environ.get("STREAMKIT_KEEP_SCREENSHOT")
    if keep:
        shutil.copyfile(shot, keep)


def test_tick_labels_of_bunched_probe_rates_do_not_overlap() -> None:
    probes = [2.0, 4.0, 6.0, 7.0, 7.25, 7.5, 8.0]
    assert plot.spaced_ticks(probes, log=True) == [2.0, 4.0, 6.0, 7.0, 8.0]
    assert plot.spaced_ticks([1.0, 2.0, 4.0, 8.0, 16.0], log=True) == [1.0, 2.0, 4.0, 8.0, 16.0]
