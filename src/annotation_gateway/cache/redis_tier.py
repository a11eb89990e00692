r"""The shared cache tier in Redis, behind each process's local :class:`AnnotationCache` (SPEC §9).

Contract
--------
*When.* ``[cache] backend = "redis"``: the URL is read from the variable ``redis_url_env`` names
(``GATEWAY_REDIS_URL``; it may hold a password, so it is never logged, shown in ``/readyz`` or
put in a metric label: :func:`redact` is what logs show). Each process keeps its
:class:`~annotation_gateway.cache.AnnotationCache` as a local tier whose ttl is
``min(ttl_s, local_ttl_s)``; its flights ask this tier (:meth:`RedisTier.fill`) instead of the
source. The client is redis-py's asyncio API with the hiredis parser; no Redis Cluster (the
scripts touch several keys), a single primary (or a proxy in front of one) is what is supported.

*Where.* This module reads and stores (:class:`RedisTier`, the facade the local tier asks);
:mod:`.redis_link` holds the client, the bound on each call and the backoff;
:mod:`.redis_invalidation` sends, remembers and listens to invalidations; :mod:`.redis_scripts`
names the keys and holds the Lua scripts.

*Keys.* ``{prefix}:v2:{source}:s:{subject id}`` (``…:i`` for the identifier-only answer) is a
hash: field = the filter key's hash (blake2b of its canonical JSON), value = the answer. So
invalidating a subject is one ``DEL`` for every filter variant, as in the local tier. A hash's
expiry is ``max(ttl_s, max_stale_s)`` from its last store; a value's own ``stored_at`` says
whether it is fresh (younger than ``ttl_s``) or only usable on error (younger than the
expiry). More than ``MAX_VARIANTS`` filter variants of one subject drop the hash first.
``{prefix}:v2:{source}:gen`` is the source's write generation; ``…:lock:{filter}:{subjects}``
the single-flight locks; ``{prefix}:v2:inval`` the invalidation channel. ``v2`` is the value
format's version: a gateway writing another format uses other keys.

*Values*: :mod:`annotation_gateway.cache.codec` writes and reads them (never pickle); a value
that does not decode is a miss (counted ``invalid``), never an error.

*One round trip per lookup.* A Lua script reads the generation and the subjects' values and, when
one is missing or not fresh, takes the lock of (source, filter key, those subjects) with ``SET NX
PX`` in the same call. Only fresh values come back: one kept for stale-on-error is read again only
when the upstream call fails (a miss does not carry it over the wire), and one the process still
holds in its local tier — the same header length and CRC-32 as its copy — comes back as its
20-byte head only (its date may be newer), neither sent nor decoded again. Likewise an answer
fetched again and unchanged is stored by re-dating the value in Redis, not sent whole (and not at
all by a refresh if the copy the process holds is less than half a ttl old — which that refresh
tells by comparing the records, :func:`~annotation_gateway.records.same_documents`, without
encoding them). The lookups of
every source a request asks in the same turn of the event loop go out as one pipeline (one
round trip and one connection for the request, not one per source). A polled query whose merged
result expired is first *confirmed* (:meth:`RedisTier.confirm`, from the federation): the
lookups of all its sources, each with the versions held, in that one round trip, and no flight
per source when every value comes back as a head (a Redis hit, two sources, in-process: ~570 →
~350 µs of CPU). A source not confirmed (changed, missing, old) hands that lookup — and the lock
it took — to its read, which makes no lookup of its own; a lookup no read uses frees its lock at
once (:meth:`RedisTier.release`). The holder
of the lock fetches and stores through a second script, which also frees the lock and refuses to
store when the generation moved since the lookup (a write happened meanwhile: read-your-write).
Another process that finds the lock held polls (2 ms doubling to 25 ms) until the values appear,
the lock is free (it then takes it), or ``redis_lock_wait_s`` passed (it then fetches itself); if
its own call fails it may serve stale like any failed fetch. Misses that differ in subjects take
different locks and may both fetch the subjects they share. A failed holder stores nothing and
frees the lock, so the waiters fetch (a dead vendor is asked by each process, and each process's
breaker opens). A refresh (``Cache-Control: no-cache``) reads nothing, so it makes no lookup: it
stores with the last generation Redis told this process, and a store refused because that moved
tells the process the new one. Values are dated by the wall clock of the process that fetched
them: clock skew between hosts shifts their freshness by as much.

*Writes.* :meth:`RedisTier.invalidate` runs one script: ``INCR`` the source's generation,
``DEL`` the written subjects' hashes and the identifier-only one, ``PUBLISH`` (source, subjects)
on the channel. Every process subscribes and drops those subjects from its local tier (and the
federation its merged results). A read through Redis that starts after the write returned sees
the write. Worst cases: a process that holds the old answer in its local tier and has not read
the message yet (microseconds on one host; longer if the message is lost while its subscription
reconnects) serves it until its local copy expires, at most ``local_ttl_s`` after it was read
from Redis (and never past the answer's ``ttl_s``); after a resubscription a process drops its
whole local tier, since it may have missed messages. A write whose invalidation cannot reach
Redis (degraded) is remembered (up to ``MAX_PENDING_SUBJECTS`` subjects per source, beyond
which the source's keys are deleted) and replayed before this process uses Redis again;
meanwhile the other processes may serve the old answer from Redis, up to its ``ttl_s``.

*Failures.* Redis down, hung or slow (every call is bounded by ``redis_timeout_s`` and a
timeout is not retried) or restarted empty (a broken connection is retried once, at once, on a
new one): a failed call counts an error, marks the tier degraded and the flight simply calls
the source (the local tier keeps working, with its short ttl). While degraded no call is made
for ``redis_retry_s`` (doubling per failed trial, up to 30 s; calls that were under
way when Redis failed do not double it), then one trial call decides; the subscription
reconnects on its own with the same backoff. A restarted Redis is only misses (redis-py
reloads the scripts). So Redis never causes a 5xx; ``/readyz`` shows the tier ``ok`` or
``degraded`` but stays ready (the gateway still answers, with more vendor traffic: taking it out
of rotation would not bring Redis back), and :meth:`RedisTier.status` pings Redis unless the
tier is in its backoff. ``redis_timeout_s`` counts this process's own event-loop delays too: set
much lower, an overloaded gateway would give up on Redis exactly when it helps most.

*Not shared.* Circuit breakers stay per process: each process sees its own connections to a
vendor, and one process's network trouble must not stop the others.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import SecretStr
from redis.exceptions import NoScriptError, RedisError

from annotation_gateway.cache import redis_scripts as scripts
from annotation_gateway.cache.codec import HEAD, SAME, decode, encode, stored_at_of
from annotation_gateway.cache.redis_invalidation import Invalidations, Listener
from annotation_gateway.cache.redis_link import RedisLink, redact
from annotation_gateway.cache.tier import (
    Confirm,
    FetchParts,
    FilterKey,
    Known,
    Prefetched,
    Slot,
    TierEntry,
    TierFill,
)
from annotation_gateway.providers.config import read_secret
from annotation_gateway.records import Record, same_documents
from annotation_gateway.resilience import Clock
from annotation_gateway.settings import CacheConfig

__all__ = [
    "RedisTier",
    "SharedCacheOutcome",
    "TierObserver",
    "redact",
]

log = logging.getLogger(__name__)

MAX_VARIANTS = 64
"""Filter variants kept per (source, subject) hash before it is dropped and started again."""
POLL_FIRST_S = 0.002
POLL_MAX_S = 0.025
NEVER_FRESH = 1e300

SharedCacheOutcome = Literal["hit", "miss", "invalid", "wait", "bypass"]
"""Per subject looked up: fresh in Redis, not (or too old), undecodable; per fill: waited for
another process's call, or Redis skipped (degraded). (The same list as the federation
observer's, which this module does not import.)"""


