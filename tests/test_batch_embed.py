"""``batch --embed`` (``streamkit.batch.embed``, ``.matrix``): grouping, splitting, resume,
the npy and Parquet outputs, and the command line with ``--host builtin``."""

from __future__ import annotations

import importlib.util
import json
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from streamkit.batch import embed as batch_embed
from streamkit.batch import run_batch
from streamkit.batch.embed import encode_embed, splittable
from streamkit.batch.records import encode
from streamkit.cli import main
from streamkit.client import Client
from streamkit.emulator import Emulator, EmulatorConfig, expected_embedding
from streamkit.errors import (
    Cancelled,
    ConfigError,
    ConnectError,
    ModelNotFound,
    ProtocolError,
    ResponseError,
    ServerBusy,
    StreamTimeout,
)

DIM = 16
CONFIG = EmulatorConfig(embed_dim=DIM)
MODEL = "demo-embed"
TOO_LONG = " ".join(["word"] * 5000)  # over the emulator's 4096-token context


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(CONFIG) as e:
        yield e


def _corpus(path: Path, n: int, poisoned: int = -1) -> List[str]:
    texts = [TOO_LONG if i == poisoned else f"document {i} about topic {i % 7}"
             for i in range(n)]
    path.write_text("\n".join(texts) + "\n")
    return texts


def _records(path: Path) -> Dict[str, Dict[str, Any]]:
    return {r["id"]: r for r in map(json.loads, path.read_text().splitlines())}


def _run(emu: Emulator, corpus: Path, out: Path, **options: Any) -> Any:
    values: Dict[str, Any] = {"hosts": [(emu.url, 2)], "workers": 2, "model": MODEL,
                              "embed": True, "embed_batch": 8, **options}
    return run_batch(str(corpus), str(out), **values)


def test_vectors_equal_client_embed_and_the_emulator(emu: Emulator, tmp_path: Path) -> None:
    texts = _corpus(tmp_path / "c.txt", 50)
    before = emu.counters()["inference"]
    summary = _run(emu, tmp_path / "c.txt", tmp_path / "v.jsonl")
    assert (summary.ok, summary.failed, summary.exit_code) == (50, 0, 0)
    assert emu.counters()["inference"] - before == 7  # ceil(50 / 8) requests
    records = _records(tmp_path / "v.jsonl")
    assert sorted(records, key=int) == [str(i) for i in range(1, 51)]  # line numbers
    with Client(emu.url) as client:
        direct = client.embed(MODEL, texts).vectors
    for i, text in enumerate(texts):
        record = records[str(i + 1)]
        assert record["embedding"] == direct[i]
        assert [record["embedding"]] == expected_embedding(MODEL, text, CONFIG)
        assert record["model"] == MODEL and record["group"] in (8, 2)


def test_a_poisoned_line_fails_alone(emu: Emulator, tmp_path: Path) -> None:
    texts = _corpus(tmp_path / "c.txt", 40, poisoned=13)
    before = emu.counters()["inference"]
    summary = _run(emu, tmp_path / "c.txt", tmp_path / "v.jsonl", embed_batch=16,
                   embed_truncate=False)
    assert (summary.ok, summary.failed) == (39, 1)
    errors = [json.loads(line) for line in (tmp_path / "v.errors.jsonl").read_text().splitlines()]
    assert [(e["id"], e["line"], e["status_code"]) for e in errors] == [("14", 14, 400)]
    assert "context length" in errors[0]["message"]
    records = _records(tmp_path / "v.jsonl")
    assert "14" not in records and len(records) == 39
    for i, text in enumerate(texts):
        if i != 13:
            assert [records[str(i + 1)]["embedding"]] == expected_embedding(MODEL, text, CONFIG)
    # 3 groups; the bad one of 16 is halved down to the bad line: 2 requests a level.
    assert emu.counters()["inference"] - before == 3 + 2 * 4


