"""The shared Redis cache tier (SPEC §9) against a real ``redis-server`` and the Datadog simulator
over HTTP (its value format: ``test_codec.py``): one upstream call for a query asked on two
replicas, write on one and read on the other, stale-on-error from Redis, garbage values, and
Redis down, hung or restarted empty.

Two :class:`Federation` instances sharing one Redis and one simulator stand for two replicas.
Each test uses its own key prefix on the session's Redis (or its own ``redis_instance`` when it
kills one). Clocks are injected where ages matter; no assertion is about time.
"""

from __future__ import annotations

import asyncio
import collections
import signal
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from redis.asyncio import Redis

from annotation_gateway.cache import Prefetched
from annotation_gateway.cache.codec import decode
from annotation_gateway.cache.redis_tier import RedisTier
from annotation_gateway.errors import SourceError
from annotation_gateway.federation import FederatedQuery, Federation
from annotation_gateway.model import AnnotationWrite, SubjectKind
from annotation_gateway.providers import build_provider
from annotation_gateway.providers.base import AnnotationProvider, Capabilities, SourceQuery, WriteResult
from annotation_gateway.providers.config import ConfigError
from annotation_gateway.records import Record
from annotation_gateway.settings import AuthConfig, CacheConfig, GatewaySettings
from tests.cache.test_codec import every_field
from tests.fakes import ManualClock
from tests.plugins.datadog import DatadogSimulator
from tests.plugins.redis import RedisServer

SOURCE = "dd"
SECRET = b"redis-tier-test-secret-0123456789"
SESSIONS = [f"sess-{i:02d}" for i in range(6)]
QUEUE = "redis-tier-quality"
SCHEMAS = [
    {"name": "quality", "type": "score", "min": 0, "max": 5, "is_integer": True},
    {"name": "topic", "type": "categorical", "values": ["billing", "bug", "other"]},
]
FETCH_PATH = "/annotated-interactions"


def test_the_url_comes_from_the_named_variable() -> None:
    config = CacheConfig(backend="redis", redis_url_env="TEST_CACHE_URL")
    with pytest.raises(ConfigError, match="TEST_CACHE_URL is not set"):
        RedisTier.from_config(config, environ={})
    tier = RedisTier.from_config(config, environ={"TEST_CACHE_URL": "redis://:pw-123@127.0.0.1:1/0"})
    assert tier.target == "redis://***@127.0.0.1:1/0"
    settings_ = GatewaySettings(cache=config, auth=AuthConfig(enabled=False))
    with pytest.raises(ConfigError, match="TEST_CACHE_URL"):
        Federation.from_settings([], settings_, cursor_secret=SECRET)


# --- replicas over the simulator ------------------------------------------------------------------


def seed_doc(quality: dict[str, int]) -> dict[str, Any]:
    return {
        "queues": [
            {
                "name": QUEUE,
                "label_schemas": SCHEMAS,
                "interactions": [
                    {
                        "type": "session",
                        "content_id": sid,
                        "annotations": [
                            {"user": "alice", "label_values": {"quality": q, "topic": ["billing"]}}
                        ],
                    }
                    for sid, q in quality.items()
                ],
            }
        ]
    }


def fetches(sim: DatadogSimulator) -> int:
    return sum(1 for r in sim.requests if r.path.endswith(FETCH_PATH))


@dataclass
class Seen:
    """An observer of the shared tier's hooks."""

    shared: collections.Counter[str] = field(default_factory=collections.Counter)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    states: list[bool] = field(default_factory=list)
    missed: asyncio.Event = field(default_factory=asyncio.Event)

    def on_shared_cache(self, source: str, result: str, count: int) -> None:
        self.shared[result] += count
        if result == "miss":
            self.missed.set()

    def on_redis_error(self, operation: str) -> None:
        self.errors[operation] += 1

    def on_redis_state(self, up: bool) -> None:
        self.states.append(up)


class Writable:
    """The Datadog provider for reads (over HTTP); its writes go into the simulator's store, as
    an annotation saved in Datadog's queue would (the gateway itself does not write to Datadog)."""

    def __init__(self, inner: AnnotationProvider, sim: DatadogSimulator) -> None:
        self.inner = inner
        self.sim = sim
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def kind(self) -> Any:
        return self.inner.kind

    @property
    def capabilities(self) -> Capabilities:
        return replace(self.inner.capabilities, writable_kinds=frozenset({SubjectKind.SESSION}))

    async def fetch_records(self, query: SourceQuery) -> list[Record]:
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        return await self.inner.fetch_records(query)

    async def fetch(self, query: SourceQuery) -> Any:
        return await self.inner.fetch(query)

    async def write(self, items: Sequence[AnnotationWrite]) -> WriteResult:
        self.sim.seed(seed_doc({item.subject_id: int(item.score or 0) for item in items}))
        return WriteResult(ids=())

    async def health(self) -> Any:
        return await self.inner.health()

    async def aclose(self) -> None:
        await self.inner.aclose()