class TierObserver(Protocol):
    """The tier's metric hooks (the federation's :class:`~.federation.observer.BoundObserver`)."""

    def on_shared_cache(self, source: str, result: SharedCacheOutcome, count: int) -> None: ...

    def on_redis_error(self, operation: str) -> None: ...

    def on_redis_state(self, up: bool) -> None: ...


class _NullTierObserver:
    def on_shared_cache(self, source: str, result: SharedCacheOutcome, count: int) -> None:
        return None

    def on_redis_error(self, operation: str) -> None:
        return None

    def on_redis_state(self, up: bool) -> None:
        return None


_Writes = tuple[bytes, str | None, str, str]
"""How to store a fetched answer: (generation read before the call, lock key or None, lock token,
hash field)."""

_Lookup = tuple[list[str], list[Any], "asyncio.Future[Any]"]
"""One lookup waiting to be sent: its keys, its arguments, and where its reply goes."""


@dataclass(slots=True, eq=False)
class _Looked(Prefetched):
    """A lookup :meth:`RedisTier.confirm` made that did not confirm everything: the reply, and
    the lock token it was made with (the lock may be ours), for the fill of the same slots."""

    key: tuple[str, str, tuple[Slot, ...]]
    """(source, hash field, slots): the fill it stands for."""
    lock_key: str
    token: str
    versions: list[bytes]
    reply: Any
    used: bool = False


