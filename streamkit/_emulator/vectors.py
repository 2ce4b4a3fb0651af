"""Deterministic embedding vectors, token counts and truncation (pure, no I/O).

A vector is a fixed unit-length *profile* (one per vector length and seed),
rotated and with some signs flipped, both chosen by a hash of (model, text,
seed). Rotating and flipping signs keep the length, so every vector has
unit length without being normalised, and its JSON text is assembled from
pieces prepared once: with a length divisible by 8, one table look-up per
8 components (a 768-dimension vector in a few microseconds, cheap enough
that the emulator's own CPU stays out of an embedding benchmark).

Components are decimals with ``DECIMALS`` places (Ollama sends float32
values, about as long). ``dimensions`` cuts a vector to its first N
components and normalises it again, as Ollama does.

Tokens are whitespace-separated words. Like Ollama with a BERT-style model,
an input may hold ``context - 2`` of them (the model adds two special
tokens), and ``prompt_eval_count`` counts the words kept plus those two.
"""

from __future__ import annotations

import base64
import hashlib
import math
import random
import struct
from functools import lru_cache
from typing import List, Optional, Sequence, Tuple

__all__ = ["DECIMALS", "InputError", "embedding_values", "fit_input", "vector_b64",
           "vector_json"]

DECIMALS = 9
SPECIAL_TOKENS = 2  # what a BERT-style tokenizer adds around each input
TOO_LONG = "the input length exceeds the context length"
NO_ROOM = "input after truncation exceeds maximum context length"
_GROUP = 8  # components per table look-up (one byte of sign bits)
_HASH_HEAD = 4  # hash bytes that choose the rotation


class InputError(Exception):
    """An input Ollama would reject (400 with this message)."""


class _Profile:
    """The profile of one (length, seed): component texts, values and tables."""

    def __init__(self, dim: int, seed: int) -> None:
        rng = random.Random(f"streamkit-embed:{dim}:{seed}")
        raw = [rng.gauss(0.0, 1.0) for _ in range(dim)]
        norm = math.sqrt(math.fsum(x * x for x in raw))
        self.dim = dim
        self.groups = -(-dim // _GROUP)
        self.pos = [f"{x / norm:.{DECIMALS}f}" for x in raw]
        self.neg = [p[1:] if p.startswith("-") else "-" + p for p in self.pos]
        self.text_table: Optional[List[List[str]]] = None
        self.f32_table: Optional[List[List[bytes]]] = None
        if dim % _GROUP == 0:
            self.text_table, self.f32_table = self._tables()

    def _tables(self) -> Tuple[List[List[str]], List[List[bytes]]]:
        texts: List[List[str]] = []
        packed: List[List[bytes]] = []
        pack = struct.Struct(f"<{_GROUP}f").pack
        for g in range(self.groups):
            base = g * _GROUP
            row_t, row_f = [], []
            for signs in range(256):
                parts = [self.neg[base + j] if signs >> j & 1 else self.pos[base + j]
                         for j in range(_GROUP)]
                row_t.append(",".join(parts))
                row_f.append(pack(*map(float, parts)))
            texts.append(row_t)
            packed.append(row_f)
        return texts, packed

    def signs_and_offset(self, model: str, text: str, seed: int) -> Tuple[bytes, int]:
        key = f"{model}\x00{seed}\x00{text}".encode("utf-8", "surrogatepass")
        digest = hashlib.shake_256(key).digest(_HASH_HEAD + self.groups)
        rotation = int.from_bytes(digest[:_HASH_HEAD], "little") % self.groups
        return digest[_HASH_HEAD:], rotation

    def texts(self, model: str, text: str, seed: int) -> List[str]:
        """Component i is ±profile[(i + 8 * rotation) % dim]; sign bit i % 8 of byte i // 8."""
        signs, rotation = self.signs_and_offset(model, text, seed)
        offset = (_GROUP * rotation) % self.dim
        pos, neg, dim = self.pos, self.neg, self.dim
        return [neg[(i + offset) % dim] if signs[i // _GROUP] >> (i % _GROUP) & 1
                else pos[(i + offset) % dim] for i in range(dim)]


@lru_cache(maxsize=8)
def _profile(dim: int, seed: int) -> _Profile:
    return _Profile(dim, seed)


def _cut(values: Sequence[float], dimensions: int) -> List[str]:
    kept = values[:dimensions]
    norm = max(math.sqrt(math.fsum(v * v for v in kept)), 1e-12)
    return [f"{v / norm:.{DECIMALS}f}" for v in kept]


def _texts(model: str, text: str, dim: int, seed: int, dimensions: int) -> List[str]:
    texts = _profile(dim, seed).texts(model, text, seed)
    if 0 < dimensions < dim:
        return _cut([float(t) for t in texts], dimensions)
    return texts


def vector_json(model: str, text: str, dim: int, seed: int, dimensions: int = 0) -> str:
    """The vector of ``text`` as the inside of a JSON array (no brackets)."""
    profile = _profile(dim, seed)
    table = profile.text_table
    if table is None or 0 < dimensions < dim:
        return ",".join(_texts(model, text, dim, seed, dimensions))
    signs, rotation = profile.signs_and_offset(model, text, seed)
    groups = profile.groups
    return ",".join([table[(g + rotation) % groups][signs[g]] for g in range(groups)])


def vector_b64(model: str, text: str, dim: int, seed: int, dimensions: int = 0) -> str:
    """The vector as little-endian float32 values in base64 (OpenAI's base64 format)."""
    profile = _profile(dim, seed)
    table = profile.f32_table
    if table is None or 0 < dimensions < dim:
        values = [float(t) for t in _texts(model, text, dim, seed, dimensions)]
        data = struct.pack(f"<{len(values)}f", *values)
    else:
        signs, rotation = profile.signs_and_offset(model, text, seed)
        groups = profile.groups
        data = b"".join([table[(g + rotation) % groups][signs[g]] for g in range(groups)])
    return base64.b64encode(data).decode("ascii")


def embedding_values(model: str, text: str, dim: int, seed: int,
                     dimensions: int = 0) -> List[float]:
    """The vector of ``text`` as a client decodes it from the JSON reply."""
    return [float(t) for t in _texts(model, text, dim, seed, dimensions)]


def fit_input(text: str, context: int, truncate: bool) -> Tuple[str, int]:
    """(the text embedded, tokens evaluated) for one input; Ollama's rules.

    ``truncate`` keeps the first ``context - 2`` words; without it a longer
    input is an error. Raises InputError with Ollama's message.
    """
    words = text.split()
    limit = context - SPECIAL_TOKENS if words else context
    if limit <= 0:
        raise InputError(NO_ROOM)
    if len(words) > limit:
        if not truncate:
            raise InputError(TOO_LONG)
        text, words = " ".join(words[:limit]), words[:limit]
    return text, len(words) + SPECIAL_TOKENS
