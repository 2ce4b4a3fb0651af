"""A persistent response cache in SQLite (stdlib ``sqlite3`` only).

``SQLiteCache(path)`` implements :class:`streamkit.records.ResponseCache`:
pass it as ``Client(cache=...)``, ``Dispatcher(cache=...)`` or
``streamkit batch --cache PATH``. A request that was answered before is
served from the file without contacting the server.

The key is the SHA-256 of the canonical request: its kind (chat, generate
or embed) and every field that shapes the answer (model, prompt or
messages, system, options, format, think, tools, raw, images, suffix; an
embed request's input and dimensions) as JSON with sorted keys. ``id``
and ``keep_alive`` are left out (an embed request's ``truncate`` too); so are
empty/None fields, so ``options=None`` and ``options={}`` share a key.
Only successful results are stored. A hit is the stored Result with
``cached=True``, the request's id, and fresh (empty) client timing.

The model's weights are not in the request: :class:`DigestKeyedCache`
adds the model's digest (from ``/api/tags``) to the key, so answers cached
before a model was pulled again are not served for the new one.

Thread and process safety: one connection guarded by a lock (sqlite3
connections are not thread-safe), WAL journal so readers in other
processes do not block. A cache another process is writing to must not
slow a run down: after a short busy timeout a store is skipped (and a read
is a miss), logged once per cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
from dataclasses import replace
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

from ..config import HostSpec
from ..errors import ConfigError
from ..records import ChatRequest, EmbedRequest, Request, Result, Stats

__all__ = ["DigestKeyedCache", "SQLiteCache", "digest_keyed", "request_key"]

log = logging.getLogger("streamkit")

BUSY_TIMEOUT_S = 0.2  # how long a store waits for another process's write
_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    request TEXT NOT NULL,
    result TEXT NOT NULL,
    created REAL NOT NULL DEFAULT (julianday('now'))
)
"""
_KEY_FIELDS = ("model", "messages", "prompt", "system", "options", "format", "think",
               "tools", "raw", "images", "suffix", "input", "dimensions")


def _canonical(request: Union[Request, EmbedRequest]) -> Dict[str, Any]:
    values = {name: getattr(request, name, None) for name in _KEY_FIELDS}
    canonical: Dict[str, Any] = {k: v for k, v in values.items() if v not in (None, {}, [], ())}
    canonical["kind"] = "chat" if isinstance(request, ChatRequest) else \
        "embed" if isinstance(request, EmbedRequest) else "generate"
    return canonical


def request_key(request: Union[Request, EmbedRequest]) -> str:
    """The hex SHA-256 of the canonical JSON of ``request`` (see the module docstring)."""
    text = json.dumps(_canonical(request), sort_keys=True, ensure_ascii=False,
                      separators=(",", ":"), default=list)
    return hashlib.sha256(text.encode()).hexdigest()


def _result_to_json(result: Result) -> str:
    return json.dumps({
        "model": result.model, "host": result.host, "text": result.text,
        "thinking": result.thinking, "tool_calls": list(result.tool_calls),
        "done_reason": result.done_reason, "stats": result.stats.as_dict(),
        "attempts": result.attempts,
    }, ensure_ascii=False, separators=(",", ":"))


def _result_from_json(text: str, request: Request) -> Result:
    data: Mapping[str, Any] = json.loads(text)
    return Result(
        id=request.id, model=data["model"], host=data["host"], text=data["text"],
        thinking=data.get("thinking", ""), tool_calls=list(data.get("tool_calls", [])),
        done_reason=data.get("done_reason"), stats=Stats(**data.get("stats", {})),
        attempts=data.get("attempts", 0), cached=True)