def _confirmed(
    slots: list[Slot], values: list[Any], known: Known[Record], now: float
) -> dict[Slot, TierEntry[Record]] | None:
    """The entries of ``slots`` when every value is the head of the answer ``known`` names (fresh,
    unchanged: the lookup sends nothing else), else ``None``."""
    entries: dict[Slot, TierEntry[Record]] = {}
    for slot, value in zip(slots, values, strict=True):
        if not isinstance(value, bytes) or len(value) != HEAD.size or value[SAME] != known[slot][0][SAME]:
            return None
        try:
            stored_at = stored_at_of(value)
        except ValueError:
            return None
        entries[slot] = TierEntry(known[slot][1], max(now - stored_at, 0.0), value)
    return entries


class RedisTier:
    """The shared tier of the answer cache (module docstring), for compact records."""

    def __init__(
        self,
        url: str | SecretStr,
        config: CacheConfig,
        *,
        clock: Clock = time.monotonic,
        wall: Clock = time.time,
        observer: TierObserver | None = None,
    ) -> None:
        """``clock`` (monotonic) times the backoff; ``wall`` (epoch seconds, shared by every
        process) dates the values. Connecting is lazy: nothing is sent before the first use."""
        self._observer: TierObserver = observer if observer is not None else _NullTierObserver()
        self._link = RedisLink(
            url,
            config,
            clock=clock,
            on_error=self._observer.on_redis_error,
            on_state=self._observer.on_redis_state,
        )
        self.target = self._link.target
        self._keys = scripts.TierKeys(config.redis_key_prefix)
        self._invalidations = Invalidations(self._link, self._keys)
        self._ttl = config.ttl_s
        self._keep_ms = max(1, round(max(config.ttl_s, config.max_stale_s) * 1000))
        self._lock_wait = config.redis_lock_wait_s
        self._lock_ms = max(1, round(config.redis_lock_wait_s * 1000))
        self._wall = wall
        self._lookup = self._link.client.register_script(scripts.LOOKUP)
        self._store = self._link.client.register_script(scripts.STORE)
        self._generations: dict[str, bytes] = {}
        """The last generation of each source Redis told this process (a refresh stores with it
        without a lookup first: a write since makes Redis refuse the store, as with a lookup)."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._batch: list[_Lookup] | None = None
        """Lookups waiting for the end of this turn of the event loop (:meth:`_look_up`)."""
        self.lookup_batches = 0
        """Lookup batches sent: one round trip each (plus one per lookup when a restarted Redis
        has to be given the script again). Tests count them."""

    @classmethod
    def from_config(
        cls,
        config: CacheConfig,
        *,
        environ: Mapping[str, str] | None = None,
        clock: Clock = time.monotonic,
        wall: Clock = time.time,
        observer: TierObserver | None = None,
    ) -> RedisTier:
        """The tier for ``[cache]``, its URL from the variable ``redis_url_env`` names
        (``ConfigError`` when it is unset or empty)."""
        url = read_secret(config.redis_url_env, key="cache.redis_url_env", environ=environ)
        assert url is not None  # redis_url_env always names a variable
        log.info("shared cache tier in Redis at %s", redact(url.get_secret_value()))
        return cls(url, config, clock=clock, wall=wall, observer=observer)

    @property
    def ttl_s(self) -> float:
        return self._ttl

    @property
    def up(self) -> bool:
        """False while degraded (the last call failed and no call succeeded since)."""
        return self._link.up

    @property
    def invalidations_received(self) -> int:
        """Other processes' invalidations applied here (tests wait on it)."""
        return self._invalidations.received

    def set_listener(self, listener: Listener) -> None:
        """Who is told about other processes' invalidations (the federation)."""
        self._invalidations.set_listener(listener)

    async def wait_subscribed(self) -> None:
        """Until this process listens to invalidations (tests, start-up)."""
        await self._invalidations.wait_subscribed()

    async def _usable(self) -> bool:
        """Whether to call Redis now; first replays invalidations that failed before."""
        self._invalidations.ensure_subscriber()
        if not self._link.allowed():
            return False
        if self._invalidations.pending:
            try:
                await self._invalidations.replay()  # each of its calls is bounded
            except (RedisError, OSError) as exc:
                self._link.failed("invalidate", exc)
                return False
        return True

    # --- reading ----------------------------------------------------------------------------------

    async def fill(
        self,
        source: str,
        fkey: FilterKey,
        slots: list[Slot],
        fetch_parts: FetchParts[Record],
        *,
        read: bool,
        store: bool,
        known: Known[Record] | None = None,
        prefetched: Prefetched | None = None,
    ) -> TierFill[Record]:
        """See :meth:`annotation_gateway.cache.SharedTier.fill` and the module docstring."""
        looked = prefetched if isinstance(prefetched, _Looked) else None
        try:
            return await self._fill(
                source, fkey, slots, fetch_parts, read=read, store=store, known=known or {}, looked=looked
            )
        except Exception as exc:
            # Not a Redis failure (those are handled where they happen) nor the source's (those
            # come back in the fill): a bug here must not fail the request. The upstream call
            # was not made or its answer was lost: make it.
            log.exception("shared cache tier failed unexpectedly; fetching without it")
            self._link.failed("internal", exc)
            return await self._fetch(source, slots, fetch_parts, {}, {})
        finally:
            if looked is not None and not looked.used:
                self.release(looked)

    async def _fill(
        self,
        source: str,
        fkey: FilterKey,
        slots: list[Slot],
        fetch_parts: FetchParts[Record],
        *,
        read: bool,
        store: bool,
        known: Known[Record],
        looked: _Looked | None = None,
    ) -> TierFill[Record]:
        if not await self._usable():
            self._observer.on_shared_cache(source, "bypass", 1)
            return await self._fetch(source, slots, fetch_parts, {}, {})
        field = self._keys.field(fkey)
        gen_key = self._keys.generation(source)
        found: dict[Slot, TierEntry[Record]] = {}
        usable: dict[Slot, bytes | None] = {}
        missing = list(slots)
        known_generation = self._generations.get(source)
        if not read and store and known_generation is not None:
            # A refresh (no-cache) reads nothing, so it needs no lookup: it stores with the last
            # generation Redis told this process (if that moved, Redis refuses the store and says
            # the new one). What Redis holds is read only if the upstream call fails. Saves one
            # round trip (~150 µs of CPU with redis-py asyncio) per source and refresh.
            usable = dict.fromkeys(slots)
            refresh_writes: _Writes = (known_generation, None, "", field)
            return await self._fetch(
                source,
                missing,
                fetch_parts,
                found,
                usable,
                writes=refresh_writes,
                field=field,
                known=known,
                refresh=True,
            )
        token = secrets.token_hex(8) if read and store else ""
        if looked is not None:
            versions = [known[slot][0] if slot in known else b"" for slot in slots]
            if token and looked.key == (source, field, tuple(slots)) and looked.versions == versions:
                token = looked.token  # its lookup stands for this one's first (the lock ours if taken)
            else:
                self.release(looked)  # before this fill's own lookup, which wants the same lock
                looked = None
        # Without a token no lock is taken: the gen key stands in for the lock's key slot.
        lock_key = self._keys.lock(source, field, slots) if token else gen_key
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._lock_wait
        pause = POLL_FIRST_S
        waited = False
        generation: bytes | None = None
        holding = False
        while True:
            keys = [gen_key, lock_key, *(self._keys.subject(source, slot) for slot in missing)]
            # Lua's tonumber() reads no "inf": a date no value has means "nothing is fresh".
            fresh_after = self._wall() - self._ttl if read else NEVER_FRESH
            try:
                if looked is not None:
                    looked.used = True
                    reply, looked = looked.reply, None
                else:
                    versions = [known[slot][0] if slot in known else b"" for slot in missing]
                    async with asyncio.timeout(self._link.timeout):
                        reply = await self._look_up(
                            keys, [field, repr(fresh_after), token, self._lock_ms, *versions]
                        )
            except (RedisError, OSError) as exc:
                self._link.failed("read", exc)
                generation, holding = None, False  # nothing to store into a failing Redis
                break
            self._link.succeeded()
            generation, state = reply[0], reply[1]
            self._generations[source] = generation
            holding = state == scripts.TAKEN
            missing = self._sort(source, missing, reply[2:], read, found, usable, known, count=not waited)
            if not missing:
                if waited:
                    self._observer.on_shared_cache(source, "wait", 1)
                return TierFill(found, upstream=waited)
            if holding or not token or state in (scripts.ALL_FRESH, scripts.FREE):
                break  # ours to fetch (an undecodable "fresh" value is fetched without the lock)
            if loop.time() >= deadline:
                break
            waited = True
            await asyncio.sleep(pause)
            pause = min(pause * 2, POLL_MAX_S)
        if waited:
            self._observer.on_shared_cache(source, "wait", 1)
        writes = (
            (generation, lock_key if holding else None, token if holding else "", field)
            if store and generation is not None
            else None
        )
        return await self._fetch(
            source, missing, fetch_parts, found, usable, writes=writes, field=field, known=known
        )

    async def _look_up(self, keys: list[str], args: list[Any]) -> Any:
        """The lookup script's reply for ``keys``/``args``. Lookups asked in the same turn of the
        event loop — every source of one request — go out together as one pipeline: one round
        trip and one connection instead of one each."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if self._batch is None:
            self._batch = []
            loop.call_soon(self._send_batch)
        self._batch.append((keys, args, future))
        return await future

    def _send_batch(self) -> None:
        batch, self._batch = self._batch or [], None
        task = asyncio.get_running_loop().create_task(self._run_batch(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_batch(self, batch: list[_Lookup]) -> None:
        """Send ``batch`` (bounded by the tier's timeout) and settle each lookup's future: with
        its reply, or with the error the round trip raised."""
        replies: list[Any]
        try:
            async with asyncio.timeout(self._link.timeout):
                replies = await self._send([(keys, args) for keys, args, _ in batch])
        except asyncio.CancelledError:
            for _, _, future in batch:
                future.cancel()
            raise
        except Exception as exc:
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, _, future), reply in zip(batch, replies, strict=True):
            if future.done():
                continue  # its caller gave up (its own timeout)
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def _send(self, lookups: list[tuple[list[str], list[Any]]]) -> list[Any]:
        """The lookup script's replies for ``lookups`` (keys, args), in one round trip (an error
        reply comes back as its exception, in its place)."""
        self.lookup_batches += 1
        if len(lookups) == 1:
            keys, args = lookups[0]
            return [await self._lookup(keys=keys, args=args)]
        # Raw EVALSHAs: a pipeline holding the Script object would first send SCRIPT EXISTS on
        # every execute (one more round trip each time).
        async with self._link.client.pipeline(transaction=False) as pipe:
            for keys, args in lookups:
                pipe.evalsha(self._lookup.sha, len(keys), *keys, *args)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        for i, reply in enumerate(replies):
            if isinstance(reply, NoScriptError):  # a restarted Redis forgot it: load it, ask again
                keys, args = lookups[i]
                replies[i] = await self._lookup(keys=keys, args=args)
        return replies

    async def confirm(
        self, asks: Sequence[Confirm[Record]]
    ) -> list[dict[Slot, TierEntry[Record]] | Prefetched] | None:
        """See :meth:`annotation_gateway.cache.SharedTier.confirm`. Every ask is the lookup its
        fill would make (with a lock token: a subject missing or old in Redis takes the lock,
        as a fill's first lookup does), all of them in one round trip; an ask whose every value
        comes back as the head of the version given is confirmed, dated by those heads."""
        if not await self._usable():
            return None
        fresh_after = self._wall() - self._ttl
        lookups: list[tuple[list[str], list[Any]]] = []
        fields: list[str] = []
        for source, fkey, slots, known in asks:
            field = self._keys.field(fkey)
            fields.append(field)
            keys = [
                self._keys.generation(source),
                self._keys.lock(source, field, slots),
                *(self._keys.subject(source, s) for s in slots),
            ]
            token = secrets.token_hex(8)
            lookups.append(
                (keys, [field, repr(fresh_after), token, self._lock_ms, *(known[s][0] for s in slots)])
            )
        try:
            async with asyncio.timeout(self._link.timeout):
                replies = await self._send(lookups)
        except (RedisError, OSError) as exc:
            self._link.failed("read", exc)
            return None
        except Exception as exc:  # not Redis's failure: a bug here must not fail the request
            log.exception("shared cache tier failed unexpectedly; reading without it")
            self._link.failed("internal", exc)
            return None
        self._link.succeeded()
        looks = [
            _Looked((ask[0], field, tuple(ask[2])), keys[1], args[2], args[4:], reply)
            for ask, field, (keys, args), reply in zip(asks, fields, lookups, replies, strict=True)
        ]
        errors = [reply for reply in replies if isinstance(reply, Exception)]
        if errors:
            for look in looks:
                if not isinstance(look.reply, Exception):
                    self.release(look)
            self._link.failed("read", errors[0])
            return None
        now = self._wall()
        out: list[dict[Slot, TierEntry[Record]] | Prefetched] = []
        for (source, _, slots, known), look in zip(asks, looks, strict=True):
            self._generations[source] = look.reply[0]
            entries = _confirmed(slots, look.reply[2:], known, now)
            if entries is None:
                out.append(look)  # its fill reads the reply (and counts it)
            else:
                self._observer.on_shared_cache(source, "hit", len(entries))
                out.append(entries)
        return out

    def release(self, prefetched: Prefetched) -> None:
        """See :meth:`annotation_gateway.cache.SharedTier.release`: frees the lock its lookup
        took, if it took one (without waiting: the caller goes on)."""
        if not isinstance(prefetched, _Looked) or prefetched.used:
            return
        prefetched.used = True
        if prefetched.reply[1] != scripts.TAKEN or not self._link.up:
            return  # no lock; or Redis is failing, and the lock expires by itself
        source, field, _ = prefetched.key
        writes: _Writes = (prefetched.reply[0], prefetched.lock_key, prefetched.token, field)
        task = asyncio.get_running_loop().create_task(self._write(source, writes, {}, 0.0))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _sort(
        self,
        source: str,
        slots: list[Slot],
        values: list[bytes | int | None],
        read: bool,
        found: dict[Slot, TierEntry[Record]],
        usable: dict[Slot, bytes | None],
        known: Known[Record],
        *,
        count: bool,
    ) -> list[Slot]:
        """File each value as fresh (``found``, decoded) or only usable on error (``usable``:
        not sent by the script, ``None``, or kept encoded — most misses never need it, and
        decoding is most of a hit's cost); return the slots to fetch."""
        now = self._wall()
        missing: list[Slot] = []
        hits = invalid = 0
        for slot, value in zip(slots, values, strict=True):
            if value is None:
                missing.append(slot)
                continue
            if isinstance(value, int):
                if value == scripts.NOT_OURS:
                    invalid += 1
                else:
                    usable[slot] = None
                missing.append(slot)
                continue
            if len(value) == HEAD.size and slot in known:
                # The answer this process holds, perhaps re-dated since: only its head came.
                try:
                    stored_at = stored_at_of(value)
                except ValueError:
                    invalid += 1
                    missing.append(slot)
                    continue
                found[slot] = TierEntry(known[slot][1], max(now - stored_at, 0.0), value)
                hits += 1
                continue
            try:
                fresh = read and now - stored_at_of(value) < self._ttl
                if fresh:
                    stored_at, records = decode(value)
            except ValueError:
                invalid += 1
                missing.append(slot)
                continue
            if fresh:
                found[slot] = TierEntry(records, max(now - stored_at, 0.0), value[: HEAD.size])
                hits += 1
            else:
                usable[slot] = value
                missing.append(slot)
        if count:
            if hits:
                self._observer.on_shared_cache(source, "hit", hits)
            if invalid:
                self._observer.on_shared_cache(source, "invalid", invalid)
            if len(missing) - invalid:
                self._observer.on_shared_cache(source, "miss", len(missing) - invalid)
        return missing

    async def _fetch(
        self,
        source: str,
        slots: list[Slot],
        fetch_parts: FetchParts[Record],
        found: dict[Slot, TierEntry[Record]],
        usable: dict[Slot, bytes | None],
        *,
        writes: _Writes | None = None,
        field: str | None = None,
        known: Known[Record] | None = None,
        refresh: bool = False,
    ) -> TierFill[Record]:
        """Call the source for ``slots``; store the answer (and free the lock) per ``writes``:
        (generation read, lock key or None, lock token, hash field). On failure, what Redis
        holds for them (hash ``field``) may stand in. An answer identical to the one ``known``
        names is stored by sending its new head only (see :data:`.redis_scripts.STORE`)."""
        started = self._wall()
        try:
            parts = await fetch_parts(slots)
        except asyncio.CancelledError:
            if writes is not None and writes[1] is not None:
                # Free the lock for the waiters without waiting here (this task is cancelled).
                task = asyncio.get_running_loop().create_task(self._write(source, writes, {}, started))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            raise
        except Exception as exc:
            if writes is not None:
                await self._write(source, writes, {}, started)
            stale = await self._stale(source, field, found, usable) if usable else found
            return TierFill(found, upstream=True, error=exc, usable=stale)
        age = max(self._wall() - started, 0.0)
        if writes is None or not writes[0]:
            for slot in slots:
                found[slot] = TierEntry(parts[slot], age)
            if writes is not None:
                await self._write(source, writes, {}, started)
            return TierFill(found, upstream=True)
        values: dict[Slot, bytes] = {}
        whole: dict[Slot, bytes] = {}
        for slot in slots:
            held = known.get(slot) if known else None
            # On a refresh, a held copy dated less than half a ttl ago is as good as Redis's for
            # every reader: an unchanged answer needs nothing written (a refresh loop costs no
            # Redis call), and the local entry keeps naming Redis's copy, so that a later refresh
            # re-dates it in time. (After a lookup that found Redis's copy missing or old, it is
            # always written.)
            recent = held if refresh and held and started - stored_at_of(held[0]) < self._ttl / 2 else None
            if recent is not None and same_documents(recent[1], parts[slot]):
                # Known unchanged without encoding the value (~20 µs a 10-record value).
                found[slot] = TierEntry(recent[1], age, recent[0])
                continue
            value = encode(parts[slot], started)
            head = value[: HEAD.size]
            # The version is only a hint: if the store is refused, no value in Redis has it.
            found[slot] = TierEntry(parts[slot], age, head)
            if held is not None and held[0][SAME] == head[SAME]:
                # Unchanged by its header length and CRC (what same_documents could not call the
                # same, e.g. extensions held as a struct here and as JSON there). Recent: as
                # above; otherwise Redis only needs the new date, not ~10 KB again per subject.
                if recent is not None:
                    found[slot] = TierEntry(parts[slot], age, held[0])
                    continue
                whole[slot] = value
                value = b"T" + head
            values[slot] = value
        await self._write(source, writes, values, started, whole)
        return TierFill(found, upstream=True)

    async def _stale(
        self,
        source: str,
        field: str | None,
        found: dict[Slot, TierEntry[Record]],
        usable: dict[Slot, bytes | None],
    ) -> dict[Slot, TierEntry[Record]]:
        """What may stand in for a failed fetch: the fresh answers and the older ones (those the
        lookup did not send are read now: one more round trip, on failures only)."""
        unsent = [slot for slot, value in usable.items() if value is None]
        if unsent and field is not None and self._link.allowed():
            try:
                async with (
                    asyncio.timeout(self._link.timeout),
                    self._link.client.pipeline(transaction=False) as pipe,
                ):
                    for slot in unsent:
                        pipe.hget(self._keys.subject(source, slot), field)
                    values = await pipe.execute()
            except (RedisError, OSError) as exc:
                self._link.failed("read", exc)
            else:
                self._link.succeeded()
                usable.update(zip(unsent, values, strict=True))
        now = self._wall()
        entries = dict(found)
        for slot, value in usable.items():
            if value is None:
                continue
            try:
                stored_at, records = decode(value)
            except ValueError:
                self._observer.on_shared_cache(source, "invalid", 1)
                continue
            entries[slot] = TierEntry(records, max(now - stored_at, 0.0), value[: HEAD.size])
        return entries

    async def _write(
        self,
        source: str,
        writes: _Writes,
        values: Mapping[Slot, bytes],
        started: float,
        whole: Mapping[Slot, bytes] | None = None,
    ) -> None:
        """Store ``values`` (frees the lock of ``writes``); a re-dating one that Redis could not
        apply (its value went: a restart, an eviction, a write) is sent again from ``whole``."""
        generation, lock_key, token, field = writes
        keys = [self._keys.generation(source), lock_key or self._keys.generation(source)]
        args: list[str | bytes | int] = [generation, field, self._keep_ms, token]
        slots = list(values) if generation else []
        for slot in slots:
            keys.append(self._keys.subject(source, slot))
            args.append(values[slot])
        args.append(MAX_VARIANTS)
        if len(keys) == 2 and not token:
            return
        try:
            async with asyncio.timeout(self._link.timeout):
                reply = await self._store(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            self._link.failed("write", exc)
            return
        self._link.succeeded()
        current, missed = reply[0], reply[1:]
        self._generations[source] = current
        if missed and whole and current == generation:
            again = {slots[i - 1]: whole[slots[i - 1]] for i in missed if slots[i - 1] in whole}
            if again:
                await self._write(source, (generation, None, "", field), again, started)

    # --- invalidating -----------------------------------------------------------------------------

    async def invalidate(self, source: str, subject_ids: Collection[str]) -> None:
        """Bump ``source``'s generation, drop ``subject_ids``' hashes (and the identifier-only
        one) and tell the other processes; remembered for later when Redis cannot be reached."""
        subjects = sorted(set(subject_ids))
        if await self._usable():
            try:
                await self._invalidations.send(source, subjects)
            except (RedisError, OSError) as exc:
                self._link.failed("invalidate", exc)
            else:
                self._link.succeeded()
                return
        self._invalidations.remember(source, subjects)

    # --- state ------------------------------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        """``{"backend": "redis", "state": "ok" | "degraded", "detail": ...}`` (no URL); pings
        Redis unless the tier is in backoff."""
        if await self._usable():
            try:
                async with asyncio.timeout(self._link.timeout):
                    await self._link.client.ping()
            except (RedisError, OSError) as exc:
                self._link.failed("ping", exc)
            else:
                self._link.succeeded()
        detail = self._link.unreachable()
        state = "ok" if detail is None else "degraded"
        return {"backend": "redis", "state": state, "detail": detail}

    async def aclose(self) -> None:
        self._link.close()
        await self._invalidations.aclose()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._link.aclose()
