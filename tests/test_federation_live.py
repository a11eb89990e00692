"""Federation over the real providers: a real Phoenix and the Datadog simulator, over real HTTP.

Both vendors are seeded with annotations on the same sessions; the federation must merge them
into one ordered list, page through it exactly once at any page size, skip Datadog for
identifier-only queries, report a failing Datadog as a partial answer, and read its own writes.
Expectations are computed from what was seeded, not from the providers.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from annotation_gateway.devservers.phoenix import PhoenixSeeder
from annotation_gateway.errors import SourceUnavailableError
from annotation_gateway.federation import FederatedQuery, Federation
from annotation_gateway.model import Annotation, AnnotationWrite, ProviderKind
from annotation_gateway.providers import build_provider
from annotation_gateway.providers.phoenix import PhoenixSourceConfig
from annotation_gateway.settings import CacheConfig
from tests.plugins.datadog import DatadogSimulator
from tests.plugins.phoenix import PhoenixProject

pytestmark = pytest.mark.phoenix

PHOENIX = "phoenix-live"
DATADOG = "datadog-live"
NAMES = ("correctness", "helpfulness")
IDENTIFIERS = ("", "judge-b")


@dataclass
class Live:
    federation: Federation
    sessions: list[str]
    project: str
    phoenix_count: int
    datadog_count: int
    sim: DatadogSimulator


def order_key(a: Annotation) -> tuple[float, str]:
    return (-a.updated_at.timestamp(), a.id)


def seed_both(project: PhoenixProject, sim: DatadogSimulator) -> tuple[int, int]:
    """The same sessions annotated on both sides; returns how many canonical annotations each
    side must yield (Phoenix: one per row; Datadog: one per set label value)."""
    wire = [
        {
            "session_id": session_id,
            "name": name,
            "identifier": identifier,
            "annotator_kind": "HUMAN" if identifier == "" else "LLM",
            "result": {"label": "good" if (i + j) % 2 else "bad", "score": float((i + j) % 3)},
            "metadata": {"i": i},
        }
        for i, session_id in enumerate(project.session_ids)
        for j, (name, identifier) in enumerate((n, ident) for n in NAMES for ident in IDENTIFIERS)
    ]
    with PhoenixSeeder(project.base_url) as seeder:
        seeder.annotate_sessions(wire)

    users = ("alice", "bob")
    sim.seed(
        {
            "queues": [
                {
                    "name": f"support-{uuid.uuid4().hex[:6]}",
                    "label_schemas": [
                        {"name": "correctness", "type": "categorical", "values": ["good", "bad"]},
                        {"name": "quality", "type": "score", "min": 0, "max": 5, "is_integer": True},
                        {"name": "resolved", "type": "boolean"},
                    ],
                    "interactions": [
                        {
                            "type": "session",
                            "content_id": session_id,
                            "annotations": [
                                {
                                    "user": user,
                                    "label_values": {
                                        "correctness": ["good" if (i + k) % 2 else "bad"],
                                        "quality": (i + k) % 6,
                                        "resolved": bool(k),
                                    },
                                }
                                for k, user in enumerate(users)
                            ],
                        }
                        for i, session_id in enumerate(project.session_ids)
                    ],
                }
            ]
        }
    )
    return len(wire), len(project.session_ids) * len(users) * 3


@pytest.fixture
async def live(phoenix_project: PhoenixProject, datadog_sim: DatadogSimulator) -> AsyncIterator[Live]:
    phoenix_count, datadog_count = seed_both(phoenix_project, datadog_sim)
    providers = [
        build_provider(
            PhoenixSourceConfig(
                name=PHOENIX, base_url=phoenix_project.base_url, project=phoenix_project.project
            )  # type: ignore[arg-type]
        ),
        build_provider(datadog_sim.source_config(DATADOG, retry_attempts=1), environ=datadog_sim.environ),
    ]
    federation = Federation(
        providers, CacheConfig(ttl_s=60, max_stale_s=600), cursor_secret=b"live-secret" * 3
    )
    try:
        yield Live(
            federation,
            phoenix_project.session_ids,
            phoenix_project.project,
            phoenix_count,
            datadog_count,
            datadog_sim,
        )
    finally:
        await federation.aclose()


def query(live: Live, **kw: Any) -> FederatedQuery:
    return FederatedQuery(subject_ids=tuple(live.sessions), **kw)


async def walk(federation: Federation, q: FederatedQuery, sizes: list[int]) -> list[Annotation]:
    seen: list[Annotation] = []
    cursor: str | None = None
    for step in range(10_000):
        page = await federation.query(replace(q, cursor=cursor, limit=sizes[step % len(sizes)]))
        assert not page.partial
        seen.extend(page.data)
        cursor = page.next_cursor
        if cursor is None:
            return seen
    raise AssertionError("paging did not end")


async def test_cross_vendor_merge(live: Live) -> None:
    page = await live.federation.query(query(live, limit=1000))
    status = {s.source: s for s in page.sources}
    assert (status[PHOENIX].status, status[DATADOG].status) == ("ok", "ok")
    assert status[PHOENIX].count == live.phoenix_count
    assert status[DATADOG].count == live.datadog_count
    assert len(page.data) == live.phoenix_count + live.datadog_count
    assert page.next_cursor is None
    assert not page.partial
    assert {a.provider for a in page.data} == {ProviderKind.PHOENIX, ProviderKind.DATADOG}
    assert {a.subject.id for a in page.data} == set(live.sessions)
    assert len({a.id for a in page.data}) == len(page.data)
    assert page.data == sorted(page.data, key=order_key)
    assert all(a.raw is None for a in page.data)
    # Both sides carry a "correctness" label on every session: the merged answer can be compared.
    for session_id in live.sessions:
        labels = {
            a.provider: a.label for a in page.data if a.subject.id == session_id and a.name == "correctness"
        }
        assert set(labels) == {ProviderKind.PHOENIX, ProviderKind.DATADOG}


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(sizes=st.lists(st.integers(1, 9), min_size=1, max_size=4))
async def test_paging_over_both_vendors_is_exactly_once(live: Live, sizes: list[int]) -> None:
    everything = (await live.federation.query(query(live, limit=1000))).data
    seen = await walk(live.federation, query(live), sizes)
    assert [a.id for a in seen] == [a.id for a in everything]


async def test_paging_without_cache_refetches_and_still_is_exactly_once(live: Live) -> None:
    everything = (await live.federation.query(query(live, limit=1000))).data
    before = len(live.sim.requests)
    seen = await walk(live.federation, query(live, use_cache=False), [7])
    assert [a.id for a in seen] == [a.id for a in everything]
    assert len(live.sim.requests) > before + 1, "every no-cache page asked Datadog again"


async def test_gateway_filters_over_both(live: Live) -> None:
    page = await live.federation.query(query(live, names=("correctness",), limit=1000))
    assert {a.name for a in page.data} == {"correctness"}
    assert {a.provider for a in page.data} == {ProviderKind.PHOENIX, ProviderKind.DATADOG}
    projects = await live.federation.query(query(live, projects=(live.project,), limit=1000))
    status = {s.source: s for s in projects.sources}
    assert status[DATADOG].status == "skipped"
    assert status[PHOENIX].count == live.phoenix_count


async def test_identifier_only_skips_datadog(live: Live) -> None:
    page = await live.federation.query(FederatedQuery(identifiers=("judge-b",), limit=1000))
    status = {s.source: s for s in page.sources}
    assert status[DATADOG].status == "skipped"
    assert status[DATADOG].error is not None
    assert status[PHOENIX].status == "ok"
    assert {a.identifier for a in page.data} == {"judge-b"}
    assert len(page.data) == live.phoenix_count // len(IDENTIFIERS)


async def test_failing_datadog_gives_a_partial_answer_then_deny_fails(live: Live) -> None:
    live.sim.configure(fail_next=100, fail_status=503)
    page = await live.federation.query(query(live, limit=1000, use_cache=False))
    status = {s.source: s for s in page.sources}
    assert page.partial
    assert status[DATADOG].status == "error"
    assert status[DATADOG].error is not None
    assert status[DATADOG].error["code"] == "source_unavailable"
    assert status[PHOENIX].status == "ok"
    assert len(page.data) == live.phoenix_count
    with pytest.raises(SourceUnavailableError):
        await live.federation.query(query(live, limit=1000, use_cache=False, partial="deny"))


async def test_datadog_down_serves_stale_from_cache(live: Live) -> None:
    fresh = await live.federation.query(query(live, limit=1000))
    live.sim.configure(fail_next=100, fail_status=503)
    # no-cache skips the fresh entry; the explicit max-stale opt-in lets it stand in (issue 15:
    # without it a no-cache query reports Datadog as failed, checked below).
    stale = await live.federation.query(query(live, limit=1000, use_cache=False, max_stale_s=300))
    status = {s.source: s for s in stale.sources}
    assert status[DATADOG].stale
    assert not stale.partial
    assert [a.id for a in stale.data] == [a.id for a in fresh.data]
    refused = await live.federation.query(query(live, limit=1000, use_cache=False))
    assert refused.partial
    assert {s.source: s.status for s in refused.sources}[DATADOG] == "error"
    live.sim.configure(fail_next=0)


async def test_concurrent_identical_queries_make_one_datadog_call(live: Live) -> None:
    live.sim.state.requests.clear()
    pages = await asyncio.gather(*(live.federation.query(query(live, limit=1000)) for _ in range(20)))
    reads = [r for r in live.sim.requests if "annotated-interactions" in r.path]
    assert len(reads) == 1
    assert all(len(p.data) == live.phoenix_count + live.datadog_count for p in pages)


async def test_write_to_phoenix_is_read_back(live: Live) -> None:
    q = query(live, names=("tone",), limit=1000)
    assert (await live.federation.query(q)).data == []
    result = await live.federation.write(
        PHOENIX, [AnnotationWrite(subject_id=live.sessions[0], name="tone", label="friendly")]
    )
    page = await live.federation.query(q)
    assert [a.id for a in page.data] == list(result.ids)
    assert page.data[0].label == "friendly"
