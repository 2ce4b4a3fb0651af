"""LineFramer: b"\\n"-only framing, split at every byte offset, size cap, memory bound."""

from __future__ import annotations

import json
import random
import tracemalloc
from typing import Iterable, List

import pytest

from streamkit.errors import ProtocolError
from streamkit.wire.lines import DEFAULT_MAX_LINE, LineFramer

NEL = "\u0085"
LSEP = "\u2028"

# Records as Go would write them (raw NEL; U+2028 is escaped by Go but other
# servers send it raw, so both forms appear), then framed with a mix of LF,
# CRLF, blank lines and no final newline.
RECORDS = [
    {"response": "plain", "done": False},
    {"response": f"nel{NEL}inside", "done": False},
    {"response": f"line{LSEP}sep and para\u2029", "done": False},
    {"response": "multibyte é漢🙂", "done": False},
    {"response": "vt\x0b ff\x0c fs\x1c", "done": False},
    {"response": "", "done": True, "eval_count": 5},
]
ENCODED = [json.dumps(r, ensure_ascii=False).encode("utf-8") for r in RECORDS]
STREAM = (ENCODED[0] + b"\n"
          + ENCODED[1] + b"\r\n"
          + b"\n" + b"\r\n"               # blank lines, LF and CRLF
          + ENCODED[2] + b"\n"
          + ENCODED[3] + b"\r\n"
          + ENCODED[4] + b"\n\n"
          + ENCODED[5])                   # no final newline


def frame(pieces: Iterable[bytes], max_line: int = DEFAULT_MAX_LINE) -> List[bytes]:
    framer = LineFramer(max_line)
    lines: List[bytes] = []
    for piece in pieces:
        lines.extend(framer.feed(piece))
    return lines + framer.flush()


def test_whole_stream_gives_the_records() -> None:
    lines = frame([STREAM])
    assert lines == ENCODED
    assert [json.loads(line) for line in lines] == RECORDS


def test_raw_nel_and_line_separator_do_not_split() -> None:
    assert NEL.encode() in STREAM and LSEP.encode() in STREAM
    lines = frame([STREAM])
    assert json.loads(lines[1])["response"] == f"nel{NEL}inside"
    assert json.loads(lines[2])["response"].startswith(f"line{LSEP}sep")


def test_split_at_every_offset() -> None:
    for offset in range(len(STREAM) + 1):
        assert frame([STREAM[:offset], STREAM[offset:]]) == ENCODED, offset


def test_byte_by_byte() -> None:
    assert frame([STREAM[i:i + 1] for i in range(len(STREAM))]) == ENCODED


def test_random_multi_splits() -> None:
    rng = random.Random(1234)
    for _ in range(300):
        cuts = sorted(rng.sample(range(1, len(STREAM)), rng.randint(2, 12)))
        pieces = [STREAM[a:b] for a, b in zip([0, *cuts], [*cuts, len(STREAM)])]
        assert frame(pieces) == ENCODED, cuts


def test_crlf_straddling_two_reads() -> None:
    framer = LineFramer()
    assert framer.feed(b'{"a":1}\r') == []
    assert framer.feed(b'\n{"b":2}\r') == [b'{"a":1}']
    assert framer.feed(b"\n") == [b'{"b":2}']
    assert framer.flush() == []


def test_multibyte_character_split_across_reads_stays_intact() -> None:
    data = '{"t":"🙂"}\n'.encode()
    cut = data.index("🙂".encode()) + 2  # inside the 4-byte sequence
    lines = frame([data[:cut], data[cut:]])
    assert json.loads(lines[0]) == {"t": "🙂"}


def test_only_blank_lines_give_nothing() -> None:
    assert frame([b"\n\r\n\n", b"\r", b"\n"]) == []


def test_flush_returns_last_line_once_and_strips_cr() -> None:
    framer = LineFramer()
    assert framer.feed(b"abc\ndef\r") == [b"abc"]
    assert framer.flush() == [b"def"]
    assert framer.flush() == []


def test_line_exactly_at_the_cap_passes() -> None:
    assert frame([b"x" * 100 + b"\n"], max_line=100) == [b"x" * 100]
    assert frame([b"x" * 60, b"x" * 40 + b"\n"], max_line=100) == [b"x" * 100]


def test_complete_line_over_the_cap_in_one_read_fails() -> None:
    framer = LineFramer(100)
    with pytest.raises(ProtocolError, match="100-byte limit"):
        framer.feed(b"ok\n" + b"x" * 101 + b"\n")


def test_pending_line_fails_as_soon_as_it_passes_the_cap() -> None:
    framer = LineFramer(1000)
    fed = 0
    with pytest.raises(ProtocolError):
        while True:
            framer.feed(b"y" * 64)
            fed += 64
            assert framer.buffered <= 1000
    assert fed == 960  # the read that took it past 1000 bytes raised
    assert framer.buffered == 0  # what was held is dropped


def test_pending_plus_completion_over_the_cap_fails() -> None:
    framer = LineFramer(100)
    framer.feed(b"z" * 90)
    with pytest.raises(ProtocolError):
        framer.feed(b"z" * 20 + b"\n")


def test_max_line_must_be_positive() -> None:
    with pytest.raises(ValueError):
        LineFramer(0)


def test_64_mib_line_without_newline_fails_with_bounded_memory() -> None:
    """A 64 MiB line in 64 KiB reads: ProtocolError at the 16 MiB cap, peak well under 100 MB."""
    read_size = 64 * 1024
    total = 64 * 1024 * 1024
    framer = LineFramer()
    fed = 0
    tracemalloc.start()
    try:
        with pytest.raises(ProtocolError):
            while fed < total:
                framer.feed(b"q" * read_size)  # a fresh object per read, like a socket
                fed += read_size
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert fed <= DEFAULT_MAX_LINE  # it stopped at the cap, not at the end
    assert peak < 40 * 1024 * 1024, peak
