"""A webhook's delivery state in a local SQLite file: what was delivered, and the message in flight.

Contract:
- one row per webhook (table ``webhook_state``, keyed by name): the feed's ``since`` after the
  last delivered message, the newest ``updated_at`` delivered (``watermark_us``, to re-anchor
  the feed when a stored ``since`` is refused: see :mod:`.deliver`), ``anchor_us`` (the lower
  bound of a re-anchored feed), counters, the last success and the last error — and at most one
  **pending message**: its id, exact body, annotation count, the ``next_since`` it advances
  to, when it was stored and how many attempts it had;
- every change is one transaction on one row, so the file is always in a state a restart can
  continue from: :meth:`WebhookStore.put_pending` commits before the message's first attempt;
  :meth:`WebhookStore.complete` moves the pending message's ``next_since`` to ``since`` and
  clears it in the same commit (only after a 2xx); a crash between the two re-sends the message;
- WAL journal with ``synchronous=FULL``: a stored message survives a power loss too (one extra
  fsync per batch, nothing at webhook rates);
- the calls run on one thread of the store's own, off the event loop; :meth:`WebhookStore.close`
  waits for a write already started (shutdown cancels the loop, never a commit half done);
- :meth:`WebhookStore.try_lock` takes an exclusive ``flock`` on ``<file>.lock`` (released when
  the process exits, however it exits): one process delivers a webhook at a time — with
  ``serve --workers N`` the others stand by and take over when it goes. Reading the status needs
  no lock.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["Pending", "WebhookState", "WebhookStore"]

T = TypeVar("T")

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS webhook_state (
    name TEXT PRIMARY KEY,
    since TEXT,
    anchor_us INTEGER,
    watermark_us INTEGER,
    delivered_messages INTEGER NOT NULL DEFAULT 0,
    delivered_annotations INTEGER NOT NULL DEFAULT 0,
    last_success_at REAL,
    last_error TEXT,
    last_error_at REAL,
    pending_id TEXT,
    pending_body BLOB,
    pending_count INTEGER,
    pending_next_since TEXT,
    pending_watermark_us INTEGER,
    pending_since REAL,
    pending_attempts INTEGER NOT NULL DEFAULT 0,
    suspended_at REAL
)
"""
BUSY_TIMEOUT_MS = 5000


@dataclass(frozen=True, slots=True)
class Pending:
    """The message stored before its first attempt; sent as is until a 2xx."""

    id: str
    body: bytes
    count: int
    next_since: str
    watermark_us: int | None
    since: float
    """When it was stored (unix seconds)."""
    attempts: int = 0


@dataclass(frozen=True, slots=True)
class WebhookState:
    name: str
    since: str | None = None
    anchor_us: int | None = None
    watermark_us: int | None = None
    delivered_messages: int = 0
    delivered_annotations: int = 0
    last_success_at: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    pending: Pending | None = None
    suspended_at: float | None = None


class WebhookStore:
    """One webhook's row in one SQLite file (see the module docstring)."""

    def __init__(self, path: Path, name: str) -> None:
        self.path = path
        self.name = name
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"webhook-{name}")
        self._conn: sqlite3.Connection | None = None
        self._lock_fd: int | None = None

    # --- running calls on the store's thread ----------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        future = asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        # Shielded: a cancelled loop stops waiting, the commit still completes (close waits).
        return await asyncio.shield(future)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute(_SCHEMA)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute("INSERT OR IGNORE INTO webhook_state (name) VALUES (?)", (self.name,))
            self._conn = conn
        return self._conn

    def _write(self, sql: str, params: tuple[Any, ...]) -> None:
        conn = self._connection()
        with conn:  # one transaction
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(sql, (*params, self.name))

    # --- the state --------------------------------------------------------------------------------

    async def load(self) -> WebhookState:
        return await self._run(self._load)

    def _load(self) -> WebhookState:
        row = (
            self._connection()
            .execute(
                "SELECT since, anchor_us, watermark_us, delivered_messages, delivered_annotations, "
                "last_success_at, last_error, last_error_at, pending_id, pending_body, pending_count, "
                "pending_next_since, pending_watermark_us, pending_since, pending_attempts, suspended_at "
                "FROM webhook_state WHERE name = ?",
                (self.name,),
            )
            .fetchone()
        )
        (since, anchor, watermark, messages, annotations, success, error, error_at) = row[:8]
        (pid, body, count, next_since, pwatermark, psince, attempts, suspended) = row[8:]
        pending = None
        if pid is not None:
            pending = Pending(pid, bytes(body), count, next_since, pwatermark, psince, attempts)
        return WebhookState(
            self.name,
            since,
            anchor,
            watermark,
            messages,
            annotations,
            success,
            error,
            error_at,
            pending,
            suspended,
        )

    async def put_pending(self, pending: Pending) -> None:
        """Store the next message (before its first attempt)."""
        await self._run(
            self._write,
            "UPDATE webhook_state SET pending_id = ?, pending_body = ?, pending_count = ?, "
            "pending_next_since = ?, pending_watermark_us = ?, pending_since = ?, pending_attempts = 0, "
            "suspended_at = NULL WHERE name = ?",
            (
                pending.id,
                pending.body,
                pending.count,
                pending.next_since,
                pending.watermark_us,
                pending.since,
            ),
        )

    async def complete(self, at: float) -> None:
        """The pending message got a 2xx: the feed advances past it, in one commit."""
        await self._run(
            self._write,
            "UPDATE webhook_state SET since = pending_next_since, "
            "watermark_us = COALESCE(pending_watermark_us, watermark_us), "
            "delivered_messages = delivered_messages + 1, "
            "delivered_annotations = delivered_annotations + pending_count, last_success_at = ?, "
            "pending_id = NULL, pending_body = NULL, pending_count = NULL, pending_next_since = NULL, "
            "pending_watermark_us = NULL, pending_since = NULL, pending_attempts = 0, suspended_at = NULL "
            "WHERE name = ? AND pending_id IS NOT NULL",
            (at,),
        )

    async def attempt_failed(self, error: str, at: float, *, suspended: bool) -> None:
        await self._run(
            self._write,
            "UPDATE webhook_state SET pending_attempts = pending_attempts + 1, last_error = ?, "
            "last_error_at = ?, suspended_at = ? WHERE name = ?",
            (error, at, at if suspended else None),
        )

    async def poll_failed(self, error: str, at: float) -> None:
        await self._run(
            self._write,
            "UPDATE webhook_state SET last_error = ?, last_error_at = ? WHERE name = ?",
            (error, at),
        )

    async def set_since(self, since: str | None, anchor_us: int | None) -> None:
        """A caught-up poll's token, or a re-anchored feed (``since`` ``None``)."""
        await self._run(
            self._write,
            "UPDATE webhook_state SET since = ?, anchor_us = ? WHERE name = ?",
            (since, anchor_us),
        )

    # --- one deliverer per webhook --------------------------------------------------------------

    def try_lock(self) -> bool:
        """Take the delivery lock without waiting; ``False`` when another process holds it."""
        if self._lock_fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def unlock(self) -> None:
        if self._lock_fd is not None:
            fd, self._lock_fd = self._lock_fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    async def close(self) -> None:
        """Wait for a write already started, close the file, release the lock."""

        def _close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        executor = self._executor
        # A fresh executor (its thread starts on first use): the store can be used again, as an
        # app whose lifespan runs twice does, and a status read after shutdown still works.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"webhook-{self.name}")
        await asyncio.get_running_loop().run_in_executor(executor, _close)
        await asyncio.to_thread(executor.shutdown, wait=True)
        self.unlock()