@dataclass
class Cluster:
    """Replicas sharing one Redis (by URL and key prefix) and one simulator."""

    sim: DatadogSimulator
    url: str
    config: CacheConfig
    feds: list[Federation] = field(default_factory=list)

    def replica(
        self,
        *,
        clock: ManualClock | None = None,
        wall: ManualClock | None = None,
        observer: Seen | None = None,
        config: CacheConfig | None = None,
    ) -> tuple[Federation, Writable]:
        config = config or self.config
        mono = clock or time.monotonic
        inner = build_provider(self.sim.source_config(SOURCE, retry_attempts=1), environ=self.sim.environ)
        provider = Writable(inner, self.sim)
        tier = RedisTier(self.url, config, clock=mono, wall=wall or time.time, observer=observer)
        federation = Federation([provider], config, cursor_secret=SECRET, clock=mono, shared_cache=tier)
        self.feds.append(federation)
        return federation, provider

    def two_sources(self, clock: ManualClock, observer: Seen) -> tuple[Federation, RedisTier]:
        """A replica reading two sources (``dd-one``, ``dd-two``) of the simulator."""
        providers = [
            build_provider(self.sim.source_config(name, retry_attempts=1), environ=self.sim.environ)
            for name in ("dd-one", "dd-two")
        ]
        tier = RedisTier(self.url, self.config, clock=clock, observer=observer)
        federation = Federation(providers, self.config, cursor_secret=SECRET, clock=clock, shared_cache=tier)
        self.feds.append(federation)
        return federation, tier


def cache_config(**overrides: Any) -> CacheConfig:
    fields_: dict[str, Any] = {
        "backend": "redis",
        "redis_key_prefix": f"t{uuid.uuid4().hex[:12]}",
        "ttl_s": 30.0,
        "max_stale_s": 300.0,
        "local_ttl_s": 2.0,
        # Generous for a loaded CI machine; the failure tests kill or stop the server instead.
        "redis_timeout_s": 0.5,
        "redis_retry_s": 0.05,
        "redis_lock_wait_s": 5.0,
    }
    return CacheConfig.model_validate(fields_ | overrides)


@pytest.fixture
async def cluster(datadog_sim: DatadogSimulator, redis_server: RedisServer) -> AsyncIterator[Cluster]:
    datadog_sim.seed(seed_doc({sid: 3 for sid in SESSIONS}))
    made = Cluster(datadog_sim, redis_server.url, cache_config())
    try:
        yield made
    finally:
        for federation in made.feds:
            await federation.aclose()


@pytest.fixture
async def own_redis_cluster(
    datadog_sim: DatadogSimulator, redis_instance: RedisServer
) -> AsyncIterator[tuple[Cluster, RedisServer]]:
    datadog_sim.seed(seed_doc({sid: 3 for sid in SESSIONS}))
    made = Cluster(datadog_sim, redis_instance.url, cache_config())
    try:
        yield made, redis_instance
    finally:
        if redis_instance.process is not None:
            redis_instance.process.send_signal(signal.SIGCONT)
        for federation in made.feds:
            await federation.aclose()


def quality_write(subject: str, score: int) -> list[AnnotationWrite]:
    return [
        AnnotationWrite(subject_kind=SubjectKind.SESSION, subject_id=subject, name="quality", score=score)
    ]


def ask(*subjects: str, **kw: Any) -> FederatedQuery:
    return FederatedQuery(subject_ids=subjects or tuple(SESSIONS), limit=1000, **kw)


def qualities(page: Any) -> dict[str, float | None]:
    return {r.subject_id: r.score for r in page.records if r.name == "quality"}


async def keys(url: str, pattern: str) -> list[bytes]:
    client = Redis.from_url(url)
    try:
        return [k async for k in client.scan_iter(match=pattern)]
    finally:
        await client.aclose()


