"""The chunked transfer decoder, fed at every split point."""

from __future__ import annotations

import pytest
from rawserver import chunk

from streamkit._http.chunked import Dechunker
from streamkit.errors import ProtocolError


def test_dechunker_at_every_split_point() -> None:
    payload = [b'{"a":"x"}\n', b"", b'{"b":"\xc3\xa9"}\n', b"z" * 300]
    body = b"".join(chunk(p) for p in payload if p)
    body += b"0\r\nX-Trailer: 1\r\n\r\n"
    want = b"".join(payload)
    for split in range(len(body) + 1):
        d = Dechunker()
        got = d.feed(body[:split]) + d.feed(body[split:])
        assert got == want, split
        assert d.finished
    d = Dechunker()
    got = b"".join(d.feed(body[i:i + 1]) for i in range(len(body)))
    assert got == want and d.finished


@pytest.mark.parametrize("bad", [b"zz\r\nabc\r\n", b"3\r\nabcdef\r\n", b"-1\r\n",
                                 b"1" * 9000])
def test_dechunker_rejects_bad_framing(bad: bytes) -> None:
    d = Dechunker()
    with pytest.raises(ProtocolError):
        d.feed(bad)
        d.feed(b"")  # payload before the bad part comes first, the error next


def test_dechunker_ignores_chunk_extensions() -> None:
    d = Dechunker()
    assert d.feed(b"3;name=value\r\nabc\r\n0\r\n\r\n") == b"abc"
    assert d.finished


def test_dechunker_keeps_payload_before_bad_framing() -> None:
    d = Dechunker()
    assert d.feed(chunk(b"abc") + b"zz\r\n") == b"abc"
    assert not d.finished
    with pytest.raises(ProtocolError):
        d.feed(b"")


@pytest.mark.parametrize("reads", [
    [chunk(b'{"a":1}\n'), chunk(b'{"b":2}\n'), b"0\r\n\r\n"],          # one whole chunk per read
    [b"8;ext=1\r\n", b'{"a":1}\n\r\n', chunk(b"x"), b"0\r\n\r\n"],      # extension, split chunk
    [chunk(b"a") + chunk(b"b"), chunk(b"c")[:3], chunk(b"c")[3:] + b"0\r\n\r\n"],
])
def test_one_chunk_reads_decode_like_any_other_split(reads: list) -> None:
    whole = b"".join(reads)
    one = Dechunker()
    payload = b"".join(one.feed(r) for r in reads)
    bytewise = Dechunker()
    expected = b"".join(bytewise.feed(whole[i:i + 1]) for i in range(len(whole)))
    assert payload == expected and one.finished and bytewise.finished


@pytest.mark.parametrize("bad", [b"zz\r\nabc\r\n", b"3\r\nabcd\r\n", b"-3\r\nabc\r\n"])
def test_a_bad_one_chunk_read_is_still_a_protocol_error(bad: bytes) -> None:
    d = Dechunker()
    with pytest.raises(ProtocolError):
        d.feed(bad)  # payload before the bad framing comes first, the error next
        d.feed(b"")
