"""The change feed (SPEC §10) over the simulator and a real Phoenix.

- the simulator, with ``modified_at`` set by the test: a feed from the beginning delivers every
  annotation once, oldest first, at any page size; new and updated annotations appear on the
  next call; one that becomes visible late, with a time inside the overlap before the
  watermark, is still delivered; the token survives a new process (same cursor secret); a token
  for other filters is refused;
- a real Phoenix, writes interleaved with feed reads as hypothesis chooses: every write's
  version shows up, each page oldest first, nothing skipped.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from annotation_gateway.devservers.phoenix import PhoenixSeeder
from annotation_gateway.errors import InvalidCursorError
from annotation_gateway.federation import FederatedQuery, Federation
from annotation_gateway.federation.changes import ChangesPage
from annotation_gateway.model import AnnotationWrite
from annotation_gateway.providers import build_provider
from annotation_gateway.providers.datadog import DatadogProvider
from annotation_gateway.providers.phoenix import PhoenixSourceConfig
from annotation_gateway.records import Record
from annotation_gateway.settings import CacheConfig
from tests.plugins.datadog import SCORE_LABELS, DatadogSimulator, timed_interaction
from tests.plugins.phoenix import PhoenixServer, seed_sessions

SECRET = b"changes-secret" * 3


@asynccontextmanager
async def datadog_federation(sim: DatadogSimulator) -> AsyncIterator[Federation]:
    provider = DatadogProvider.from_config(sim.source_config("dd"), environ=sim.environ)
    federation = Federation([provider], CacheConfig(ttl_s=300, max_stale_s=600), cursor_secret=SECRET)
    try:
        yield federation
    finally:
        await federation.aclose()


async def drain(
    federation: Federation, query: FederatedQuery, since: str | None, limit: int
) -> tuple[list[Record], str]:
    """Follow the feed until an empty page; every record delivered, and the last token."""
    out: list[Record] = []
    for _ in range(1000):
        page: ChangesPage = await federation.changes(query, since=since, limit=limit)
        since = page.next_since
        if not page.records:
            return out, since
        keys = [(r.updated_us, r.id) for r in page.records]
        assert keys == sorted(keys)  # oldest first within an answer
        out.extend(page.records)
    raise AssertionError("the feed did not catch up")


async def test_from_the_beginning_then_new_updated_and_late_changes(datadog_sim: DatadogSimulator) -> None:
    made = datadog_sim.seed(
        {
            "queues": [
                {
                    "name": "feed",
                    "label_schemas": SCORE_LABELS,
                    "interactions": [
                        timed_interaction(f"t-{i:02d}", f"a-{i:02d}", 10 * i, i % 10) for i in range(20)
                    ],
                }
            ]
        }
    )
    queue_id = made["queues"][0]["id"]
    query = FederatedQuery(scope="all")
    async with datadog_federation(datadog_sim) as federation:
        for limit in (1, 3, 7, 100):
            got, _ = await drain(federation, query, None, limit)
            assert len(got) == 20
            assert len({r.id for r in got}) == 20  # each once
            assert [r.updated_us for r in got] == sorted(r.updated_us for r in got)
        got, since = await drain(federation, query, None, 5)
        caught_up = await federation.changes(query, since=since, limit=5)
        assert caught_up.records == []  # caught up: empty, with a token to poll with
        assert caught_up.next_since

        # A new annotation, an update of an old one, and one that becomes visible late with a
        # time 10 s before the watermark (inside the overlap): all three on the next calls.
        datadog_sim.seed(
            {
                "queues": [
                    {
                        "id": queue_id,
                        "name": "feed",
                        "interactions": [
                            timed_interaction("t-new", "a-new", 500, 5),
                            timed_interaction("t-03", "a-03", 600, 9),
                            timed_interaction("t-late", "a-late", 190 - 10, 1),
                        ],
                    }
                ]
            }
        )
        fresh, since = await drain(federation, query, caught_up.next_since, 2)
    subjects = sorted(r.subject_id for r in fresh)
    assert subjects == ["t-03", "t-late", "t-new"]
    [update] = [r for r in fresh if r.subject_id == "t-03"]
    assert update.score == 9

    # The token is stateless and signed: a new process with the same secret continues from it.
    async with datadog_federation(datadog_sim) as restarted:
        after_restart = await restarted.changes(query, since=since, limit=10)
        assert after_restart.records == []
        with pytest.raises(InvalidCursorError):
            await restarted.changes(FederatedQuery(scope="all", names=("quality",)), since=since, limit=10)
        with pytest.raises(InvalidCursorError):
            await restarted.changes(query, since=since[:-4] + "AAAA", limit=10)


# --- a real Phoenix, hypothesis choosing how writes and reads interleave ---------------------

_pool = itertools.count()


@pytest.fixture(scope="module")
def feed_project(phoenix_server: PhoenixServer) -> tuple[str, list[str]]:
    project = f"gw-feed-{uuid.uuid4().hex[:6]}"
    with PhoenixSeeder(phoenix_server.base_url) as seeder:
        seeder.create_project(project)
        sessions, _, _ = seed_sessions(seeder, project, 60)
    return project, sessions


operations = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(0, 2), st.sampled_from(["good", "bad", "meh"])),
        st.tuples(st.just("read"), st.integers(1, 4), st.just("")),
    ),
    min_size=2,
    max_size=8,
)


@pytest.mark.phoenix
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations)
# Two upserts of one key within the same second: Phoenix gives both the same updated_at.
@example(
    ops=[("read", 1, ""), ("write", 0, "meh"), ("read", 1, ""), ("write", 0, "meh"), ("write", 0, "bad")]
)
async def test_writes_interleaved_with_reads_are_never_skipped(
    phoenix_server: PhoenixServer, feed_project: tuple[str, list[str]], ops: list[tuple[str, int, str]]
) -> None:
    project, sessions = feed_project
    start = next(_pool) * 3 % len(sessions)
    # Each example its own sessions while they last (reused ones hold older, earlier writes).
    mine = sessions[start : start + 3]
    provider = build_provider(
        PhoenixSourceConfig(name="px", base_url=phoenix_server.base_url, project=project)
    )  # type: ignore[arg-type]
    federation = Federation([provider], CacheConfig(ttl_s=300), cursor_secret=SECRET)
    query = FederatedQuery(subject_ids=tuple(mine))
    delivered: list[Record] = []
    since: str | None = None
    last_written: dict[str, str] = {}
    try:
        for op, arg, label in ops:
            if op == "write":
                session = mine[arg]
                await federation.write(
                    "px", [AnnotationWrite(subject_id=session, name="verdict", label=label)]
                )
                last_written[session] = label
            else:
                page = await federation.changes(query, since=since, limit=arg)
                keys = [(r.updated_us, r.id) for r in page.records]
                assert keys == sorted(keys)
                delivered.extend(page.records)
                since = page.next_since
        rest, _ = await drain(federation, query, since, 2)
        delivered.extend(rest)
    finally:
        await federation.aclose()
    # Every subject's last write is delivered (earlier versions of one key may be overwritten
    # before anyone reads them: an upsert replaces, vendors keep no history).
    final = {}
    for record in sorted(delivered, key=lambda r: (r.updated_us, r.id)):
        final[record.subject_id] = record.label
    assert {s: final.get(s) for s in last_written} == last_written


async def test_a_failing_source_keeps_its_watermark_until_it_answers(
    datadog_sim: DatadogSimulator, datadog_switches: DatadogSimulator
) -> None:
    """Two simulators as two sources: while "b" fails, the feed moves on with "a" (partial) and
    "b"'s changes — older than what "a" delivered meanwhile — come once it answers again."""
    run = uuid.uuid4().hex[:6]
    ids = [f"{run}-{i}" for i in range(4)]
    datadog_sim.seed({"queues": [{"name": f"a-{run}", "label_schemas": SCORE_LABELS, "interactions": [
        timed_interaction(c, f"a-{c}", 100 + i, 1) for i, c in enumerate(ids)]}]})  # fmt: skip
    datadog_switches.seed({"queues": [{"name": f"b-{run}", "label_schemas": SCORE_LABELS, "interactions": [
        timed_interaction(c, f"b-{c}", 10 + i, 2) for i, c in enumerate(ids)]}]})  # fmt: skip
    a = DatadogProvider.from_config(
        datadog_sim.source_config("a", retry_attempts=1), environ=datadog_sim.environ
    )
    b = DatadogProvider.from_config(
        datadog_switches.source_config("b", retry_attempts=1), environ=datadog_switches.environ
    )
    # A high breaker threshold: this test is about the feed, not about the circuit opening.
    federation = Federation(
        [a, b], CacheConfig(enabled=False), cursor_secret=SECRET, breaker_failure_threshold=1000
    )
    query = FederatedQuery(subject_ids=tuple(ids))
    try:
        datadog_switches.configure(fail_next=1000)
        down = await federation.changes(query, since=None, limit=100)
        assert down.partial
        assert {r.source for r in down.records} == {"a"}
        assert len(down.records) == 4
        still = await federation.changes(query, since=down.next_since, limit=100)
        assert still.records == []
        assert still.partial
        datadog_switches.configure(fail_next=0)
        # b's changes are older than a's watermark (minutes, far past the overlap): still delivered.
        back = await federation.changes(query, since=still.next_since, limit=100)
        assert not back.partial
        assert sorted(r.subject_id for r in back.records) == sorted(ids)
        assert {r.source for r in back.records} == {"b"}
        done = await federation.changes(query, since=back.next_since, limit=100)
        assert done.records == []
    finally:
        await federation.aclose()