def test_without_no_truncate_a_long_line_is_cut_not_failed(emu: Emulator,
                                                          tmp_path: Path) -> None:
    _corpus(tmp_path / "c.txt", 4, poisoned=2)
    summary = _run(emu, tmp_path / "c.txt", tmp_path / "v.jsonl")
    assert (summary.ok, summary.failed) == (4, 0)
    record = _records(tmp_path / "v.jsonl")["3"]
    assert [record["embedding"]] == expected_embedding(MODEL, TOO_LONG, CONFIG)


def test_errors_that_no_input_causes_fail_the_group_without_splitting(
        emu: Emulator, tmp_path: Path) -> None:
    _corpus(tmp_path / "c.txt", 16)
    before = emu.counters()["inference"]
    summary = _run(emu, tmp_path / "c.txt", tmp_path / "v.jsonl", model="demo")  # cannot embed
    assert (summary.ok, summary.failed) == (0, 16)
    assert emu.counters()["inference"] - before == 2


def test_resume_embeds_only_the_lines_not_done(emu: Emulator, tmp_path: Path) -> None:
    texts = _corpus(tmp_path / "c.txt", 30)
    out = tmp_path / "v.jsonl"
    first = tmp_path / "first.txt"
    first.write_text("\n".join(texts[:20]) + "\n")  # the same ids (line numbers) for 1..20
    assert _run(emu, first, out).ok == 20
    before = emu.counters()["inference"]
    summary = _run(emu, tmp_path / "c.txt", out)
    assert (summary.skipped, summary.ok) == (20, 10)
    assert emu.counters()["inference"] - before == 2  # lines 21..30 in groups of 8
    records = _records(out)
    assert len(records) == 30 and len(out.read_text().splitlines()) == 30


def test_a_stopped_run_writes_whole_groups_and_resumes(tmp_path: Path) -> None:
    texts = _corpus(tmp_path / "c.txt", 64)
    out = tmp_path / "v.jsonl"
    stop = threading.Event()
    slow = EmulatorConfig(embed_dim=DIM, embed_request_cost=0.2)
    with Emulator(slow) as e:
        def stop_after_a_written_group() -> None:
            # the server's "completed" comes before the client has written the
            # group: wait for the group's lines in the output instead
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not stop.wait(0.01):
                if out.exists() and out.read_bytes().count(b"\n") >= 8:
                    break
            stop.set()

        waiter = threading.Thread(target=stop_after_a_written_group)
        waiter.start()
        summary = _run(e, tmp_path / "c.txt", out, stop=stop)
        waiter.join()
        assert summary.interrupted and 8 <= summary.ok < 64
        assert summary.ok + summary.not_run == 64
        again = _run(e, tmp_path / "c.txt", out)
    assert again.ok == 64 - summary.ok and again.exit_code == 0
    records = _records(out)
    for i, text in enumerate(texts):
        assert [records[str(i + 1)]["embedding"]] == expected_embedding(MODEL, text, slow)


def test_messages_lines_fail_with_a_clear_error(emu: Emulator, tmp_path: Path) -> None:
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"id": "t", "prompt": "text"}\n'
                      '{"id": "m", "messages": [{"role": "user", "content": "hi"}]}\n')
    summary = _run(emu, corpus, tmp_path / "v.jsonl")
    assert (summary.ok, summary.failed) == (1, 1)
    error = json.loads((tmp_path / "v.errors.jsonl").read_text())
    assert error["id"] == "m" and "cannot be embedded" in error["message"]