async def test_a_query_asked_on_two_replicas_makes_one_upstream_call(cluster: Cluster) -> None:
    seen_b = Seen()
    a, _ = cluster.replica()
    b, _ = cluster.replica(observer=seen_b)
    first = await a.query(ask())
    assert fetches(cluster.sim) == 1
    second = await b.query(ask())
    assert fetches(cluster.sim) == 1, "the second replica asked the vendor again"
    assert [r.json for r in second.records] == [r.json for r in first.records]
    assert len(first.records) == 2 * len(SESSIONS)
    assert (first.sources[0].cached, second.sources[0].cached) == (False, True)
    assert seen_b.shared == {"hit": len(SESSIONS)}
    # An overlapping query on B fetches only the subject Redis lacks.
    cluster.sim.seed(seed_doc({"sess-new": 5}))
    third = await b.query(ask("sess-00", "sess-new"))
    assert qualities(third) == {"sess-00": 3.0, "sess-new": 5.0}
    assert fetches(cluster.sim) == 2
    assert cluster.sim.requests[-1].query.count(("contentIds", "sess-new")) == 1
    assert ("contentIds", "sess-00") not in cluster.sim.requests[-1].query


async def test_identical_concurrent_misses_on_two_replicas_make_one_upstream_call(cluster: Cluster) -> None:
    seen_b = Seen()
    a, provider_a = cluster.replica()
    b, provider_b = cluster.replica(observer=seen_b)
    provider_a.gate = asyncio.Event()
    on_a = asyncio.create_task(a.query(ask()))
    await provider_a.entered.wait()  # A holds the lock and is calling the vendor
    on_b = asyncio.create_task(b.query(ask()))
    await seen_b.missed.wait()  # B found nothing in Redis and the lock held
    assert not provider_b.entered.is_set()
    provider_a.gate.set()
    page_a, page_b = await asyncio.gather(on_a, on_b)
    assert fetches(cluster.sim) == 1
    assert not provider_b.entered.is_set(), "B called the vendor although A was fetching"
    assert [r.json for r in page_b.records] == [r.json for r in page_a.records]
    assert seen_b.shared["wait"] == 1
    assert not page_b.sources[0].cached  # it awaited an upstream call (A's)


async def test_a_failed_holder_frees_the_lock_and_the_waiter_fetches(cluster: Cluster) -> None:
    a, provider_a = cluster.replica()
    seen_b = Seen()
    b, provider_b = cluster.replica(observer=seen_b)
    provider_a.gate = asyncio.Event()
    on_a = asyncio.create_task(a.query(ask("sess-01")))
    await provider_a.entered.wait()
    on_b = asyncio.create_task(b.query(ask("sess-01")))
    await seen_b.missed.wait()
    cluster.sim.configure(fail_next=1)  # A's call fails; B then makes its own
    provider_a.gate.set()
    failed_a, page_b = await asyncio.gather(on_a, on_b, return_exceptions=True)
    assert isinstance(failed_a, SourceError)  # the only source failed: raised as is
    assert not isinstance(page_b, BaseException)
    assert page_b.sources[0].status == "ok"
    assert qualities(page_b) == {"sess-01": 3.0}
    assert provider_b.entered.is_set()


async def test_write_on_one_replica_is_read_on_the_other_at_once(cluster: Cluster) -> None:
    clock_b = ManualClock()
    a, _ = cluster.replica()
    b, _ = cluster.replica(clock=clock_b)
    assert qualities(await a.query(ask("sess-02"))) == {"sess-02": 3.0}
    assert qualities(await b.query(ask("sess-02"))) == {"sess-02": 3.0}  # from Redis
    tier_b = b.cache.shared
    assert isinstance(tier_b, RedisTier)
    await tier_b.wait_subscribed()

    await a.write(
        SOURCE,
        quality_write("sess-02", 5),
    )
    # B's local tier has not expired: the invalidation A published reaches it.
    for _ in range(100_000):  # bounded: the message is already in B's socket buffer
        if tier_b.invalidations_received:
            break
        await asyncio.sleep(0)
    assert tier_b.invalidations_received == 1
    page = await b.query(ask("sess-02"))
    assert qualities(page) == {"sess-02": 5.0}
    assert not page.sources[0].cached

    # Through Redis alone (B's local tier expired; no message needed), at once after the write.
    await a.write(
        SOURCE,
        quality_write("sess-02", 1),
    )
    clock_b.advance(cluster.config.local_ttl_s + 0.1)
    assert qualities(await b.query(ask("sess-02"))) == {"sess-02": 1.0}


