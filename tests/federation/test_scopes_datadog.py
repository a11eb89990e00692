"""Scopes over the Datadog simulator (SPEC §7), over real HTTP.

Three queues in two Datadog projects, one content id in two queues. ``scope=all`` must return
exactly the union of the id queries over every content id, each annotation once, at small page
sizes; the scope narrows by ``scope_queue_ids``, ``scope_project_ids``, ``scope_subject_kinds``
and the ``queue`` filter; discovery is cached until its TTL; a failing discovery is a partial
answer naming the source. Expectations come from the seed and the id queries, not the scope path.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import pytest

from annotation_gateway.errors import RequestValidationError, SourceError
from annotation_gateway.federation import FederatedQuery, Federation
from annotation_gateway.model import SubjectKind
from annotation_gateway.providers.datadog import DatadogProvider
from annotation_gateway.records import Record
from annotation_gateway.settings import CacheConfig
from tests.plugins.datadog import DatadogSimulator

LABELS: list[dict[str, Any]] = [
    {"name": "quality", "type": "score", "min": 0, "max": 5},
    {"name": "topic", "type": "categorical", "values": ["billing", "bug", "other"]},
]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def interactions(prefix: str, n: int, kind: str = "trace") -> list[dict[str, Any]]:
    return [
        {
            "type": kind,
            "content_id": f"{prefix}-{i:02d}",
            "annotations": [
                {
                    "user": user,
                    "id": f"{prefix}-{i:02d}-{user}",
                    "modified_at": f"2026-02-0{1 + i % 5}T0{i % 10}:00:00Z",
                    "label_values": [
                        {"label": "quality", "value": (i % 5) + 0.5},
                        {"label": "topic", "value": ["billing", "bug", "other"][i % 3]},
                    ],
                }
                for user in ("alice", "bob")[: 1 + i % 2]
            ],
        }
        for i in range(n)
    ]


def seed() -> dict[str, Any]:
    shared = {
        "type": "trace",
        "content_id": "shared-trace",
        "annotations": [
            {"user": "carol", "id": "shared-carol", "label_values": [{"label": "quality", "value": 2}]}
        ],
    }
    return {
        "queues": [
            {
                "name": "support",
                "project_id": "proj-a",
                "label_schemas": LABELS,
                "interactions": [*interactions("sup", 12), shared],
            },
            {
                "name": "billing",
                "project_id": "proj-a",
                "label_schemas": LABELS,
                "interactions": interactions("bil", 7, kind="session"),
            },
            {
                "name": "research",
                "project_id": "proj-b",
                "label_schemas": LABELS,
                "interactions": [*interactions("res", 9), shared],
            },
        ]
    }


@asynccontextmanager
async def federation_for(
    sim: DatadogSimulator, clock: Clock | None = None, **scope: Any
) -> AsyncIterator[Federation]:
    provider = DatadogProvider.from_config(sim.source_config("dd", **scope), environ=sim.environ)
    federation = Federation(
        [provider],
        CacheConfig(ttl_s=30, max_stale_s=300),
        cursor_secret=b"scope-secret" * 3,
        clock=clock or Clock(),
    )
    try:
        yield federation
    finally:
        await federation.aclose()


async def page_through(federation: Federation, query: FederatedQuery) -> list[Record]:
    out: list[Record] = []
    page = await federation.query(query)
    out.extend(page.records)
    for _ in range(10_000):
        if page.next_cursor is None:
            return out
        page = await federation.query(replace(query, cursor=page.next_cursor))
        out.extend(page.records)
    raise AssertionError("paging did not end")


def content_ids(made: dict[str, Any], sim: DatadogSimulator) -> list[str]:
    return sorted(
        {
            i.content_id
            for q in sim.state.store.queues.values()
            for i in sim.state.store.queue_interactions(q.id)
        }
    )


async def test_scope_all_is_the_union_of_the_id_queries_at_small_pages(datadog_sim: DatadogSimulator) -> None:
    made = datadog_sim.seed(seed())
    ids = content_ids(made, datadog_sim)
    assert len(ids) == 12 + 7 + 9 + 1
    async with federation_for(datadog_sim) as federation:
        by_ids = await page_through(federation, FederatedQuery(subject_ids=tuple(ids), limit=1000))
        for limit in (1, 3, 7, 100):
            scoped = await page_through(federation, FederatedQuery(scope="all", limit=limit))
            assert sorted(r.id for r in scoped) == sorted(r.id for r in by_ids)
            assert len({r.id for r in scoped}) == len(scoped)  # each once
            # Subject order, newest first within a subject.
            keys = [(r.subject_id, -r.updated_us, r.id) for r in scoped]
            assert keys == sorted(keys)
        first = await federation.query(FederatedQuery(scope="all", limit=5))
    [status] = first.sources
    assert status.status == "ok"
    assert status.scanned_subjects is not None
    assert 1 <= status.scanned_subjects <= len(ids)
    assert status.count >= 5
    # The content id in two queues has one annotation in each: both, each once.
    assert sorted(r.queue_name for r in by_ids if r.subject_id == "shared-trace") == ["research", "support"]


async def test_scope_narrows_by_config_and_queue_filter(datadog_sim: DatadogSimulator) -> None:
    made = datadog_sim.seed(seed())
    queue_of = {q["name"]: q["id"] for q in made["queues"]}
    async with federation_for(datadog_sim) as federation:
        everything = await page_through(federation, FederatedQuery(scope="all", limit=1000))

    def expect(keep: Any) -> list[str]:
        return sorted(r.id for r in everything if keep(r))

    async with federation_for(datadog_sim, scope_queue_ids=[queue_of["research"]]) as federation:
        got = await page_through(federation, FederatedQuery(scope="all", limit=4))
    assert sorted(r.id for r in got) == expect(lambda r: r.queue_name == "research")
    # The shared trace also sits in "support": those annotations are outside this scope.
    assert expect(lambda r: r.queue_name == "research") != expect(
        lambda r: r.subject_id.startswith("res") or r.subject_id == "shared-trace"
    )

    async with federation_for(datadog_sim, scope_project_ids=["proj-a"]) as federation:
        got = await page_through(federation, FederatedQuery(scope="all", limit=4))
        by_queue_name = await page_through(
            federation, FederatedQuery(scope="all", queues=("billing",), limit=4)
        )
        by_queue_id = await page_through(
            federation, FederatedQuery(scope="all", queues=(queue_of["support"],))
        )
        research = await federation.query(FederatedQuery(scope="all", queues=("research",)))
    assert sorted(r.id for r in got) == expect(lambda r: r.queue_name in {"support", "billing"})
    assert sorted(r.id for r in by_queue_name) == expect(lambda r: r.queue_name == "billing")
    assert sorted(r.id for r in by_queue_id) == expect(lambda r: r.queue_name == "support")
    assert research.records == []  # in another project: outside this scope

    async with federation_for(datadog_sim, scope_subject_kinds=["session"]) as federation:
        got = await page_through(federation, FederatedQuery(scope="all", limit=3))
        traces = await federation.query(FederatedQuery(scope="all", subject_kinds=(SubjectKind.TRACE,)))
    assert sorted(r.id for r in got) == expect(lambda r: r.subject_kind == "session")
    assert traces.records == []
    assert traces.sources[0].status == "skipped"
    assert "enumerates session" in traces.sources[0].error["reason"]  # type: ignore[index]


async def test_queue_filter_applies_to_id_queries_too(datadog_sim: DatadogSimulator) -> None:
    datadog_sim.seed(seed())
    async with federation_for(datadog_sim) as federation:
        page = await federation.query(FederatedQuery(subject_ids=("shared-trace",), queues=("research",)))
    assert [r.queue_name for r in page.records] == ["research"]


async def test_discovery_is_cached_until_its_ttl(datadog_sim: DatadogSimulator) -> None:
    made = datadog_sim.seed(seed())
    clock = Clock()
    async with federation_for(datadog_sim, clock) as federation:
        before = await page_through(federation, FederatedQuery(scope="all", limit=1000))
        listings = [r for r in datadog_sim.requests if r.path.endswith("/annotation-queues")]
        assert len(listings) == 1
        datadog_sim.seed(
            {"queues": [{"id": made["queues"][1]["id"], "name": "billing", "project_id": "proj-a",
                         "interactions": interactions("late", 1, kind="session")}]}
        )  # fmt: skip
        cached = await page_through(federation, FederatedQuery(scope="all", limit=1000))
        assert sorted(r.id for r in cached) == sorted(r.id for r in before)
        assert len([r for r in datadog_sim.requests if r.path.endswith("/annotation-queues")]) == 1
        clock.now += 31  # past the TTL: discovery runs again and finds the new session
        after = await page_through(federation, FederatedQuery(scope="all", limit=1000))
    added = {r.subject_id for r in after} - {r.subject_id for r in before}
    assert added == {"late-00"}


async def test_failing_discovery_is_partial_and_named_never_short(datadog_sim: DatadogSimulator) -> None:
    datadog_sim.seed(seed())
    async with federation_for(datadog_sim) as federation:
        datadog_sim.configure(fail_next=100)
        with pytest.raises(SourceError, match="dd") as raised:
            await federation.query(FederatedQuery(scope="all"))
        # The only source failed: the whole answer is that source's error (never an empty page).
        assert raised.value.source == "dd"


def test_scope_and_ids_together_or_neither_are_refused() -> None:
    with pytest.raises(RequestValidationError, match="not both"):
        FederatedQuery(scope="all", subject_ids=("a",))
    with pytest.raises(RequestValidationError, match="scope=all"):
        FederatedQuery()