class SQLiteCache:
    """Successful responses stored in an SQLite file, keyed by the canonical request.

    Thread-safe; several processes may share the file. A context manager;
    ``close()`` is idempotent, and ``get``/``put`` after it raise ConfigError.

    Raises:
        ConfigError: the file cannot be opened or is not a cache database.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.skipped = 0  # stores dropped because the database was busy
        self._told_busy = False
        try:
            self._conn: Optional[sqlite3.Connection] = sqlite3.connect(
                path, timeout=BUSY_TIMEOUT_S, check_same_thread=False, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute(_SCHEMA)
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open cache {path!r}: {exc}") from exc

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise ConfigError(f"cache {self.path!r} is closed")
        return self._conn

    def get(self, request: Request) -> Optional[Result]:
        """The stored Result for ``request`` (``cached=True``), or None.

        Blocks on the lock (and on another process's write, up to the busy
        timeout). A database error is logged and counts as a miss.
        """
        key = request_key(request)
        with self._lock:
            try:
                row = self._connection().execute(
                    "SELECT result FROM responses WHERE key = ?", (key,)).fetchone()
            except sqlite3.Error as exc:
                # A cache that cannot be read must not fail the request: it is a miss.
                self._warn(exc, "treating as a miss")
                row = None
            if row is None:
                self.misses += 1
                return None
            self.hits += 1
        return _result_from_json(row[0], request)

    def put(self, request: Request, result: Result) -> None:
        """Store a successful Result (a failed or cached one is ignored).

        Replaces an older entry. A database error is logged, not raised; a
        database locked by another process for longer than BUSY_TIMEOUT_S
        skips the store (logged once).
        """
        if result.error is not None or result.cached:
            return
        key = request_key(request)
        payload = _result_to_json(result)
        canonical = json.dumps(_canonical(request), sort_keys=True, default=list)
        with self._lock:
            try:
                self._connection().execute(
                    "INSERT OR REPLACE INTO responses (key, request, result) VALUES (?, ?, ?)",
                    (key, canonical, payload))
            except sqlite3.Error as exc:
                self.skipped += 1
                self._warn(exc, "result not cached")

    def _warn(self, exc: sqlite3.Error, outcome: str) -> None:
        """Log a database error; "busy" only the first time (it repeats for every request)."""
        if "locked" in str(exc) or "busy" in str(exc):
            if not self._told_busy:
                self._told_busy = True
                log.warning("cache %s: busy (another process is writing to it); answers "
                            "are not stored while it is", self.path)
            return
        log.warning("cache %s: %s (%s)", self.path, outcome, exc)

    def __len__(self) -> int:
        with self._lock:
            row = self._connection().execute("SELECT COUNT(*) FROM responses").fetchone()
        return int(row[0])

    def close(self) -> None:
        """Close the database; idempotent."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> SQLiteCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SQLiteCache({self.path!r})"



class DigestKeyedCache:
    """A ResponseCache whose keys also hold the model's digest.

    ``digests`` maps a model name to its digest (``name:latest`` and ``name``
    alike). A request for a model without a digest is neither served nor
    stored: an answer the cache cannot tie to the model's weights is never
    reused.
    """

    def __init__(self, inner: Any, digests: Mapping[str, str]) -> None:
        self.inner = inner
        self.digests = dict(digests)

    def _keyed(self, request: Request) -> Optional[Request]:
        digest = self.digests.get(request.model) or self.digests.get(
            _with_tag(request.model))
        if digest is None:
            return None
        keyed: Request = replace(request, model=f"{request.model}@{digest}")
        return keyed

    def get(self, request: Request) -> Optional[Result]:
        """The inner cache's answer under the digest-keyed request (None: no digest)."""
        keyed = self._keyed(request)
        if keyed is None:
            return None
        hit: Optional[Result] = self.inner.get(keyed)
        return hit

    def put(self, request: Request, result: Result) -> None:
        """Store under the digest-keyed request (nothing without a digest)."""
        keyed = self._keyed(request)
        if keyed is not None:
            self.inner.put(keyed, result)


def _with_tag(model: str) -> str:
    """Ollama's full name: ``llama3.2`` → ``llama3.2:latest``."""
    last = model.rsplit("/", 1)[-1]
    return model if ":" in last else f"{model}:latest"


def digest_keyed(cache: Any, hosts: Optional[Sequence[HostSpec]], dialect: str,
                 listed: Callable[[Optional[str]], List[Dict[str, Any]]]) -> Any:
    """``cache`` keyed by the models' digests too, asked of every host (``/api/tags``).

    ``listed(host)`` gives a host's ``/api/tags`` entries (None: the default
    host) or raises; it may block (the run's :class:`~.models.ModelCheck`
    bounds it and asks each host once). A host that does not answer is logged
    and left out. The openai dialect publishes no digest: ``cache`` is
    returned as is.
    """
    if dialect != "ollama":
        return cache
    urls: List[Optional[str]] = [h if isinstance(h, str) else h[0] for h in hosts or ()]
    digests: Dict[str, List[str]] = {}
    for host in urls or [None]:
        try:
            entries = listed(host)
        except Exception as exc:
            log.warning("cache: cannot list the models of %s (%s); the cache key uses "
                        "the other hosts' digests", host or "the default host", exc)
            continue
        for entry in entries:
            name, digest = entry.get("name") or entry.get("model"), entry.get("digest")
            if isinstance(name, str) and isinstance(digest, str):
                digests.setdefault(name, []).append(digest)
    # Several hosts may hold different builds of one name: the key holds them all.
    joined = {name: ",".join(sorted(set(found))) for name, found in digests.items()}
    return DigestKeyedCache(cache, joined)