async def test_a_fetch_that_started_before_a_write_does_not_store_its_answer(cluster: Cluster) -> None:
    a, provider_a = cluster.replica()
    b, _ = cluster.replica()
    provider_a.gate = asyncio.Event()
    on_a = asyncio.create_task(a.query(ask("sess-03")))
    await provider_a.entered.wait()
    await b.write(
        SOURCE,
        quality_write("sess-03", 0),
    )
    provider_a.gate.set()
    await on_a
    assert await keys(cluster.url, f"{cluster.config.redis_key_prefix}:*:s:sess-03") == []
    assert qualities(await b.query(ask("sess-03"))) == {"sess-03": 0.0}


async def test_stale_on_error_is_served_from_redis(cluster: Cluster) -> None:
    wall = ManualClock(start=1.7e9)
    a, _ = cluster.replica(wall=wall)
    fresh = await a.query(ask("sess-04"))
    # Another replica, empty, while the vendor fails: Redis holds an answer older than ttl.
    wall.advance(cluster.config.ttl_s + 10)
    b, _ = cluster.replica(wall=wall)
    cluster.sim.configure(fail_rate=1.0, fail_status=503)
    stale = await b.query(ask("sess-04"))
    assert stale.sources[0].status == "ok"
    assert stale.sources[0].stale
    assert not stale.partial
    assert [r.json for r in stale.records] == [r.json for r in fresh.records]
    # No older than the client allows (max-stale), nor than max_stale_s.
    with pytest.raises(SourceError):
        await b.query(ask("sess-04", max_stale_s=20))
    wall.advance(cluster.config.max_stale_s)
    c, _ = cluster.replica(wall=wall)
    with pytest.raises(SourceError):
        await c.query(ask("sess-04"))


async def test_garbage_in_redis_is_a_miss_not_an_error(cluster: Cluster) -> None:
    seen = Seen()
    a, _ = cluster.replica()
    await a.query(ask("sess-05", "sess-00"))
    [key5] = await keys(cluster.url, f"{cluster.config.redis_key_prefix}:*:s:sess-05")
    [key0] = await keys(cluster.url, f"{cluster.config.redis_key_prefix}:*:s:sess-00")
    client = Redis.from_url(cluster.url)
    try:
        [field5] = await client.hkeys(key5)
        good = await client.hget(key0, field5)
        assert good is not None
        await client.hset(key5, field5, b"\x80\x04garbage, not an answer")
        # A value with the right magic and a fresh date but a broken header passes the script's
        # freshness check; the client still refuses it.
        await client.hset(key0, field5, good[:16] + b"{" + good[17:])
        b, _ = cluster.replica(observer=seen)
        page = await b.query(ask("sess-05", "sess-00"))
        assert page.sources[0].status == "ok"
        assert qualities(page) == {"sess-05": 3.0, "sess-00": 3.0}
        assert seen.shared["invalid"] == 2
        assert fetches(cluster.sim) == 2
        # The refetched answer replaced the garbage.
        repaired = await client.hget(key5, field5)
        assert repaired is not None
        assert decode(repaired)[1]
    finally:
        await client.aclose()


async def test_no_cache_refreshes_redis_and_export_streams_store_nothing(cluster: Cluster) -> None:
    a, _ = cluster.replica()
    await a.query(ask("sess-01"))
    cluster.sim.seed(seed_doc({"sess-01": 4}))
    refreshed = await a.query(ask("sess-01", use_cache=False))
    assert qualities(refreshed) == {"sess-01": 4.0}
    b, _ = cluster.replica()
    assert qualities(await b.query(ask("sess-01"))) == {"sess-01": 4.0}
    assert fetches(cluster.sim) == 2
    async for _ in b.stream(ask("sess-02")):
        pass
    assert await keys(cluster.url, f"{cluster.config.redis_key_prefix}:*:s:sess-02") == []


async def test_redis_restarted_empty_is_only_misses(own_redis_cluster: tuple[Cluster, RedisServer]) -> None:
    cluster, server = own_redis_cluster
    clock = ManualClock()
    seen = Seen()
    a, _ = cluster.replica(clock=clock, observer=seen)
    await a.query(ask())
    server.restart()
    clock.advance(cluster.config.local_ttl_s + 0.1)
    page = await a.query(ask())
    assert page.sources[0].status == "ok"
    assert not page.sources[0].cached
    assert fetches(cluster.sim) == 2
    assert seen.errors == {}, "a restarted Redis is a reconnection, not a failure"
    assert len(await keys(cluster.url, f"{cluster.config.redis_key_prefix}:*:s:*")) == len(SESSIONS)


