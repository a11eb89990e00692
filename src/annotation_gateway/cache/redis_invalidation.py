"""The shared cache tier's invalidations across processes: sending them, remembering those Redis
could not take, and listening to the others'.

Contract (the *Writes* paragraph of :mod:`.redis_tier`): :meth:`Invalidations.send` runs the
``INVALIDATE`` script — the source's generation bumped, the subjects' hashes and the
identifier-only one deleted, ``(origin, source, subjects)`` published on the channel — in one
call bounded by the link's timeout. What could not be sent is :meth:`~Invalidations.remember`\\ ed
(up to ``MAX_PENDING_SUBJECTS`` subjects per source; beyond, the whole source is dropped with
``SCAN`` + ``UNLINK`` instead) and :meth:`~Invalidations.replay`\\ ed before the process uses Redis
again. The subscription (started by the first use) listens for good: it reconnects after each
failure, at once for one that had worked (a restarted Redis), else after the link's backoff; after
a reconnection the listener hears ``(None, None)`` (drop everything: messages may have been
missed); its own messages are ignored, malformed ones logged and dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable

import orjson
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from annotation_gateway.cache.redis_link import RedisLink
from annotation_gateway.cache.redis_scripts import INVALIDATE, TierKeys

__all__ = ["MAX_PENDING_SUBJECTS", "Invalidations", "Listener"]

log = logging.getLogger(__name__)

MAX_PENDING_SUBJECTS = 10_000
"""Failed invalidations remembered per source; beyond, the whole source is dropped on recovery."""
SUBSCRIBE_POLL_S = 1.0

Listener = Callable[[str | None, list[str] | None], None]
"""Told ``(source, subject ids)`` another process invalidated, or ``(None, None)``: forget all."""


class Invalidations:
    """This process's side of the invalidation channel (module docstring)."""

    def __init__(self, link: RedisLink, keys: TierKeys) -> None:
        self._link = link
        self._keys = keys
        self._script = link.client.register_script(INVALIDATE)
        self._origin = secrets.token_hex(8)
        self._pending: dict[str, set[str] | None] = {}
        self._listener: Listener | None = None
        self._subscriber: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self.received = 0
        """Other processes' invalidations applied here (tests wait on it)."""

    def set_listener(self, listener: Listener) -> None:
        """Who is told about other processes' invalidations (the federation)."""
        self._listener = listener

    # --- sending ------------------------------------------------------------------------------

    async def send(self, source: str, subjects: list[str]) -> None:
        """Invalidate ``subjects`` of ``source`` everywhere (raises what Redis raised)."""
        keys = [
            self._keys.generation(source),
            self._keys.subject(source, None),
            *(self._keys.subject(source, s) for s in subjects),
        ]
        message = orjson.dumps({"o": self._origin, "s": source, "k": subjects})
        async with asyncio.timeout(self._link.timeout):
            await self._script(keys=keys, args=[self._keys.channel, message])

    @property
    def pending(self) -> bool:
        """Whether invalidations wait for Redis to answer again."""
        return bool(self._pending)

    def remember(self, source: str, subjects: list[str]) -> None:
        """Keep an invalidation Redis could not take, for :meth:`replay`."""
        if source in self._pending and self._pending[source] is None:
            return
        pending = self._pending.setdefault(source, set())
        assert pending is not None
        pending.update(subjects)
        if len(pending) > MAX_PENDING_SUBJECTS:
            self._pending[source] = None  # too many to list: drop the whole source on recovery

    async def replay(self) -> None:
        """Send what was remembered, oldest source first (raises what Redis raised; what was
        not sent stays remembered)."""
        while self._pending:
            source, subjects = next(iter(self._pending.items()))
            if subjects is None:
                await self._drop_source(source)
            else:
                await self.send(source, sorted(subjects))
            del self._pending[source]

    async def _drop_source(self, source: str) -> None:
        """Every answer of ``source`` gone (SCAN + UNLINK, each call bounded by the timeout)."""
        client, timeout = self._link.client, self._link.timeout
        async with asyncio.timeout(timeout):
            await client.incr(self._keys.generation(source))
        cursor = 0
        while True:
            async with asyncio.timeout(timeout):
                cursor, batch = await client.scan(
                    cursor, match=self._keys.answers_pattern(source), count=1000
                )
                if batch:
                    await client.unlink(*batch)
            if cursor == 0:
                break
        message = orjson.dumps({"o": self._origin, "s": source, "k": None})
        async with asyncio.timeout(timeout):
            await client.publish(self._keys.channel, message)

    # --- listening ----------------------------------------------------------------------------

    def ensure_subscriber(self) -> None:
        """Start listening (once; never after the link is closed)."""
        if self._subscriber is None and not self._link.closed:
            self._subscriber = asyncio.get_running_loop().create_task(
                self._subscribe(), name="cache-redis-subscriber"
            )

    async def wait_subscribed(self) -> None:
        """Until this process listens to invalidations (tests, start-up)."""
        self.ensure_subscriber()
        await self._subscribed.wait()

    async def _subscribe(self) -> None:
        """Listen to invalidations for good: reconnect after each failure (with the backoff); after
        a reconnection drop the whole local tier, since messages may have been missed."""
        link = self._link
        missed = False
        retry_at_once = False
        while not link.closed:
            pubsub: PubSub = link.client.pubsub(ignore_subscribe_messages=True)
            try:
                async with asyncio.timeout(link.timeout):
                    await pubsub.subscribe(self._keys.channel)
                self._subscribed.set()
                if missed and self._listener is not None:
                    self._listener(None, None)
                missed = False
                retry_at_once = True
                while True:
                    message = await pubsub.get_message(timeout=SUBSCRIBE_POLL_S)
                    if message is not None:
                        self._on_message(message.get("data"))
            except (RedisError, OSError) as exc:
                self._subscribed.clear()
                missed = True
                if retry_at_once:
                    # A subscription that worked broke (a restarted Redis): one new attempt at
                    # once; only a failing one is Redis failing.
                    retry_at_once = False
                    continue
                link.failed("subscribe", exc)
                await asyncio.sleep(link.backoff_s)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()

    def _on_message(self, data: object) -> None:
        if not isinstance(data, bytes) or self._listener is None:
            return
        try:
            message = orjson.loads(data)
            origin, source, subjects = message["o"], message["s"], message["k"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("ignoring a malformed cache invalidation message")
            return
        if origin == self._origin or not isinstance(source, str):
            return
        if subjects is None:
            self._listener(source, None)
        elif isinstance(subjects, list) and all(isinstance(s, str) for s in subjects):
            self._listener(source, subjects)
        else:
            return
        self.received += 1

    async def aclose(self) -> None:
        """Stop listening."""
        if self._subscriber is not None:
            self._subscriber.cancel()
            await asyncio.gather(self._subscriber, return_exceptions=True)