def test_npy_output_is_the_matrix_in_input_order(emu: Emulator, tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    texts = _corpus(tmp_path / "c.txt", 20, poisoned=5)
    out = tmp_path / "v.npy"
    summary = _run(emu, tmp_path / "c.txt", out, output_format="npy", embed_truncate=False,
                   workers=3, hosts=[(emu.url, 3)])
    assert summary.output == str(out) and summary.failed == 1
    assert summary.errors == str(tmp_path / "v.npy.errors.jsonl")
    ids = [json.loads(line) for line in (tmp_path / "v.ids.jsonl").read_text().splitlines()]
    assert ids == [str(i + 1) for i in range(20) if i != 5]
    matrix = np.load(out)
    assert matrix.dtype == np.float32 and matrix.shape == (19, DIM)
    for row, record_id in enumerate(ids):
        want = expected_embedding(MODEL, texts[int(record_id) - 1], CONFIG)[0]
        assert matrix[row].tolist() == np.asarray(want, dtype=np.float32).tolist()
    # The journal is what resume reads: a rerun cutting long lines completes the matrix.
    again = _run(emu, tmp_path / "c.txt", out, output_format="npy")
    assert (again.skipped, again.ok) == (19, 1)
    assert np.load(out).shape == (20, DIM)
    assert len((tmp_path / "v.ids.jsonl").read_text().splitlines()) == 20
    assert not list(tmp_path.glob("*.tmp-*"))


def test_parquet_needs_pyarrow(emu: Emulator, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    _corpus(tmp_path / "c.txt", 3)
    real = importlib.util.find_spec
    monkeypatch.setattr(batch_embed.importlib.util, "find_spec",
                        lambda name, *a: None if name == "pyarrow" else real(name, *a))
    before = emu.counters()["requests"]
    with pytest.raises(ConfigError, match="pip install pyarrow"):
        _run(emu, tmp_path / "c.txt", tmp_path / "v.parquet", output_format="parquet")
    assert emu.counters()["requests"] == before


def test_parquet_output(emu: Emulator, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    texts = _corpus(tmp_path / "c.txt", 10)
    _run(emu, tmp_path / "c.txt", tmp_path / "v.parquet", output_format="parquet")
    table = pq.read_table(tmp_path / "v.parquet").to_pydict()
    assert table["id"] == [str(i + 1) for i in range(10)]
    assert len(table["embedding"][3]) == DIM and len(texts) == 10


def test_option_checks_across_fields(emu: Emulator, tmp_path: Path) -> None:
    _corpus(tmp_path / "c.txt", 2)
    with pytest.raises(ConfigError, match="add --embed"):
        run_batch(str(tmp_path / "c.txt"), str(tmp_path / "v.npy"), model=MODEL,
                  output_format="npy")
    with pytest.raises(ConfigError, match="--system do"):
        _run(emu, tmp_path / "c.txt", tmp_path / "v.jsonl", system="be brief")
    with pytest.raises(ConfigError, match="embed_batch must be an int >= 1"):
        _run(emu, tmp_path / "c.txt", tmp_path / "v.jsonl", embed_batch=0)


@pytest.mark.parametrize(("error", "split"), [
    (ResponseError("input too long", status_code=400), True),
    (ResponseError("runner crashed", status_code=500), True),
    (ProtocolError("reply too large"), True),
    (ResponseError("cannot embed", status_code=501), False),
    (ModelNotFound("no model", model="m"), False),
    (ServerBusy("busy", status_code=503), False),
    (StreamTimeout("slow", phase="first_token"), False),
    (ConnectError("refused"), False),
    (Cancelled("stop"), False),
])
def test_only_errors_an_input_may_cause_split_a_group(error: BaseException,
                                                       split: bool) -> None:
    assert splittable(error) is split


def test_encode_embed_reads_back_as_encode() -> None:
    record = {"id": 'a"é', "model": "m", "embedding": [0.1, -2.5e-07, 1.0, 1 / 3],
              "group": 2, "timing": {"total_ms": 1.5}}
    assert json.loads(encode_embed(record)) == json.loads(encode(record)) == record
    nan = {"id": "n", "embedding": [float("nan")]}
    assert encode_embed(nan) == encode(nan)


def test_cli_builtin_embeds_with_demo_embed(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    texts = _corpus(tmp_path / "c.txt", 70)
    out = tmp_path / "v.jsonl"
    code = main(["batch", str(tmp_path / "c.txt"), "--embed", "-o", str(out), "--host",
                 "builtin", "--embed-batch", "32", "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert "done: 70 ok, 0 failed" in capsys.readouterr().err
    records = _records(out)
    assert {r["group"] for r in records.values()} == {32, 6}
    default = EmulatorConfig()
    assert [records["70"]["embedding"]] == expected_embedding(MODEL, texts[69], default)