async def test_every_source_of_a_request_is_looked_up_in_one_round_trip(
    own_redis_cluster: tuple[Cluster, RedisServer],
) -> None:
    """Two sources' lookups of one request go out as one pipeline, hits and misses alike; after
    a restart Redis has forgotten the lookup script (NOSCRIPT inside the pipeline): it is loaded
    again and the request is answered as plain misses, with no Redis error."""
    cluster, server = own_redis_cluster
    clock = ManualClock()
    seen = Seen()
    config = cluster.config
    federation, tier = cluster.two_sources(clock, seen)

    first = await federation.query(ask())
    assert [(s.status, s.cached) for s in first.sources] == [("ok", False), ("ok", False)]
    assert tier.lookup_batches == 1
    assert fetches(cluster.sim) == 2

    clock.advance(config.local_ttl_s + 0.1)  # the local tier expired: both sources ask Redis
    again = await federation.query(ask())
    assert [(s.status, s.cached) for s in again.sources] == [("ok", True), ("ok", True)]
    assert tier.lookup_batches == 2
    assert fetches(cluster.sim) == 2
    assert again.records == first.records

    server.restart()
    clock.advance(config.local_ttl_s + 0.1)
    after = await federation.query(ask())
    assert [(s.status, s.cached) for s in after.sources] == [("ok", False), ("ok", False)]
    assert tier.lookup_batches == 3
    assert fetches(cluster.sim) == 4
    assert after.records == first.records
    assert seen.errors == {}, "a forgotten script is loaded again, not a failure"
    assert len(await keys(cluster.url, f"{config.redis_key_prefix}:*:s:*")) == 2 * len(SESSIONS)


async def test_a_polled_query_is_confirmed_for_every_source_in_one_round_trip(
    own_redis_cluster: tuple[Cluster, RedisServer],
) -> None:
    """A query whose merged result and local copies expired asks Redis once whether every
    source's answer is still the one held: confirmed, it is the very same records, no upstream
    call, one round trip; changed for one subject in Redis, or gone from it, the same single
    round trip's lookup serves the read that follows (the lock it took is the read's, then freed)."""
    cluster, _ = own_redis_cluster
    clock = ManualClock()
    seen = Seen()
    config = cluster.config
    federation, tier = cluster.two_sources(clock, seen)
    query = ask("sess-01", "sess-02")

    first = await federation.query(query)
    assert tier.lookup_batches == 1
    assert seen.shared["miss"] == 4
    clock.advance(config.local_ttl_s + 0.1)
    again = await federation.query(query)
    assert [(s.status, s.cached) for s in again.sources] == [("ok", True), ("ok", True)]
    assert all(x is y for x, y in zip(again.records, first.records, strict=True))
    assert tier.lookup_batches == 2
    assert seen.shared["hit"] == 4
    assert fetches(cluster.sim) == 2

    # dd-two's answer for sess-02 is gone from Redis: the confirmation's lookup took its lock,
    # and the read that follows uses that lookup (no second round trip), fetches, stores, frees.
    prefix = config.redis_key_prefix
    client = Redis.from_url(cluster.url)
    try:
        assert await client.delete(f"{prefix}:v2:dd-two:s:sess-02") == 1
        clock.advance(config.local_ttl_s + 0.1)
        changed = await federation.query(query)
        assert [(s.status, s.cached) for s in changed.sources] == [("ok", True), ("ok", False)]
        assert tier.lookup_batches == 3
        assert fetches(cluster.sim) == 3
        assert await client.exists(f"{prefix}:v2:dd-two:s:sess-02") == 1
        assert [k async for k in client.scan_iter(match=f"{prefix}:*:lock:*")] == []
        assert [r.json for r in changed.records] == [r.json for r in first.records]
    finally:
        await client.aclose()


async def test_a_confirmation_nobody_reads_frees_its_lock(cluster: Cluster) -> None:
    """What a confirmation found but no read used (the subjects were being fetched meanwhile)
    gives its lock back at once: another replica's read of those subjects does not wait."""
    clock_a = ManualClock()
    a, _ = cluster.replica(clock=clock_a)
    await a.query(ask("sess-02"))
    tier = a.cache.shared
    assert isinstance(tier, RedisTier)
    prefix = cluster.config.redis_key_prefix
    client = Redis.from_url(cluster.url)
    try:
        await client.delete(f"{prefix}:v2:{SOURCE}:s:sess-02")
        clock_a.advance(cluster.config.local_ttl_s + 0.1)
        source_query = SourceQuery(subject_ids=("sess-02",))  # what ask("sess-02") pushes down
        found = await a.cache.confirm([(SOURCE, source_query)])
        assert found is not None
        assert len(found) == 1
        (prefetched,) = found
        assert isinstance(prefetched, Prefetched)
        assert len([k async for k in client.scan_iter(match=f"{prefix}:*:lock:*")]) == 1
        tier.release(prefetched)
        tier.release(prefetched)  # once is enough; again is nothing
        for _ in range(1000):  # bounded: one script call on loopback
            if not [k async for k in client.scan_iter(match=f"{prefix}:*:lock:*")]:
                break
            await asyncio.sleep(0.001)
        assert [k async for k in client.scan_iter(match=f"{prefix}:*:lock:*")] == []
    finally:
        await client.aclose()
    seen = Seen()
    b, _ = cluster.replica(observer=seen)
    assert qualities(await b.query(ask("sess-02"))) == {"sess-02": 3.0}
    assert seen.shared["wait"] == 0


