"""The vectors of an embed run as one matrix: ``.npy`` (+ ids) or Parquet, from the journal.

The JSONL journal is the run's record of what is done (resume reads it);
the matrix is derived from it at the end of a run, rows in input order,
holding every line the journal has. A rerun that completes failed lines
rewrites it. Files are written to a temporary name and renamed into
place, so a crash while writing leaves the previous matrix (or none).

- ``npy``: a float32 ``(rows, dimensions)`` array in OUT (written through a
  memory map, so the whole matrix is never in memory twice), and the ids,
  one JSON string a line, in ``OUT.ids.jsonl`` (``vectors.npy`` →
  ``vectors.ids.jsonl``): row i is the id on line i.
- ``parquet``: one row per line with columns ``id`` (string) and
  ``embedding`` (list of float32).

numpy and pyarrow are imported here only (optional; the run checks for
them before its first request).
"""

from __future__ import annotations

import importlib
import json
import os
from typing import Any, Dict, Generator, Iterable, List, Mapping, Tuple

from .. import _json
from ..errors import ConfigError

__all__ = ["ids_path", "write_matrix"]

PARQUET_ROWS = 1024  # rows per Parquet row group written at once


def ids_path(output: str) -> str:
    """``vectors.npy`` → ``vectors.ids.jsonl``: the ids of a ``.npy`` matrix's rows."""
    stem = output[: -len(".npy")] if output.endswith(".npy") else output
    return stem + ".ids.jsonl"


def write_matrix(fmt: str, journal: str, output: str, order: Iterable[str]) -> None:
    """Write the journal's vectors as ``fmt`` (``npy`` or ``parquet``) into ``output``.

    ``order`` yields the input's ids in input order; ids in the journal that
    it does not yield are left out.

    Raises:
        ConfigError: the journal cannot be read, its vectors differ in length
            (npy only), or the output cannot be written.
    """
    offsets, dim = _index(journal)
    rows = [record_id for record_id in order if record_id in offsets]
    dim = len(_vectors_of(journal, rows[:1], offsets)) if rows else dim
    try:
        if fmt == "npy":
            _write_npy(journal, output, rows, offsets, dim)
        else:
            _write_parquet(journal, output, rows, offsets)
    except OSError as exc:
        raise ConfigError(f"cannot write {output!r}: {exc.strerror}") from exc


def _vectors_of(journal: str, rows: List[str], offsets: Mapping[str, int]) -> List[float]:
    """The vector of the first id of ``rows``."""
    vectors = _vectors(journal, rows, offsets)
    try:
        return next(vectors)
    finally:
        vectors.close()


def _index(journal: str) -> Tuple[Dict[str, int], int]:
    """(id → byte offset of its record, the length of the first vector)."""
    offsets: Dict[str, int] = {}
    dim = 0
    try:
        with open(journal, "rb") as handle:
            offset = 0
            for raw in handle:
                record = _json.loads(raw)
                record_id = record["id"]
                if record_id not in offsets:
                    offsets[record_id] = offset
                    dim = dim or len(record["embedding"])
                offset += len(raw)
    except FileNotFoundError:
        return {}, 0
    except OSError as exc:
        raise ConfigError(f"cannot read {journal!r}: {exc.strerror}") from exc
    return offsets, dim


def _vectors(journal: str, rows: List[str],
             offsets: Mapping[str, int]) -> Generator[List[float], None, None]:
    """The vector of each id of ``rows``, in that order (one seek each)."""
    with open(journal, "rb") as handle:
        for record_id in rows:
            handle.seek(offsets[record_id])
            vector: List[float] = _json.loads(handle.readline())["embedding"]
            yield vector


def _write_npy(journal: str, output: str, rows: List[str], offsets: Mapping[str, int],
               dim: int) -> None:
    np: Any = importlib.import_module("numpy")
    tmp = f"{output}.tmp-{os.getpid()}.npy"
    matrix = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32,
                                       shape=(len(rows), dim))
    try:
        for row, vector in enumerate(_vectors(journal, rows, offsets)):
            if len(vector) != dim:
                raise ConfigError(f"{rows[row]!r} has a vector of {len(vector)} numbers, the "
                                  f"first one {dim}: an npy matrix needs one length (one "
                                  "model and --dimensions); use --output-format parquet")
            matrix[row] = vector
        matrix.flush()
    except BaseException:
        del matrix
        os.remove(tmp)
        raise
    del matrix  # closes the memory map before the rename
    ids_tmp = f"{ids_path(output)}.tmp-{os.getpid()}"
    with open(ids_tmp, "w", encoding="utf-8") as ids:
        for record_id in rows:
            ids.write(json.dumps(record_id, ensure_ascii=False) + "\n")
    os.replace(tmp, output)
    os.replace(ids_tmp, ids_path(output))


def _write_parquet(journal: str, output: str, rows: List[str],
                   offsets: Mapping[str, int]) -> None:
    pa: Any = importlib.import_module("pyarrow")
    pq: Any = importlib.import_module("pyarrow.parquet")
    schema = pa.schema([("id", pa.string()), ("embedding", pa.list_(pa.float32()))])
    tmp = f"{output}.tmp-{os.getpid()}"
    vectors = _vectors(journal, rows, offsets)
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            for start in range(0, len(rows), PARQUET_ROWS):
                ids = rows[start:start + PARQUET_ROWS]
                batch = [next(vectors) for _ in ids]
                writer.write_table(pa.table({"id": ids, "embedding": batch}, schema=schema))
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    finally:
        vectors.close()
    os.replace(tmp, output)
