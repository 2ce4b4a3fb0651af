"""A persistent response cache in SQLite (stdlib ``sqlite3`` only).

``SQLiteCache(path)`` implements :class:`streamkit.records.ResponseCache`:
pass it as ``Client(cache=...)``, ``Dispatcher(cache=...)`` or
``streamkit batch --cache PATH``. A request that was answered before is
served from the file without contacting the server.

The key is the SHA-256 of the canonical request: its kind (chat or
generate) and every field that shapes the answer (model, prompt or
messages, system, options, format, think, tools, raw, images, suffix) as
JSON with sorted keys. ``id`` and ``keep_alive`` are left out; so are
empty/None fields, so ``options=None`` and ``options={}`` share a key.
Only successful results are stored. A hit is the stored Result with
``cached=True``, the request's id, and fresh (empty) client timing.

Thread and process safety: one connection guarded by a lock (sqlite3
connections are not thread-safe), WAL journal so readers in other
processes do not block, and a busy timeout so concurrent writers wait
rather than fail.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
from typing import Any, Dict, Mapping, Optional

from ..errors import ConfigError
from ..records import ChatRequest, Request, Result, Stats

__all__ = ["SQLiteCache", "request_key"]

log = logging.getLogger("streamkit")

BUSY_TIMEOUT_S = 30.0
_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    request TEXT NOT NULL,
    result TEXT NOT NULL,
    created REAL NOT NULL DEFAULT (julianday('now'))
)
"""
_KEY_FIELDS = ("model", "messages", "prompt", "system", "options", "format", "think",
               "tools", "raw", "images", "suffix")


def _canonical(request: Request) -> Dict[str, Any]:
    values = {name: getattr(request, name, None) for name in _KEY_FIELDS}
    canonical: Dict[str, Any] = {k: v for k, v in values.items() if v not in (None, {}, [], ())}
    canonical["kind"] = "chat" if isinstance(request, ChatRequest) else "generate"
    return canonical


def request_key(request: Request) -> str:
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
                log.warning("cache %s: read failed (%s); treating as a miss", self.path, exc)
                row = None
            if row is None:
                self.misses += 1
                return None
            self.hits += 1
        return _result_from_json(row[0], request)

    def put(self, request: Request, result: Result) -> None:
        """Store a successful Result (a failed or cached one is ignored).

        Replaces an older entry. A database error is logged, not raised.
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
                log.warning("cache %s: write failed (%s); result not cached", self.path, exc)

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