async def test_redis_down_then_back_without_restarting_the_gateway(
    own_redis_cluster: tuple[Cluster, RedisServer],
) -> None:
    cluster, server = own_redis_cluster
    seen = Seen()
    # No local tier: every request asks Redis, so each one meets the outage.
    config = cluster.config.model_copy(update={"local_ttl_s": 0.0})
    a, _ = cluster.replica(observer=seen, config=config)
    tier = a.cache.shared
    assert isinstance(tier, RedisTier)
    failures = 0
    for i in range(60):
        if i == 20:
            server.stop()
        page = await a.query(ask(SESSIONS[i % 3]))
        failures += page.sources[0].status != "ok"
    assert failures == 0
    assert not tier.up
    assert seen.states[:1] == [False]
    assert seen.errors["read"] >= 1
    assert seen.shared["bypass"] >= 1
    status = await a.cache_status()
    assert status is not None
    assert status["state"] == "degraded"
    assert "127.0.0.1" not in str(status)

    server.start()
    for _ in range(2000):  # bounded: the backoff is 0.05 s doubling, the subscriber reconnects too
        await a.query(ask(SESSIONS[3]))
        if tier.up and await keys(cluster.url, f"{config.redis_key_prefix}:*:s:{SESSIONS[3]}"):
            break
        await asyncio.sleep(0.01)
    assert tier.up
    assert seen.states[-1] is True
    assert await keys(cluster.url, f"{config.redis_key_prefix}:*:s:{SESSIONS[3]}")
    status = await a.cache_status()
    assert status == {"backend": "redis", "state": "ok", "detail": None}


async def test_a_hung_redis_times_out_and_the_gateway_answers(
    own_redis_cluster: tuple[Cluster, RedisServer],
) -> None:
    cluster, server = own_redis_cluster
    seen = Seen()
    config = cluster.config.model_copy(update={"local_ttl_s": 0.0, "redis_timeout_s": 0.2})
    a, _ = cluster.replica(observer=seen, config=config)
    await a.query(ask("sess-00"))
    assert server.process is not None
    server.process.send_signal(signal.SIGSTOP)  # accepts nothing, answers nothing: a hung server
    try:
        for _ in range(5):
            page = await a.query(ask("sess-00"))
            assert page.sources[0].status == "ok"
            assert qualities(page) == {"sess-00": 3.0}
        assert seen.errors["read"] >= 1
        assert seen.shared["bypass"] >= 1  # the backoff: not every request waits for the timeout
    finally:
        server.process.send_signal(signal.SIGCONT)


async def test_invalidations_made_while_redis_is_down_are_replayed(
    own_redis_cluster: tuple[Cluster, RedisServer],
) -> None:
    cluster, server = own_redis_cluster
    clock_a, clock_b = ManualClock(), ManualClock()
    a, _ = cluster.replica(clock=clock_a)
    b, _ = cluster.replica(clock=clock_b)
    await b.query(ask("sess-01"))
    tier_a = a.cache.shared
    assert isinstance(tier_a, RedisTier)
    assert server.process is not None
    # A meets a hung Redis (a read of answers Redis holds fresh: it takes no lock) and backs off.
    server.process.send_signal(signal.SIGSTOP)
    try:
        await a.query(ask("sess-01"))
    finally:
        server.process.send_signal(signal.SIGCONT)
    assert not tier_a.up
    # While backing off, A writes: its invalidation cannot be sent, so it is remembered.
    await a.write(
        SOURCE,
        quality_write("sess-01", 2),
    )
    clock_b.advance(cluster.config.local_ttl_s + 0.1)
    assert qualities(await b.query(ask("sess-01"))) == {"sess-01": 3.0}  # Redis still has the old one
    # A's next use of Redis replays it first.
    clock_a.advance(cluster.config.redis_retry_s * 2)
    await a.query(ask("sess-05"))
    assert tier_a.up
    clock_b.advance(cluster.config.local_ttl_s + 0.1)
    assert qualities(await b.query(ask("sess-01"))) == {"sess-01": 2.0}


