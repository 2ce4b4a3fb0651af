"""``batch --embed`` resume with ``request_hash``: an id whose text (or model, dimensions,
options) changed is embedded again and its old line superseded, as for generation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from streamkit.batch import run_batch
from streamkit.batch.config import BatchConfig
from streamkit.batch.embed import line_key
from streamkit.batch.promptline import PromptLine
from streamkit.emulator import Emulator, EmulatorConfig, expected_embedding

DIM = 16
CONFIG = EmulatorConfig(embed_dim=DIM)
MODEL = "demo-embed"


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(CONFIG) as e:
        yield e


def _run(emu: Emulator, corpus: Path, out: Path, **options: Any) -> Any:
    values: Dict[str, Any] = {"hosts": [(emu.url, 2)], "workers": 2, "model": MODEL,
                              "embed": True, "embed_batch": 4, **options}
    return run_batch(str(corpus), str(out), **values)


def _lines(path: Path) -> List[Dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _vector(text: str) -> List[float]:
    return expected_embedding(MODEL, text, CONFIG)[0]


def _jsonl(path: Path, texts: Dict[str, str]) -> None:
    path.write_text("".join(json.dumps({"id": i, "prompt": t}) + "\n" for i, t in texts.items()))


def test_an_edited_line_is_embedded_again_and_its_old_line_superseded(
        emu: Emulator, tmp_path: Path) -> None:
    texts = {f"d{i}": f"document {i}" for i in range(10)}
    corpus, out = tmp_path / "c.jsonl", tmp_path / "v.jsonl"
    _jsonl(corpus, texts)
    assert _run(emu, corpus, out).ok == 10
    assert all(len(r["request_hash"]) == 64 for r in _lines(out))
    texts["d3"] = "an edited document"
    _jsonl(corpus, texts)
    messages: List[str] = []
    before = emu.counters()["inference"]
    summary = _run(emu, corpus, out, report=messages.append)
    assert (summary.skipped, summary.ok, summary.failed) == (9, 1, 0)
    assert emu.counters()["inference"] - before == 1
    assert any("1 prompt(s) changed" in m and "'d3'" in m for m in messages)
    records = _lines(out)
    assert sorted(r["id"] for r in records) == sorted(texts)  # every id once
    for record in records:
        assert record["embedding"] == _vector(texts[record["id"]])


def test_a_line_inserted_in_a_txt_moves_every_vector_to_its_new_text(
        emu: Emulator, tmp_path: Path) -> None:
    texts = [f"line {i} of the corpus" for i in range(9)]
    corpus, out = tmp_path / "c.txt", tmp_path / "v.jsonl"
    corpus.write_text("\n".join(texts) + "\n")
    assert _run(emu, corpus, out).ok == 9
    texts.insert(0, "a new first line")  # every id (a line number) now has another text
    corpus.write_text("\n".join(texts) + "\n")
    summary = _run(emu, corpus, out)
    assert (summary.skipped, summary.ok) == (0, 10)
    records = _lines(out)
    assert sorted(int(r["id"]) for r in records) == list(range(1, 11))
    for record in records:
        assert record["embedding"] == _vector(texts[int(record["id"]) - 1])


def test_an_unchanged_resume_sends_nothing(emu: Emulator, tmp_path: Path) -> None:
    corpus, out = tmp_path / "c.txt", tmp_path / "v.jsonl"
    corpus.write_text("".join(f"text {i}\n" for i in range(7)))
    _run(emu, corpus, out, options={"num_ctx": 2048}, embed_dimensions=8)
    written = out.read_bytes()
    before = emu.counters()["inference"]
    # truncate, the group size and the worker count do not change a vector
    summary = _run(emu, corpus, out, options={"num_ctx": 2048}, embed_dimensions=8,
                   embed_truncate=False, embed_batch=2, workers=1)
    assert (summary.skipped, summary.ok) == (7, 0)
    assert emu.counters()["inference"] == before
    assert out.read_bytes() == written


def test_records_without_request_hash_are_kept(emu: Emulator, tmp_path: Path) -> None:
    corpus, out = tmp_path / "c.txt", tmp_path / "v.jsonl"
    corpus.write_text("old one\nold two\n")
    _run(emu, corpus, out)
    older = [{k: v for k, v in r.items() if k != "request_hash"} for r in _lines(out)]
    out.write_text("".join(json.dumps(r) + "\n" for r in older))  # as an older version wrote
    corpus.write_text("new one\nnew two\n")
    before = emu.counters()["inference"]
    assert _run(emu, corpus, out).skipped == 2
    assert emu.counters()["inference"] == before
    assert _lines(out) == older


def test_npy_matrix_holds_the_new_vector_of_an_edited_line(emu: Emulator,
                                                           tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    texts = [f"row {i}" for i in range(6)]
    corpus, out = tmp_path / "c.txt", tmp_path / "v.npy"
    corpus.write_text("\n".join(texts) + "\n")
    _run(emu, corpus, out, output_format="npy")
    texts[4] = "row four, rewritten"
    corpus.write_text("\n".join(texts) + "\n")
    assert _run(emu, corpus, out, output_format="npy").ok == 1
    journal = _lines(tmp_path / "v.npy.jsonl")
    assert sorted(int(r["id"]) for r in journal) == list(range(1, 7))  # every id once
    ids = [json.loads(line) for line in (tmp_path / "v.ids.jsonl").read_text().splitlines()]
    assert ids == [str(i) for i in range(1, 7)]
    matrix = np.load(out)
    for row, text in enumerate(texts):
        assert matrix[row].tolist() == np.asarray(_vector(text), dtype=np.float32).tolist()


def test_the_hash_covers_model_text_dimensions_and_options() -> None:
    config = BatchConfig("in.txt", "out.jsonl", model=MODEL, embed=True)
    line = PromptLine(1, "1", prompt="some text")
    key = line_key(line, config)
    assert key is not None
    changed = [
        line_key(PromptLine(1, "1", prompt="other text"), config),
        line_key(PromptLine(1, "1", prompt="some text", model="other-embed"), config),
        line_key(PromptLine(1, "1", prompt="some text", options={"num_ctx": 512}), config),
        line_key(line, BatchConfig("in.txt", "out.jsonl", model=MODEL, embed=True,
                                   embed_dimensions=8)),
        line_key(line, BatchConfig("in.txt", "out.jsonl", model=MODEL, embed=True,
                                   options={"num_ctx": 1024})),
    ]
    assert key not in changed and len(set(changed)) == len(changed)
    same = BatchConfig("in.txt", "out.jsonl", model=MODEL, embed=True, embed_truncate=False,
                       embed_batch=3, workers=5)
    assert line_key(PromptLine(9, "1", prompt="some text"), same) == key
    assert line_key(PromptLine(1, "1", messages=[{"role": "user", "content": "x"}]),
                    config) is None


def test_csv_with_named_columns_supersedes_by_those_columns(emu: Emulator,
                                                            tmp_path: Path) -> None:
    corpus, out = tmp_path / "c.csv", tmp_path / "v.jsonl"
    columns = {"id_column": "key", "prompt_column": "body"}
    corpus.write_text("key,body\nk1,first text\nk2,second text\n")
    assert _run(emu, corpus, out, **columns).ok == 2
    corpus.write_text("key,body\nk1,first text\nk2,second text edited\n")
    summary = _run(emu, corpus, out, **columns)
    assert (summary.skipped, summary.ok) == (1, 1)
    records = {r["id"]: r["embedding"] for r in _lines(out)}
    assert records == {"k1": _vector("first text"), "k2": _vector("second text edited")}
