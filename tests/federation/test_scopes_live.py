"""Scopes over a real Phoenix and the Datadog simulator, over real HTTP (SPEC §7).

A Phoenix project of 1,000 sessions (one trace each, spans created through Phoenix's REST API)
with 5,000 annotations, beside a simulator holding three queues in two Datadog projects (one
content id in two queues). ``scope=all`` must equal the union of the id queries over every
subject, each annotation once, at several page sizes; narrowing by ``scope_subject_kinds``, a
source selection and a time window gives the subsets computed from the id queries; a session
added after a scope read appears once its discovery expires; a vendor failing in discovery makes
the answer partial and names it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from annotation_gateway.devservers.phoenix import PhoenixSeeder
from annotation_gateway.federation import FederatedQuery, Federation
from annotation_gateway.model import SubjectKind
from annotation_gateway.providers import build_provider
from annotation_gateway.providers.phoenix import PhoenixSourceConfig
from annotation_gateway.records import Record
from annotation_gateway.settings import CacheConfig
from tests.federation.test_scopes_datadog import Clock, page_through, seed
from tests.plugins.datadog import DatadogSimulator
from tests.plugins.phoenix import PhoenixServer, seed_sessions

pytestmark = [pytest.mark.phoenix, pytest.mark.slow]

SESSIONS = 1000
SESSION_NAMES = ("resolution", "tone", "accuracy", "helpfulness")
PX = "px-scope"
DD = "dd-scope"


@dataclass
class BigProject:
    base_url: str
    project: str
    session_ids: list[str]
    trace_ids: list[str]
    annotations: int


@pytest.fixture(scope="module")
def big_project(phoenix_server: PhoenixServer) -> BigProject:
    project = f"gw-scope-{uuid.uuid4().hex[:6]}"
    with PhoenixSeeder(phoenix_server.base_url) as seeder:
        seeder.create_project(project, "scope tests: 1,000 sessions")
        session_ids, traces_of, _ = seed_sessions(seeder, project, SESSIONS)
        trace_ids = [t for s in session_ids for t in traces_of[s]]
        sessions = [
            {
                "session_id": sid,
                "name": name,
                "identifier": "",
                "annotator_kind": ("HUMAN", "LLM", "CODE")[(i + j) % 3],
                "result": {"label": ("good", "bad")[(i + j) % 2], "score": ((i * 7 + j) % 10) / 10},
                "metadata": {},
            }
            for i, sid in enumerate(session_ids)
            for j, name in enumerate(SESSION_NAMES)
        ]
        traces = [
            {
                "trace_id": tid,
                "name": "latency_ok",
                "identifier": "",
                "annotator_kind": "CODE",
                "result": {"label": "yes"},
                "metadata": {},
            }
            for tid in trace_ids
        ]
        seeder.annotate_sessions(sessions)
        seeder.annotate_traces(traces)
    return BigProject(phoenix_server.base_url, project, session_ids, trace_ids, len(sessions) + len(traces))


@pytest.fixture
def sim(datadog_sim: DatadogSimulator) -> DatadogSimulator:
    datadog_sim.seed(seed())
    return datadog_sim


def make_federation(big: BigProject, sim: DatadogSimulator, clock: Clock, **phoenix: Any) -> Federation:
    providers = [
        build_provider(
            PhoenixSourceConfig(name=PX, base_url=big.base_url, project=big.project, **phoenix)  # type: ignore[arg-type]
        ),
        build_provider(sim.source_config(DD, retry_attempts=1), environ=sim.environ),
    ]
    return Federation(
        providers, CacheConfig(ttl_s=30, max_stale_s=300), cursor_secret=b"scope-live" * 4, clock=clock
    )


@pytest.fixture
async def federation(big_project: BigProject, sim: DatadogSimulator) -> AsyncIterator[Federation]:
    federation = make_federation(big_project, sim, Clock())
    try:
        yield federation
    finally:
        await federation.aclose()


async def by_ids(federation: Federation, big: BigProject, sim: DatadogSimulator, **kw: Any) -> list[Record]:
    """The union of the id queries over every subject the two vendors hold (≤ 10,000 a query)."""
    contents = sorted(
        {
            i.content_id
            for q in sim.state.store.queues.values()
            for i in sim.state.store.queue_interactions(q.id)
        }
    )
    ids = [*big.session_ids, *big.trace_ids, *contents]
    out: dict[str, Record] = {}
    for start in range(0, len(ids), 5000):
        q = FederatedQuery(subject_ids=tuple(ids[start : start + 5000]), limit=1000, **kw)
        for record in await page_through(federation, q):
            out[record.id] = record
    return list(out.values())


def ids_of(records: list[Record]) -> list[str]:
    return sorted(r.id for r in records)


async def test_scope_all_is_exactly_the_union_of_the_id_queries(
    federation: Federation, big_project: BigProject, sim: DatadogSimulator
) -> None:
    expected = await by_ids(federation, big_project, sim)
    phoenix = [r for r in expected if r.source == PX]
    assert len(phoenix) == big_project.annotations >= 5000
    first = await federation.query(FederatedQuery(scope="all", limit=50))
    for limit in (1000, 333):
        scoped = await page_through(federation, FederatedQuery(scope="all", limit=limit))
        assert len(scoped) == len({r.id for r in scoped})  # each once
        assert ids_of(scoped) == ids_of(expected)
    statuses = {s.source: s for s in first.sources}
    assert statuses[PX].status == "ok"
    assert statuses[DD].status == "ok"
    # A first page reads a handful of subjects, not the 2,000 of the project.
    assert 0 < (statuses[PX].scanned_subjects or 0) + (statuses[DD].scanned_subjects or 0) < 200
    assert not first.partial


async def test_small_pages_over_a_narrowed_scope(
    federation: Federation, big_project: BigProject, sim: DatadogSimulator
) -> None:
    expected = [
        r
        for r in await by_ids(federation, big_project, sim, names=("tone",))
        if r.subject_id < big_project.session_ids[40]
    ]
    # A subject-id window is not a filter the API has; names and a small page size are.
    scoped: list[Record] = []
    page = await federation.query(FederatedQuery(scope="all", names=("tone",), limit=7))
    scoped.extend(page.records)
    while page.next_cursor is not None and len(scoped) < len(expected):
        page = await federation.query(
            FederatedQuery(scope="all", names=("tone",), limit=7, cursor=page.next_cursor)
        )
        scoped.extend(page.records)
    # The scope is in subject order, so its first pages are the lowest subject ids: exactly those.
    assert ids_of(scoped[: len(expected)]) == ids_of(expected)


async def test_narrowing_by_kind_source_and_time_window(
    federation: Federation, big_project: BigProject, sim: DatadogSimulator
) -> None:
    expected = await by_ids(federation, big_project, sim)
    traces = await page_through(
        federation, FederatedQuery(scope="all", subject_kinds=(SubjectKind.TRACE,), limit=1000)
    )
    assert ids_of(traces) == ids_of([r for r in expected if r.subject_kind == "trace"])

    phoenix_only = await page_through(federation, FederatedQuery(scope="all", sources=(PX,), limit=1000))
    assert ids_of(phoenix_only) == ids_of([r for r in expected if r.source == PX])

    times = sorted(r.updated_us for r in expected if r.source == PX)
    middle = times[len(times) // 2]
    after = datetime.fromtimestamp(middle / 1e6, tz=UTC)
    windowed = await page_through(federation, FederatedQuery(scope="all", updated_after=after, limit=500))
    assert ids_of(windowed) == ids_of([r for r in expected if r.updated_us >= middle])


async def test_scope_subject_kinds_config_narrows_phoenix(
    big_project: BigProject, sim: DatadogSimulator
) -> None:
    federation = make_federation(big_project, sim, Clock(), scope_subject_kinds=["trace"])
    try:
        expected = await by_ids(federation, big_project, sim)
        scoped = await page_through(federation, FederatedQuery(scope="all", sources=(PX,), limit=1000))
    finally:
        await federation.aclose()
    assert ids_of(scoped) == ids_of([r for r in expected if r.source == PX and r.subject_kind == "trace"])


async def test_a_new_session_shows_up_when_discovery_expires(
    big_project: BigProject, sim: DatadogSimulator, phoenix_server: PhoenixServer
) -> None:
    clock = Clock()
    federation = make_federation(big_project, sim, clock)
    try:
        query = FederatedQuery(
            scope="all", sources=(PX,), subject_kinds=(SubjectKind.SESSION,), names=("late",), limit=10
        )
        assert (await federation.query(query)).records == []
        with PhoenixSeeder(phoenix_server.base_url) as seeder:
            [late], _, _ = seed_sessions(seeder, big_project.project, 1)
            seeder.annotate_sessions(
                [{"session_id": late, "name": "late", "identifier": "", "annotator_kind": "HUMAN",
                  "result": {"label": "new"}, "metadata": {}}]
            )  # fmt: skip
        assert (await federation.query(query)).records == []  # discovery still fresh: not seen yet
        clock.now += 31
        page = await federation.query(query)
        assert [(r.subject_id, r.name) for r in page.records] == [(late, "late")]
    finally:
        await federation.aclose()


async def test_a_vendor_failing_in_discovery_is_partial_and_named(
    federation: Federation, big_project: BigProject, sim: DatadogSimulator
) -> None:
    sim.configure(fail_next=50)
    page = await federation.query(FederatedQuery(scope="all", limit=100))
    statuses = {s.source: s for s in page.sources}
    assert page.partial
    assert statuses[DD].status == "error"
    assert statuses[DD].error is not None
    assert statuses[DD].error["source"] == DD
    assert statuses[PX].status == "ok"
    assert len(page.records) == 100
    assert {r.source for r in page.records} == {PX}
