"""The Datadog provider against the Datadog simulator over real HTTP, and against respx.

The simulator (``datadog_sim`` fixture) is the vendor for everything it can do: every label type,
the legacy object form, zero times, name resolution through the label schema, paging over more
than a thousand interactions, one content id in several queues, 429 then success, 5xx, bad keys.
respx (``using="httpx"``, on a client given httpx's own transport, which respx intercepts) plays Datadog for
what a healthy server never does: resets, truncated bodies, HTML pages, empty bodies.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import respx

from annotation_gateway.errors import (
    SourceAuthError,
    SourceNotFoundError,
    SourceProtocolError,
    SourceRateLimitedError,
    SourceRequestError,
    SourceTimeoutError,
    SourceUnavailableError,
    UnsupportedError,
)
from annotation_gateway.model import Annotation, AnnotationWrite, AnnotatorKind, ProviderKind, SubjectKind
from annotation_gateway.providers import build_provider
from annotation_gateway.providers.base import AnnotationProvider, SourceQuery
from annotation_gateway.providers.datadog import (
    MAX_URL_BYTES,
    AnnotationUpsert,
    DatadogProvider,
    DatadogSourceConfig,
    LabelSchema,
    LabelValueInput,
    map_label_value,
)
from annotation_gateway.simulators.datadog.store import user_id_for_name
from tests.plugins.datadog import DatadogSimulator

API = "/api/v2/llm-obs/v1"
READ = f"{API}/annotated-interactions"

LABELS: list[dict[str, Any]] = [
    {"name": "quality", "type": "score", "min": 0, "max": 5, "has_reasoning": True},
    {"name": "topic", "type": "categorical", "values": ["billing", "bug", "other"]},
    {"name": "resolved", "type": "boolean", "has_assessment": True, "has_reasoning": True},
    {"name": "feedback", "type": "text", "has_reasoning": True},
]

ALICE = user_id_for_name("alice")
BOB = user_id_for_name("bob")


def every_label_type_seed() -> dict[str, Any]:
    return {
        "queues": [
            {
                "name": "support",
                "label_schemas": LABELS,
                "interactions": [
                    {
                        "type": "session",
                        "content_id": "sess-1",
                        "created_at": "2026-01-02T03:00:00Z",
                        "annotations": [
                            {
                                "user": "alice",
                                "id": "ann-alice",
                                "created_at": "2026-01-02T04:00:00Z",
                                "modified_at": "2026-01-02T05:00:00Z",
                                "label_values": [
                                    {"label": "quality", "value": 4, "reasoning": "concise"},
                                    {"label": "topic", "value": ["billing", "bug"]},
                                    {
                                        "label": "resolved",
                                        "value": True,
                                        "assessment": "pass",
                                        "reasoning": "fixed",
                                    },
                                    {"label": "feedback", "value": "great answer", "reasoning": "why not"},
                                ],
                            },
                            {
                                "user": "bob",
                                "id": "ann-bob",
                                "label_values": [
                                    {"label": "quality", "value": 1.5},
                                    {"label": "topic", "value": "other"},
                                    {"label": "resolved", "value": False, "assessment": "fail"},
                                    {"label": "feedback", "value": ""},
                                ],
                            },
                        ],
                    },
                    {
                        "type": "trace",
                        "content_id": "trace-1",
                        "annotations": [{"user": "alice", "id": "ann-empty", "label_values": {"topic": []}}],
                    },
                    {"type": "experiment_trace", "content_id": "exp-1"},
                ],
            }
        ]
    }


@asynccontextmanager
async def provider_for(
    sim: DatadogSimulator, *, name: str = "dd", environ: dict[str, str] | None = None, **overrides: Any
) -> AsyncIterator[DatadogProvider]:
    config = sim.source_config(name, **overrides)
    provider = DatadogProvider.from_config(config, environ=environ or sim.environ)
    try:
        yield provider
    finally:
        await provider.aclose()


def by_id(annotations: list[Annotation]) -> dict[str, Annotation]:
    found = {a.id: a for a in annotations}
    assert len(found) == len(annotations), "an annotation came back twice"
    return found


def reads(sim: DatadogSimulator) -> list[Any]:
    return [r for r in sim.requests if r.path == READ]


# --- normalization ----------------------------------------------------------------------------


async def test_every_label_type_maps_to_the_canonical_fields(datadog_sim: DatadogSimulator) -> None:
    made = datadog_sim.seed(every_label_type_seed())
    queue_id = made["queues"][0]["id"]
    labels = made["queues"][0]["label_schemas"]
    async with provider_for(datadog_sim) as provider:
        assert isinstance(provider, AnnotationProvider)
        found = by_id(await provider.fetch(SourceQuery(subject_ids=("sess-1", "trace-1", "exp-1"))))

    # One canonical annotation per set label value; "" and [] are not emitted.
    assert sorted(found) == sorted(
        [f"dd:ann-alice:{labels[n]}" for n in ("quality", "topic", "resolved", "feedback")]
        + [f"dd:ann-bob:{labels[n]}" for n in ("quality", "topic", "resolved")]
    )
    score = found[f"dd:ann-alice:{labels['quality']}"]
    assert (score.name, score.label, score.score, score.explanation) == ("quality", None, 4.0, "concise")
    assert score.provider is ProviderKind.DATADOG
    assert score.source == "dd"
    assert score.subject.kind is SubjectKind.SESSION
    assert (score.subject.id, score.subject.project) == ("sess-1", None)
    assert (score.annotator.kind, score.annotator.id) == (AnnotatorKind.HUMAN, ALICE)
    assert (score.identifier, score.metadata) == ("", {})
    assert score.queue is not None
    assert (score.queue.id, score.queue.name) == (queue_id, "support")
    assert score.created_at == datetime(2026, 1, 2, 4, tzinfo=UTC)
    assert score.updated_at == datetime(2026, 1, 2, 5, tzinfo=UTC)
    interaction_id = datadog_sim.state.store.interactions_for_contents(["sess-1"])[0].id
    assert score.extensions == {
        "datadog": {
            "interaction_id": interaction_id,
            "annotation_id": "ann-alice",
            "label_schema_id": labels["quality"],
            "label_type": "score",
            "assessment": None,
            "modified_by": ALICE,
            "can_annotate": True,
            "content_id": "sess-1",
        }
    }
    assert score.raw is None

    multi = found[f"dd:ann-alice:{labels['topic']}"]
    assert (multi.label, multi.score, multi.explanation) == ("billing, bug", None, None)
    assert multi.extensions["datadog"]["values"] == ["billing", "bug"]
    single = found[f"dd:ann-bob:{labels['topic']}"]
    assert single.label == "other"
    assert single.extensions["datadog"]["values"] == ["other"]
    assert single.annotator.id == BOB

    yes = found[f"dd:ann-alice:{labels['resolved']}"]
    assert (yes.label, yes.score, yes.explanation) == ("true", 1.0, "fixed")
    assert yes.extensions["datadog"]["assessment"] == "pass"
    no = found[f"dd:ann-bob:{labels['resolved']}"]
    assert (no.label, no.score, no.explanation) == ("false", 0.0, None)
    assert no.extensions["datadog"]["assessment"] == "fail"

    text = found[f"dd:ann-alice:{labels['feedback']}"]
    assert (text.label, text.score, text.explanation) == (None, None, "great answer")
    assert text.extensions["datadog"]["reasoning"] == "why not"
    assert found[f"dd:ann-bob:{labels['quality']}"].score == 1.5


async def test_legacy_object_form_gives_the_same_annotations(datadog_sim: DatadogSimulator) -> None:
    datadog_sim.seed(every_label_type_seed())
    query = SourceQuery(subject_ids=("sess-1", "trace-1"))
    async with provider_for(datadog_sim) as provider:
        as_array = by_id(await provider.fetch(query))
    datadog_sim.configure(label_values="object")
    async with provider_for(datadog_sim) as provider:
        as_object = by_id(await provider.fetch(query))
    # The object form has no reasoning or assessment; everything else, ids included, is equal.
    assert sorted(as_object) == sorted(as_array)
    for key, annotation in as_object.items():
        expected = as_array[key]
        assert (annotation.name, annotation.label, annotation.score) == (
            expected.name,
            expected.label,
            expected.score,
        )
        if annotation.extensions["datadog"]["label_type"] == "text":
            assert annotation.explanation == expected.explanation
    schema_reads = [r for r in datadog_sim.requests if r.path.endswith("/label-schema")]
    assert len(schema_reads) == 1  # the object form needs the schema for ids and types


async def test_zero_time_falls_back_to_the_interaction(datadog_sim: DatadogSimulator) -> None:
    datadog_sim.seed(every_label_type_seed())
    datadog_sim.configure(zero_time=True)
    async with provider_for(datadog_sim) as provider:
        found = await provider.fetch(SourceQuery(subject_ids=("sess-1",)))
    interaction = datadog_sim.state.store.interactions_for_contents(["sess-1"])[0]
    assert found
    assert {(a.created_at, a.updated_at) for a in found} == {
        (interaction.created_at, interaction.modified_at)
    }
    assert interaction.created_at == datetime(2026, 1, 2, 3, tzinfo=UTC)


async def test_names_resolve_through_the_label_schema_once_per_queue(datadog_sim: DatadogSimulator) -> None:
    made = datadog_sim.seed(every_label_type_seed())
    labels = made["queues"][0]["label_schemas"]
    datadog_sim.configure(name_when_saved=False)
    async with provider_for(datadog_sim) as provider:
        first = by_id(await provider.fetch(SourceQuery(subject_ids=("sess-1",))))
        again = by_id(await provider.fetch(SourceQuery(subject_ids=("sess-1", "trace-1"))))
    assert {a.name for a in first.values()} == {"quality", "topic", "resolved", "feedback"}
    assert first[f"dd:ann-alice:{labels['topic']}"].name == "topic"
    assert sorted(again) == sorted(first)
    schema_reads = [r for r in datadog_sim.requests if r.path.endswith("/label-schema")]
    assert len(schema_reads) == 1  # cached for the provider's life


async def test_a_label_gone_from_the_schema_is_named_by_its_id(datadog_sim: DatadogSimulator) -> None:
    made = datadog_sim.seed(every_label_type_seed())
    queue_id = made["queues"][0]["id"]
    topic_id = made["queues"][0]["label_schemas"]["topic"]
    datadog_sim.state.store.replace_label_schema(
        queue_id, [label for label in LABELS if label["name"] != "topic"], user_id="admin"
    )
    datadog_sim.configure(name_when_saved=False)
    async with provider_for(datadog_sim) as provider:
        found = by_id(await provider.fetch(SourceQuery(subject_ids=("sess-1",))))
    orphan = found[f"dd:ann-alice:{topic_id}"]
    assert orphan.name == topic_id
    assert orphan.label == "billing, bug"  # the answer still says the type
    assert found[f"dd:ann-alice:{made['queues'][0]['label_schemas']['quality']}"].name == "quality"


async def test_one_content_id_in_several_queues(datadog_sim: DatadogSimulator) -> None:
    doc = {
        "queues": [
            {
                "name": f"queue-{n}",
                "label_schemas": [{"name": "quality", "type": "score"}],
                "interactions": [
                    {
                        "type": "trace",
                        "content_id": "shared",
                        "annotations": [{"user": "alice", "label_values": {"quality": n}}],
                    }
                ],
            }
            for n in range(3)
        ]
    }
    made = datadog_sim.seed(doc)
    async with provider_for(datadog_sim) as provider:
        found = await provider.fetch(SourceQuery(subject_ids=("shared",)))
    assert len(found) == 3
    assert sorted((a.queue.name if a.queue else None, a.score) for a in found) == [
        ("queue-0", 0.0),
        ("queue-1", 1.0),
        ("queue-2", 2.0),
    ]
    assert {a.queue.id for a in found if a.queue} == {q["id"] for q in made["queues"]}


async def test_filters_are_applied_after_normalization(datadog_sim: DatadogSimulator) -> None:
    datadog_sim.seed(every_label_type_seed())
    ids = ("sess-1", "trace-1", "exp-1")
    async with provider_for(datadog_sim) as provider:
        named = await provider.fetch(SourceQuery(subject_ids=ids, names=("quality", "topic")))
        assert Counter(a.name for a in named) == {"quality": 2, "topic": 2}
        excluded = await provider.fetch(SourceQuery(subject_ids=ids, exclude_names=("quality",)))
        assert "quality" not in {a.name for a in excluded}
        assert len(excluded) == 5
        kinds = await provider.fetch(SourceQuery(subject_ids=ids, subject_kinds=(SubjectKind.TRACE,)))
        assert kinds == []  # the trace's only annotation is unset
        sessions = await provider.fetch(SourceQuery(subject_ids=ids, subject_kinds=(SubjectKind.SESSION,)))
        assert len(sessions) == 7
        assert await provider.fetch(SourceQuery(subject_ids=ids, identifiers=("",))) != []
        before = len(datadog_sim.requests)
        assert await provider.fetch(SourceQuery(subject_ids=ids, identifiers=("v1",))) == []
        assert await provider.fetch(SourceQuery(subject_ids=ids, subject_kinds=(SubjectKind.SPAN,))) == []
        assert len(datadog_sim.requests) == before  # nothing can match: no call made
        with pytest.raises(UnsupportedError):
            await provider.fetch(SourceQuery(identifiers=("",)))


async def test_include_raw_keeps_the_annotation_and_its_interaction(datadog_sim: DatadogSimulator) -> None:
    datadog_sim.seed(every_label_type_seed())
    async with provider_for(datadog_sim) as provider:
        found = await provider.fetch(SourceQuery(subject_ids=("sess-1",), include_raw=True))
    raw = found[0].raw
    assert raw is not None
    assert raw["annotation"]["id"] in ("ann-alice", "ann-bob")
    assert isinstance(raw["annotation"]["label_values"], list)
    assert raw["interaction"]["content_id"] == "sess-1"
    assert "annotations" not in raw["interaction"]
    assert found[0].model_dump(mode="json")["raw"] == raw


# --- paging, chunking, concurrency ------------------------------------------------------------


async def test_more_than_a_thousand_interactions_each_annotation_exactly_once(
    datadog_sim: DatadogSimulator,
) -> None:
    contents = [f"session-{n:05d}" for n in range(1100)]
    doc = {
        "queues": [
            {
                "name": "bulk",
                "label_schemas": [{"name": "quality", "type": "score"}, {"name": "ok", "type": "boolean"}],
                "interactions": [
                    {
                        "type": "session",
                        "content_id": c,
                        "annotations": [
                            {"user": "alice", "label_values": {"quality": n % 5, "ok": n % 2 == 0}},
                            *([{"user": "bob", "label_values": {"quality": 1}}] if n % 10 == 0 else []),
                        ],
                    }
                    for n, c in enumerate(contents)
                ],
            }
        ]
    }
    datadog_sim.seed(doc)
    datadog_sim.configure(latency_ms=2)
    query = SourceQuery(subject_ids=(*contents, *contents[:50], "unknown-1"))
    async with provider_for(datadog_sim, page_size=7, max_concurrency=4) as provider:
        found = await provider.fetch(query)
    assert len(found) == 1100 * 2 + 110
    assert len({a.id for a in found}) == len(found)
    assert {a.subject.id for a in found} == set(contents)
    calls = reads(datadog_sim)
    assert all(r.status == 200 for r in calls)
    assert 1 < datadog_sim.state.max_in_flight <= 4
    for call in calls:
        assert len(call.path) + len(call.raw_query) + len("http://127.0.0.1:65535?") <= MAX_URL_BYTES
        ids = [v for k, v in call.query if k == "contentIds"]
        assert len(ids) == len(set(ids))
        assert all("," not in v for v in ids)  # repeated keys, never comma-joined
        assert dict(call.query)["limit"] == "7"
    chunks = {tuple(v for k, v in c.query if k == "contentIds") for c in calls}
    assert len(chunks) > 1  # 1,101 ids do not fit one 8 KiB URL
    assert sorted(i for chunk in chunks for i in chunk) == sorted([*contents, "unknown-1"])


async def test_server_capped_page_size_and_stable_totals_are_followed(datadog_sim: DatadogSimulator) -> None:
    contents = [f"t-{n}" for n in range(45)]
    datadog_sim.seed(
        {
            "queues": [
                {
                    "name": "q",
                    "label_schemas": [{"name": "s", "type": "score"}],
                    "interactions": [
                        {"type": "trace", "content_id": c, "annotations": [{"label_values": {"s": 1}}]}
                        for c in contents
                    ],
                }
            ]
        }
    )
    async with provider_for(datadog_sim, page_size=10) as provider:
        found = await provider.fetch(SourceQuery(subject_ids=tuple(contents)))
    assert len(found) == 45
    offsets = sorted(int(dict(r.query)["offset"]) for r in reads(datadog_sim))
    assert offsets == [0, 10, 20, 30, 40]


# --- faults over real HTTP --------------------------------------------------------------------


async def test_rate_limited_then_success_honouring_the_reset(datadog_sim: DatadogSimulator) -> None:
    datadog_sim.seed(every_label_type_seed())
    datadog_sim.configure(rate_limit={"limit": 1, "period_s": 1})
    async with provider_for(datadog_sim) as provider:
        await provider.fetch(SourceQuery(subject_ids=("sess-1",)))
        started = time.monotonic()
        found = await provider.fetch(SourceQuery(subject_ids=("sess-1",)))
        waited = time.monotonic() - started
    assert len(found) == 7
    assert [r.status for r in reads(datadog_sim)] == [200, 429, 200]
    assert waited >= 0.5  # it waited for X-RateLimit-Reset instead of hammering


async def test_rate_limit_that_outlasts_the_retries_is_reported(datadog_sim: DatadogSimulator) -> None:
    datadog_sim.seed(every_label_type_seed())
    datadog_sim.configure(rate_limit={"limit": 1, "period_s": 60})
    async with provider_for(datadog_sim, retry_attempts=2, max_retry_after_s=0.05) as provider:
        await provider.fetch(SourceQuery(subject_ids=("sess-1",)))
        with pytest.raises(SourceRateLimitedError) as limited:
            await provider.fetch(SourceQuery(subject_ids=("sess-1",)))
    assert limited.value.retry_after is not None
    assert 1 <= limited.value.retry_after <= 60
    assert [r.status for r in reads(datadog_sim)] == [200, 429, 429]


async def test_5xx_is_retried_then_reported(datadog_sim: DatadogSimulator) -> None:
    datadog_sim.seed(every_label_type_seed())
    async with provider_for(datadog_sim, retry_attempts=3) as provider:
        datadog_sim.configure(fail_next=2)
        assert len(await provider.fetch(SourceQuery(subject_ids=("sess-1",)))) == 7
        datadog_sim.configure(fail_next=3, fail_status=503)
        with pytest.raises(SourceUnavailableError) as failed:
            await provider.fetch(SourceQuery(subject_ids=("sess-1",)))
    assert failed.value.upstream_status == 503
    assert failed.value.retryable
    assert [r.status for r in reads(datadog_sim)] == [500, 500, 200, 503, 503, 503]


async def test_bad_keys_are_an_auth_error_that_never_shows_the_keys(datadog_sim: DatadogSimulator) -> None:
    environ = {"TEST_DD_API_KEY": "wrong-api-key-abcdef", "TEST_DD_APP_KEY": datadog_sim.app_key}
    async with provider_for(datadog_sim, environ=environ) as provider:
        with pytest.raises(SourceAuthError) as refused:
            await provider.fetch(SourceQuery(subject_ids=("sess-1",)))
        health = await provider.health()
    assert refused.value.upstream_status == 403
    assert "Forbidden" in refused.value.detail
    text = f"{refused.value} {refused.value.problem()} {health} {provider!r}"
    assert "wrong-api-key-abcdef" not in text
    assert datadog_sim.app_key not in text
    assert not health.ok
    assert health.detail is not None
    assert "403" in health.detail
    assert len(reads(datadog_sim)) == 2  # a 403 is not retried


async def test_health_and_write(datadog_sim: DatadogSimulator) -> None:
    async with provider_for(datadog_sim) as provider:
        report = await provider.health()
        assert report.ok
        assert report.latency_ms >= 0
        with pytest.raises(UnsupportedError):
            await provider.write([AnnotationWrite(subject_id="s", name="n", label="x")])
        assert provider.capabilities.needs_subject_ids
        assert provider.capabilities.pushdown == frozenset({"subject_ids"})
        assert provider.capabilities.writable_kinds == frozenset()
    closed = DatadogProvider.from_config(
        DatadogSourceConfig(name="gone", base_url="http://127.0.0.1:9", api_key_env="K", app_key_env="A"),
        environ={"K": "k-123456", "A": "a-123456"},
    )
    try:
        down = await closed.health()
        assert not down.ok
        # The transport reports a refused connection as one (ConnectError), never as a timeout.
        with pytest.raises(SourceUnavailableError) as failed:
            await closed.fetch(SourceQuery(subject_ids=("x",)))
        assert failed.value.retryable
    finally:
        await closed.aclose()


async def test_build_provider_and_sites() -> None:
    env = {"K": "k-123456", "A": "a-123456"}
    provider = build_provider(
        DatadogSourceConfig(name="eu", site="datadoghq.eu", api_key_env="K", app_key_env="A"), environ=env
    )
    try:
        assert isinstance(provider, DatadogProvider)
        assert "https://api.datadoghq.eu" in repr(provider)
        assert "k-123456" not in repr(provider)
    finally:
        await provider.aclose()


# --- queue operations (used by migrate) -------------------------------------------------------


async def test_queue_operations_build_data_the_read_path_sees(datadog_sim: DatadogSimulator) -> None:
    async with provider_for(datadog_sim) as provider:
        queue = await provider.queues.create_queue(
            "migrated",
            project_id="support-bot",
            description="from phoenix",
            label_schemas=[LabelSchema(name="quality", type="score", min=0, max=5)],
        )
        assert queue.label_schemas[0].id
        labels = await provider.queues.replace_label_schema(
            queue.id,
            [
                LabelSchema(name="quality", type="score", min=0, max=5, has_reasoning=True),
                LabelSchema(name="topic", type="categorical", values=["a", "b"]),
            ],
        )
        ids = {label.name: label.id for label in labels}
        assert ids["quality"] == queue.label_schemas[0].id
        assert await provider.queues.get_label_schema(queue.id) == labels
        added = await provider.queues.add_interactions(queue.id, [("session", "s-1"), ("trace", "t-1")])
        again = await provider.queues.add_interactions(queue.id, [("session", "s-1")])
        assert [i.already_existed for i in added + again] == [False, False, True]
        assert again[0].id == added[0].id
        result = await provider.queues.upsert_annotations(
            queue.id,
            [
                AnnotationUpsert(
                    interaction_id=added[0].id,
                    label_values=[
                        LabelValueInput(label_schema_id=str(ids["quality"]), value=4, reasoning="fine"),
                        LabelValueInput(label_schema_id=str(ids["topic"]), value="a"),
                    ],
                ),
                AnnotationUpsert(
                    interaction_id="missing",
                    label_values=[LabelValueInput(label_schema_id=str(ids["quality"]), value=1)],
                ),
            ],
        )
        assert len(result.annotations) == 1
        assert [(e.interaction_id, e.error) for e in result.errors] == [("missing", "interaction not found")]
        queues = await provider.queues.list_queues()
        assert [q.name for q in queues] == ["migrated"]
        assert await provider.queues.list_queues(project_id="other") == []
        found = await provider.fetch(SourceQuery(subject_ids=("s-1",)))
        assert sorted((a.name, a.score, a.label, a.explanation) for a in found) == [
            ("quality", 4.0, None, "fine"),
            ("topic", None, "a", None),
        ]
        with pytest.raises(SourceRequestError) as invalid:
            await provider.queues.upsert_annotations(
                queue.id,
                [
                    AnnotationUpsert(
                        interaction_id=added[0].id,
                        label_values=[LabelValueInput(label_schema_id=str(ids["quality"]), value=9)],
                    )
                ],
            )
        assert invalid.value.errors
        assert invalid.value.errors[0]["loc"][0] == "body"
        assert invalid.value.errors[0]["loc"][-1] == "value"
        await provider.queues.delete_queue(queue.id)
        with pytest.raises(SourceNotFoundError):
            await provider.queues.get_label_schema(queue.id)


# --- what only respx can do -------------------------------------------------------------------

BASE = "https://api.datadoghq.com"
ENV = {"DD_K": "secret-api-key-xyz", "DD_A": "secret-app-key-xyz"}


def _page(interactions: list[dict[str, Any]], total: int | None = None) -> dict[str, Any]:
    return {
        "data": {
            "id": "q",
            "type": "annotated_interactions_by_trace",
            "attributes": {
                "annotated_interactions": interactions,
                "total_count": len(interactions) if total is None else total,
            },
        }
    }


def _interaction(**overrides: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": "i-1",
        "type": "trace",
        "content_id": "t-1",
        "queue_id": "q-1",
        "queue_name": "Q",
        "can_annotate": True,
        "created_at": "2025-06-01T12:00:00Z",
        "modified_at": "2025-06-01T12:30:00Z",
        "annotations": [
            {
                "id": "a-1",
                "interaction_id": "i-1",
                "label_values": [
                    {"label_schema_id": "abc-123", "name_when_saved": "quality", "type": "score", "value": 3}
                ],
                "created_by": "u-1",
                "created_at": "0001-01-01T00:00:00Z",
                "modified_at": "0001-01-01T00:00:00Z",
                "modified_by": "u-1",
            }
        ],
    }
    item.update(overrides)
    return item


@asynccontextmanager
async def mocked(
    attempts: int = 3, max_retry_after_s: float = 0.01
) -> AsyncIterator[tuple[DatadogProvider, respx.MockRouter]]:
    config = DatadogSourceConfig(
        name="dd-us1",
        site="datadoghq.com",
        api_key_env="DD_K",
        app_key_env="DD_A",
        retry_attempts=attempts,
        max_retry_after_s=max_retry_after_s,
    )
    with respx.mock(using="httpx", assert_all_called=False) as router:
        # respx intercepts httpx's client; a client on another transport than the providers'
        # own always goes through it (providers/http/client.py, ``get``).
        provider = DatadogProvider.from_config(config, environ=ENV, transport=httpx.AsyncHTTPTransport())
        try:
            yield provider, router
        finally:
            await provider.aclose()


def _assert_no_secret(exc: BaseException) -> None:
    text = f"{exc} {getattr(exc, 'errors', '')}"
    for secret in ENV.values():
        assert secret not in text


async def test_the_official_example_answer_and_the_headers_sent() -> None:
    async with mocked() as (provider, router):
        route = router.get(f"{BASE}{READ}").respond(
            200, json=_page([_interaction()]), headers={"content-type": "application/vnd.api+json"}
        )
        found = await provider.fetch(SourceQuery(subject_ids=("t-1", "t 2,3", "t-1")))
    sent = route.calls.last.request
    assert sent.headers["DD-API-KEY"] == ENV["DD_K"]
    assert sent.headers["DD-APPLICATION-KEY"] == ENV["DD_A"]
    assert sent.headers["Accept"] == "application/vnd.api+json"
    assert urlsplit(str(sent.url)).query == "contentIds=t-1&contentIds=t+2%2C3&offset=0&limit=100"
    [annotation] = found
    assert annotation.id == "dd-us1:a-1:abc-123"
    # zero-time annotation timestamps fall back to the interaction's
    assert annotation.created_at == datetime(2025, 6, 1, 12, tzinfo=UTC)
    assert annotation.updated_at == datetime(2025, 6, 1, 12, 30, tzinfo=UTC)


async def test_a_reset_connection_is_retried() -> None:
    async with mocked() as (provider, router):
        router.get(f"{BASE}{READ}").mock(
            side_effect=[
                httpx.RemoteProtocolError("Server disconnected"),
                httpx.Response(200, json=_page([_interaction()])),
            ]
        )
        assert len(await provider.fetch(SourceQuery(subject_ids=("t-1",)))) == 1
    async with mocked(attempts=2) as (provider, router):
        router.get(f"{BASE}{READ}").mock(side_effect=httpx.ReadError("connection reset by peer"))
        with pytest.raises(SourceUnavailableError) as failed:
            await provider.fetch(SourceQuery(subject_ids=("t-1",)))
        assert failed.value.retryable
    async with mocked(attempts=1) as (provider, router):
        router.get(f"{BASE}{READ}").mock(side_effect=httpx.ReadTimeout("slow"))
        with pytest.raises(SourceTimeoutError):
            await provider.fetch(SourceQuery(subject_ids=("t-1",)))


Respond = Callable[[], httpx.Response]


@pytest.mark.parametrize(
    ("response", "error", "words"),
    [
        pytest.param(
            lambda: httpx.Response(
                200,
                content=b'{"data": {"id": "q", "type": "annotated_interac',
                headers={"content-type": "application/vnd.api+json"},
            ),
            SourceProtocolError,
            "malformed JSON",
            id="truncated-body",
        ),
        pytest.param(
            lambda: httpx.Response(403, html="<html><body>Access denied</body></html>"),
            SourceAuthError,
            "HTML page",
            id="html-403",
        ),
        pytest.param(
            lambda: httpx.Response(200, content=b""), SourceProtocolError, "expected JSON", id="empty-200"
        ),
        pytest.param(
            lambda: httpx.Response(502, content=b""), SourceUnavailableError, "empty body", id="empty-502"
        ),
        pytest.param(
            lambda: httpx.Response(200, html="<html>login</html>"),
            SourceProtocolError,
            "text/html",
            id="html-200",
        ),
        pytest.param(
            lambda: httpx.Response(401, json={"errors": ["Unauthorized"]}),
            SourceAuthError,
            "Unauthorized",
            id="401",
        ),
        pytest.param(
            lambda: httpx.Response(
                200, json={"errors": [{"status": "500", "title": "Internal", "detail": "boom"}]}
            ),
            SourceProtocolError,
            "boom",
            id="errors-in-a-200",
        ),
        pytest.param(
            lambda: httpx.Response(200, json=_page([_interaction(created_at=None)])),
            SourceProtocolError,
            "annotated_interactions[0].created_at",
            id="missing-field",
        ),
        pytest.param(
            lambda: httpx.Response(
                200,
                json={
                    "data": {
                        "id": "q",
                        "type": "annotated_interactions_by_trace",
                        "attributes": {"annotated_interactions": [], "total_count": "3"},
                    }
                },
            ),
            SourceProtocolError,
            "total_count",
            id="wrong-type",
        ),
        pytest.param(
            lambda: httpx.Response(200, json=_page([_interaction(type="span")])),
            SourceProtocolError,
            "annotated_interactions[0].type",
            id="unknown-interaction-type",
        ),
        pytest.param(
            lambda: httpx.Response(
                200,
                json=_page(
                    [
                        _interaction(
                            annotations=[
                                {
                                    **_interaction()["annotations"][0],
                                    "label_values": [
                                        {
                                            "label_schema_id": "s",
                                            "name_when_saved": "s",
                                            "type": "score",
                                            "value": "high",
                                        }
                                    ],
                                }
                            ]
                        )
                    ]
                ),
            ),
            SourceProtocolError,
            "label_values.0.value",
            id="score-not-a-number",
        ),
        pytest.param(
            lambda: httpx.Response(404, json={"errors": ["Not found"]}),
            SourceNotFoundError,
            "Not found",
            id="404",
        ),
    ],
)
async def test_broken_answers_become_source_errors(
    response: Respond, error: type[Exception], words: str
) -> None:
    async with mocked(attempts=1) as (provider, router):
        router.get(f"{BASE}{READ}").mock(side_effect=lambda request: response())
        with pytest.raises(error) as raised:
            await provider.fetch(SourceQuery(subject_ids=("t-1",)))
    assert words in str(raised.value)
    _assert_no_secret(raised.value)


async def test_a_400_carries_datadogs_detail_and_parameter() -> None:
    body = {
        "errors": [
            {
                "status": "400",
                "title": "Bad Request",
                "detail": "limit must be > 0",
                "source": {"parameter": "limit"},
            }
        ]
    }
    async with mocked() as (provider, router):
        route = router.get(f"{BASE}{READ}").respond(
            400, json=body, headers={"content-type": "application/vnd.api+json"}
        )
        with pytest.raises(SourceRequestError) as rejected:
            await provider.fetch(SourceQuery(subject_ids=("t-1",)))
    assert route.call_count == 1  # a 4xx is permanent
    assert rejected.value.upstream_status == 400
    assert rejected.value.status < 500
    assert rejected.value.errors == [
        {"loc": ["query", "limit"], "msg": "limit must be > 0", "type": "bad_request"}
    ]
    assert "limit must be > 0 (parameter limit)" in rejected.value.detail


async def test_429_waits_for_the_reset_it_names() -> None:
    limited = httpx.Response(
        429,
        json={"errors": ["Too many requests"]},
        headers={"X-RateLimit-Reset": "0.2", "X-RateLimit-Limit": "1"},
    )
    async with mocked(attempts=3, max_retry_after_s=5) as (provider, router):
        router.get(f"{BASE}{READ}").mock(
            side_effect=[limited, httpx.Response(200, json=_page([_interaction()]))]
        )
        started = time.monotonic()
        assert len(await provider.fetch(SourceQuery(subject_ids=("t-1",)))) == 1
        assert time.monotonic() - started >= 0.2
    async with mocked(attempts=1) as (provider, router):
        router.get(f"{BASE}{READ}").respond(
            429, json={"errors": ["Too many requests"]}, headers={"Retry-After": "7"}
        )
        with pytest.raises(SourceRateLimitedError) as raised:
            await provider.fetch(SourceQuery(subject_ids=("t-1",)))
        assert raised.value.retry_after == 7.0


async def test_pages_that_overlap_or_run_short_still_give_each_annotation_once() -> None:
    first = _interaction()
    second = _interaction(
        id="i-2",
        content_id="t-2",
        annotations=[{**first["annotations"][0], "id": "a-2", "interaction_id": "i-2"}],
    )
    third = _interaction(
        id="i-3",
        content_id="t-3",
        annotations=[{**first["annotations"][0], "id": "a-3", "interaction_id": "i-3"}],
    )
    answers = {0: [first, second], 2: [second], 3: [third], 4: []}

    def answer(request: httpx.Request) -> httpx.Response:
        offset = int(request.url.params["offset"])
        return httpx.Response(200, json=_page(answers.get(offset, []), total=5))

    async with mocked() as (provider, router):
        router.get(f"{BASE}{READ}").mock(side_effect=answer)
        found = await provider.fetch(SourceQuery(subject_ids=("t-1", "t-2", "t-3")))
    assert sorted(a.id for a in found) == ["dd-us1:a-1:abc-123", "dd-us1:a-2:abc-123", "dd-us1:a-3:abc-123"]


async def test_legacy_object_values_without_a_schema_are_inferred() -> None:
    legacy = _interaction(
        annotations=[
            {
                **_interaction()["annotations"][0],
                "label_values": {
                    "quality": 4,
                    "ok": True,
                    "topics": ["a", "b"],
                    "mood": "good",
                    "skip": "",
                    "note": {"value": 2, "reasoning": "r"},
                },
            }
        ]
    )
    async with mocked() as (provider, router):
        router.get(f"{BASE}{READ}").respond(200, json=_page([legacy]))
        router.get(f"{BASE}{API}/annotation-queues/q-1/label-schema").respond(
            404, json={"errors": ["Not found"]}
        )
        found = {a.name: a for a in await provider.fetch(SourceQuery(subject_ids=("t-1",)))}
    assert set(found) == {"quality", "ok", "topics", "mood", "note"}
    assert found["quality"].score == 4.0
    assert (found["ok"].label, found["ok"].score) == ("true", 1.0)
    assert found["topics"].label == "a, b"
    assert found["mood"].label == "good"
    assert found["mood"].extensions["datadog"]["label_type_inferred"] is True
    assert (found["note"].score, found["note"].explanation) == (2.0, "r")
    assert found["quality"].id == "dd-us1:a-1:quality"  # no schema: the name stands in for the id


async def test_fields_newer_than_the_mapping_are_kept_by_level() -> None:
    """SPEC §2: nothing Datadog sends is dropped; unknown fields land in ``extensions.datadog``
    under the level they came on, in the order sent; rows without any carry no such key."""
    base = _interaction()["annotations"][0]
    page = _interaction(
        sentiment_model="v2",
        region={"name": "eu"},
        annotations=[
            {
                **base,
                "id": "a-new",
                "review_round": 3,
                "label_values": [
                    {**base["label_values"][0], "confidence": 0.9, "source_tool": "ui"},
                    {"label_schema_id": "plain", "name_when_saved": "plain", "type": "score", "value": 1},
                ],
            },
            {
                **base,
                "id": "a-legacy",
                "label_values": {"mood": {"value": "good", "reasoning": "r", "edited": True}},
            },
        ],
    )
    async with mocked() as (provider, router):
        router.get(f"{BASE}{READ}").respond(200, json=_page([page]))
        router.get(f"{BASE}{API}/annotation-queues/q-1/label-schema").respond(
            404, json={"errors": ["Not found"]}
        )
        found = {
            a.id: a.extensions["datadog"] for a in await provider.fetch(SourceQuery(subject_ids=("t-1",)))
        }
    interaction = {"sentiment_model": "v2", "region": {"name": "eu"}}
    quality = found["dd-us1:a-new:abc-123"]
    assert quality["interaction"] == interaction
    assert list(quality["interaction"]) == ["sentiment_model", "region"]
    assert quality["annotation"] == {"review_round": 3}
    assert list(quality["label_value"]) == ["confidence", "source_tool"]
    plain = found["dd-us1:a-new:plain"]
    assert (plain["annotation"], "label_value" in plain) == ({"review_round": 3}, False)
    legacy = found["dd-us1:a-legacy:mood"]
    assert legacy["label_value"] == {"edited": True}
    assert "annotation" not in legacy
    assert legacy["interaction"] == interaction


def test_map_label_value_table() -> None:
    assert map_label_value("score", 0, None) is not None
    assert map_label_value("score", 0, "") == map_label_value("score", 0.0, None)
    assert map_label_value("boolean", "false", None) == map_label_value("boolean", False, None)
    for label_type in ("score", "categorical", "boolean", "text"):
        assert map_label_value(label_type, "", "why") is None
        assert map_label_value(label_type, [], "why") is None
        assert map_label_value(label_type, None, "why") is None
    text = map_label_value("text", "hello", "ignored here")
    assert text is not None
    assert (text.label, text.score, text.explanation) == (None, None, "hello")