def test_memory_backend_builds_no_tier() -> None:
    federation = Federation([], CacheConfig(), cursor_secret=SECRET)
    assert federation.cache.shared is None
    assert federation.cache.ttl == CacheConfig().ttl_s


async def test_the_local_tier_is_capped_by_local_ttl(cluster: Cluster) -> None:
    clock = ManualClock()
    seen = Seen()
    a, _ = cluster.replica(clock=clock, observer=seen)
    assert a.cache.ttl == cluster.config.local_ttl_s
    await a.query(ask("sess-00"))
    clock.advance(cluster.config.local_ttl_s - 0.1)
    assert (await a.query(ask("sess-00"))).sources[0].cached
    assert seen.shared["hit"] == 0  # served by the local tier, Redis not asked
    clock.advance(0.2)
    again = await a.query(ask("sess-00"))
    assert again.sources[0].cached  # from Redis: no upstream call
    assert seen.shared["hit"] == 1
    assert fetches(cluster.sim) == 1


async def test_an_expired_local_answer_is_confirmed_or_replaced_from_redis(cluster: Cluster) -> None:
    clock_a = ManualClock()
    a, _ = cluster.replica(clock=clock_a)
    b, _ = cluster.replica()
    first = await a.query(ask("sess-02"))
    clock_a.advance(cluster.config.local_ttl_s + 0.1)
    # Redis still holds the very answer A has: confirmed (not sent again), the same records.
    again = await a.query(ask("sess-02"))
    assert again.sources[0].cached
    assert [r.json for r in again.records] == [r.json for r in first.records]
    # Another replica refreshes it (no-cache) with what the vendor has now: A's copy is replaced.
    cluster.sim.seed(seed_doc({"sess-02": 1}))
    await b.query(ask("sess-02", use_cache=False))
    clock_a.advance(cluster.config.local_ttl_s + 0.1)
    replaced = await a.query(ask("sess-02"))
    assert replaced.sources[0].cached
    assert qualities(replaced) == {"sess-02": 1.0}
    assert fetches(cluster.sim) == 2


async def test_a_result_confirmed_by_redis_is_renewed_not_merged_again(cluster: Cluster) -> None:
    clock_a = ManualClock()
    a, _ = cluster.replica(clock=clock_a)
    b, _ = cluster.replica()
    query = ask("sess-01", "sess-03")
    first = await a.query(query)
    assert first.records_json is not None
    clock_a.advance(cluster.config.local_ttl_s + 0.1)
    again = await a.query(query)
    assert again.sources[0].cached
    # Redis confirmed both answers: the same records, and the page's JSON is the very bytes
    # written for the first answer (the result was renewed, neither merged nor encoded again).
    assert all(x is y for x, y in zip(again.records, first.records, strict=True))
    assert again.records_json is first.records_json
    # Changed in Redis by another replica: merged again, with the new answer.
    cluster.sim.seed(seed_doc({"sess-03": 1}))
    await b.query(ask("sess-03", use_cache=False))
    clock_a.advance(cluster.config.local_ttl_s + 0.1)
    changed = await a.query(query)
    assert changed.records_json is not first.records_json
    assert qualities(changed) == {"sess-01": 3.0, "sess-03": 1.0}
    # A write through this replica drops every merged result: nothing old is renewed.
    clock_a.advance(cluster.config.local_ttl_s + 0.1)
    await a.write(SOURCE, quality_write("sess-01", 2))
    after_write = await a.query(query)
    assert qualities(after_write) == {"sess-01": 2.0, "sess-03": 1.0}
    assert fetches(cluster.sim) == 3


async def test_an_unchanged_refresh_through_redis_renews_the_result(cluster: Cluster) -> None:
    clock_a = ManualClock()
    a, _ = cluster.replica(clock=clock_a)
    first = await a.query(ask("sess-01", "sess-03"))
    for expired in (False, True):
        if expired:  # the local tier's copy is old: no-cache still asks the source, not Redis
            clock_a.advance(cluster.config.local_ttl_s + 0.1)
        again = await a.query(ask("sess-01", "sess-03", use_cache=False))
        assert not again.sources[0].cached
        # The source answered the same documents: the records held here are answered and the
        # result renewed (its page's JSON the bytes written for the first answer).
        assert all(x is y for x, y in zip(again.records, first.records, strict=True))
        assert again.records_json is first.records_json
    assert fetches(cluster.sim) == 3


async def test_a_refresh_racing_a_write_on_another_replica_stores_nothing(cluster: Cluster) -> None:
    a, provider_a = cluster.replica()
    b, _ = cluster.replica()
    await a.query(ask("sess-04"))  # A learns the source's generation
    pattern = f"{cluster.config.redis_key_prefix}:*:s:sess-04"
    provider_a.gate = asyncio.Event()
    provider_a.entered.clear()
    refresh = asyncio.create_task(a.query(ask("sess-04", use_cache=False)))
    await provider_a.entered.wait()  # A's refresh is calling the vendor (it made no lookup)
    await b.write(SOURCE, quality_write("sess-04", 5))
    provider_a.gate.set()
    await refresh
    assert await keys(cluster.url, pattern) == [], "a refresh older than a write was stored"
    # The refused store told A the new generation: its next refresh is stored.
    assert qualities(await a.query(ask("sess-04", use_cache=False))) == {"sess-04": 5.0}
    assert len(await keys(cluster.url, pattern)) == 1


async def test_an_unchanged_refetch_only_redates_the_value_in_redis(cluster: Cluster) -> None:
    wall = ManualClock(start=1.7e9)
    a, _ = cluster.replica(wall=wall)
    await a.query(ask("sess-03"))
    [key] = await keys(cluster.url, f"{cluster.config.redis_key_prefix}:*:s:sess-03")
    client = Redis.from_url(cluster.url)
    try:
        [(field_, before)] = (await client.hgetall(key)).items()
        # A refresh soon after (less than half a ttl): the same answer, nothing written.
        wall.advance(5)
        await a.query(ask("sess-03", use_cache=False))
        assert await client.hget(key, field_) == before
        wall.advance(55)
        await a.query(ask("sess-03", use_cache=False))  # the vendor answers the same
        after = await client.hget(key, field_)
        assert after is not None
        assert decode(after)[0] == decode(before)[0] + 60  # re-dated (a ttl's half later) ...
        assert after[20:] == before[20:]  # ... the rest untouched
        assert [every_field(r) for r in decode(after)[1]] == [every_field(r) for r in decode(before)[1]]
        # A changed answer is stored whole.
        cluster.sim.seed(seed_doc({"sess-03": 0}))
        wall.advance(60)
        await a.query(ask("sess-03", use_cache=False))
        changed = await client.hget(key, field_)
        assert changed is not None
        assert {r.score for r in decode(changed)[1] if r.name == "quality"} == {0.0}
        # Another replica reads it from Redis as it is now.
        b, _ = cluster.replica(wall=wall)
        assert qualities(await b.query(ask("sess-03"))) == {"sess-03": 0.0}
    finally:
        await client.aclose()


async def test_requests_in_flight_when_redis_hangs_do_not_stretch_the_backoff(
    own_redis_cluster: tuple[Cluster, RedisServer],
) -> None:
    cluster, server = own_redis_cluster
    clock = ManualClock()
    config = cluster.config.model_copy(update={"local_ttl_s": 0.0, "redis_timeout_s": 0.2})
    a, _ = cluster.replica(clock=clock, config=config)
    tier = a.cache.shared
    assert isinstance(tier, RedisTier)
    await a.query(ask())
    assert server.process is not None
    server.process.send_signal(signal.SIGSTOP)
    try:
        # Twenty queries under way when Redis hangs: each one's call times out.
        pages = await asyncio.gather(*(a.query(ask(sid)) for sid in SESSIONS * 3 + SESSIONS[:2]))
    finally:
        server.process.send_signal(signal.SIGCONT)
    assert {p.sources[0].status for p in pages} == {"ok"}
    assert not tier.up
    # One outage, one backoff period: the first query after it is a trial, and Redis is back.
    clock.advance(config.redis_retry_s * 1.5)
    await a.query(ask("sess-00"))
    assert tier.up


async def test_a_bug_in_the_tier_is_not_the_requests_failure(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = Seen()
    a, _ = cluster.replica()
    await a.query(ask("sess-00"))  # Redis holds it
    b, _ = cluster.replica(observer=seen)

    def broken(value: bytes) -> Any:
        raise RuntimeError("a bug in decoding")

    monkeypatch.setattr("annotation_gateway.cache.redis_tier.decode", broken)
    page = await b.query(ask("sess-00"))
    assert page.sources[0].status == "ok"
    assert qualities(page) == {"sess-00": 3.0}
    assert seen.errors == {"internal": 1}
