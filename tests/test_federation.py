"""Federation over in-memory providers: selection, pushdown, gateway filters, order, cursors,
exactly-once paging, partial answers, cache layers, writes, breaker, health and observer hooks."""

from __future__ import annotations

import asyncio
import base64
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from annotation_gateway.errors import (
    ForbiddenError,
    InvalidCursorError,
    PayloadTooLargeError,
    RequestValidationError,
    SourceAuthError,
    SourceError,
    SourceNotFoundError,
    SourceRateLimitedError,
    SourceTimeoutError,
    SourceUnavailableError,
    UnsupportedError,
)
from annotation_gateway.federation import (
    MAX_SUBJECT_IDS_SEARCH,
    MAX_WRITE_ITEMS,
    FederatedQuery,
    Federation,
    NullObserver,
    QueryPage,
)
from annotation_gateway.federation import limits as federation_limits
from annotation_gateway.model import Annotation, AnnotationWrite, AnnotatorKind, ProviderKind, SubjectKind
from annotation_gateway.settings import CacheConfig
from tests.fakes import BASE_TIME, DATADOG_LIKE, FakeProvider, ManualClock, make_annotation

SECRET = b"0123456789abcdef0123456789abcdef"


def phoenix(name: str = "phoenix-a", items: list[Annotation] | None = None, **kw: Any) -> FakeProvider:
    return FakeProvider(name, items or [], **kw)


def datadog(name: str = "datadog-a", items: list[Annotation] | None = None, **kw: Any) -> FakeProvider:
    return FakeProvider(name, items or [], provider_kind=ProviderKind.DATADOG, caps=DATADOG_LIKE, **kw)


def fed(*providers: FakeProvider, clock: ManualClock | None = None, **kw: Any) -> Federation:
    cache = kw.pop("cache", CacheConfig(ttl_s=30, max_stale_s=300))
    return Federation(list(providers), cache, cursor_secret=SECRET, clock=clock or ManualClock(), **kw)


def ann(source: str, subject: str, t: int, **kw: Any) -> Annotation:
    if source.startswith("datadog"):
        kw.setdefault("provider", ProviderKind.DATADOG)
        kw.setdefault("kind", SubjectKind.TRACE)
    return make_annotation(source, subject, updated_at=t, **kw)


def expected_order(items: list[Annotation]) -> list[str]:
    return [a.id for a in sorted(items, key=lambda a: (-a.updated_at.timestamp(), a.id))]


async def all_pages(f: Federation, query: FederatedQuery, **kw: Any) -> list[QueryPage]:
    return [page async for page in f.pages(query, **kw)]


def two_sources() -> tuple[FakeProvider, FakeProvider]:
    p = phoenix(
        items=[
            ann("phoenix-a", "s1", 5, native_id="1"),
            ann("phoenix-a", "s1", 7, native_id="2"),
            ann("phoenix-a", "s2", 5, native_id="3"),
        ]
    )
    d = datadog(
        items=[
            ann("datadog-a", "s1", 5, native_id="x:1"),
            ann("datadog-a", "s2", 9, native_id="x:2"),
        ]
    )
    return p, d


# --- order, merge, concurrency ----------------------------------------------------------------


async def test_merges_sources_in_updated_desc_then_id_order() -> None:
    p, d = two_sources()
    f = fed(p, d)
    page = await f.query(FederatedQuery(subject_ids=("s1", "s2")))
    assert [a.id for a in page.data] == [
        "datadog-a:x:2",
        "phoenix-a:2",
        "datadog-a:x:1",
        "phoenix-a:1",
        "phoenix-a:3",
    ]
    assert page.next_cursor is None
    assert not page.partial
    assert [(s.source, s.provider, s.status, s.count) for s in page.sources] == [
        ("phoenix-a", ProviderKind.PHOENIX, "ok", 3),
        ("datadog-a", ProviderKind.DATADOG, "ok", 2),
    ]
    assert all(s.elapsed_ms > 0 and s.error is None for s in page.sources)


async def test_fan_out_is_concurrent() -> None:
    slow = [phoenix(f"p{i}", [ann(f"p{i}", "s1", i)], delay=0.2) for i in range(4)]
    f = fed(*slow)
    started = time.perf_counter()
    page = await f.query(FederatedQuery(subject_ids=("s1",)))
    elapsed = time.perf_counter() - started
    assert len(page.data) == 4
    assert elapsed < 0.5, f"four 0.2 s sources took {elapsed:.2f} s: not concurrent"
    assert all(s.elapsed_ms >= 190 for s in page.sources)


async def test_duplicate_ids_from_a_source_are_returned_once() -> None:
    dup = ann("phoenix-a", "s1", 1, native_id="same")
    f = fed(phoenix(items=[dup, dup]))
    page = await f.query(FederatedQuery(subject_ids=("s1",)))
    assert [a.id for a in page.data] == ["phoenix-a:same"]


# --- selection --------------------------------------------------------------------------------


async def test_selection_by_source_and_provider() -> None:
    p, d = two_sources()
    f = fed(p, d)
    only_d = await f.query(FederatedQuery(subject_ids=("s1",), sources=("datadog-a",)))
    assert {a.source for a in only_d.data} == {"datadog-a"}
    assert [s.source for s in only_d.sources] == ["datadog-a"]
    only_p = await f.query(FederatedQuery(subject_ids=("s1",), providers=(ProviderKind.PHOENIX,)))
    assert [s.source for s in only_p.sources] == ["phoenix-a"]
    assert p.calls
    assert len(d.calls) == 1


async def test_unknown_source_is_a_validation_error() -> None:
    f = fed(*two_sources())
    with pytest.raises(RequestValidationError) as info:
        await f.query(FederatedQuery(subject_ids=("s1",), sources=("nope",)))
    assert "'nope'" in info.value.detail
    assert "phoenix-a" in info.value.detail
    assert info.value.errors == [{"loc": ["sources"], "msg": "unknown source 'nope'", "type": "value_error"}]


async def test_key_limits() -> None:
    p, d = two_sources()
    f = fed(p, d)
    allowed = frozenset({"phoenix-a"})
    with pytest.raises(ForbiddenError, match="datadog-a"):
        await f.query(FederatedQuery(subject_ids=("s1",), sources=("datadog-a",)), allowed_sources=allowed)
    page = await f.query(FederatedQuery(subject_ids=("s1",)), allowed_sources=allowed)
    assert [s.source for s in page.sources] == ["phoenix-a"]
    assert d.calls == []
    with pytest.raises(RequestValidationError, match="no source matches"):
        await f.query(
            FederatedQuery(subject_ids=("s1",), providers=(ProviderKind.DATADOG,)), allowed_sources=allowed
        )
    # The unknown-source message lists only the sources the key may use.
    with pytest.raises(RequestValidationError) as info:
        await f.query(FederatedQuery(subject_ids=("s1",), sources=("x",)), allowed_sources=allowed)
    assert "datadog-a" not in info.value.detail


@pytest.mark.parametrize(
    ("fields", "error", "needle"),
    [
        ({}, RequestValidationError, "subject_id or identifier"),
        ({"subject_ids": ("s",), "limit": 0}, RequestValidationError, "limit"),
        ({"subject_ids": ("s",), "limit": 1001}, RequestValidationError, "1000"),
        (
            {"subject_ids": tuple(f"s{i}" for i in range(MAX_SUBJECT_IDS_SEARCH + 1))},
            PayloadTooLargeError,
            str(MAX_SUBJECT_IDS_SEARCH),
        ),
        ({"subject_ids": ("s",), "names": tuple(map(str, range(1001)))}, PayloadTooLargeError, "names"),
        (
            {"subject_ids": ("s",), "updated_after": BASE_TIME, "updated_before": BASE_TIME},
            RequestValidationError,
            "updated_after",
        ),
    ],
    ids=["no-subject", "limit-0", "limit-big", "too-many-ids", "too-many-names", "empty-window"],
)
async def test_validation(fields: dict[str, Any], error: type[Exception], needle: str) -> None:
    """A query is validated once, when it is built: no invalid FederatedQuery exists to run."""
    with pytest.raises(error, match=needle):
        await fed(phoenix()).query(FederatedQuery(**fields))


def test_a_query_is_normalised_when_built() -> None:
    """Lists sorted and de-duplicated, the window in UTC: equal queries are equal values."""
    plus_two = timezone(timedelta(hours=2))
    query = FederatedQuery(
        subject_ids=("s2", "s1", "s2"),
        names=("b", "a"),
        annotator_kinds=(AnnotatorKind.LLM, AnnotatorKind.HUMAN, AnnotatorKind.LLM),
        updated_after=datetime(2026, 1, 1, 12, tzinfo=plus_two),
        updated_before=datetime(2026, 1, 2),
    )
    assert query.subject_ids == ("s1", "s2")
    assert query.names == ("a", "b")
    assert query.annotator_kinds == (AnnotatorKind.HUMAN, AnnotatorKind.LLM)
    assert query.updated_after == datetime(2026, 1, 1, 10, tzinfo=UTC)
    assert query.updated_before == datetime(2026, 1, 2, tzinfo=UTC)
    assert query == FederatedQuery(
        subject_ids=("s1", "s2"),
        names=("a", "b"),
        annotator_kinds=(AnnotatorKind.HUMAN, AnnotatorKind.LLM),
        updated_after=datetime(2026, 1, 1, 10, tzinfo=UTC),
        updated_before=datetime(2026, 1, 2, tzinfo=UTC),
    )


def test_normalising_keeps_sorted_lists_and_sorts_lists_and_sets_that_are_not() -> None:
    ids = tuple(f"s{i:04d}" for i in range(1000))
    assert FederatedQuery(subject_ids=ids).subject_ids is ids  # already normalised: kept
    assert FederatedQuery(subject_ids=("a", "a", "b")).subject_ids == ("a", "b")  # equal: not kept
    assert FederatedQuery(subject_ids=["b", "a"]).subject_ids == ("a", "b")  # type: ignore[arg-type]
    assert FederatedQuery(subject_ids=frozenset({"b", "a"})).subject_ids == ("a", "b")  # type: ignore[arg-type]


@pytest.mark.parametrize("position", [0, 1, 999])
def test_a_lone_surrogate_anywhere_in_a_list_is_refused(position: int) -> None:
    ids = [f"s{i:04d}" for i in range(1000)]
    ids[position] = ids[position] + "\ud800"
    with pytest.raises(RequestValidationError, match="lone surrogate"):
        FederatedQuery(subject_ids=tuple(ids))
    # Two halves of a pair in adjacent values are two lone surrogates, not one character.
    with pytest.raises(RequestValidationError, match="lone surrogate"):
        FederatedQuery(subject_ids=("a\ud83d", "\ude00b"))


# --- skipped sources and pushdown ---------------------------------------------------------------


async def test_identifier_only_skips_sources_that_need_subject_ids() -> None:
    p = phoenix(items=[ann("phoenix-a", "s1", 1, identifier="run-1"), ann("phoenix-a", "s2", 2)])
    d = datadog(items=[ann("datadog-a", "s1", 1)])
    page = await fed(p, d).query(FederatedQuery(identifiers=("run-1",)))
    assert [a.subject.id for a in page.data] == ["s1"]
    status = {s.source: s for s in page.sources}
    assert status["datadog-a"].status == "skipped"
    assert status["datadog-a"].error is not None
    assert "identifier alone" in status["datadog-a"].error["reason"]
    assert d.calls == []
    assert not page.partial


async def test_skip_by_subject_kind_and_project_and_all_skipped_is_empty() -> None:
    p, d = two_sources()
    f = fed(p, d)
    spans = await f.query(FederatedQuery(subject_ids=("s1",), subject_kinds=(SubjectKind.SPAN,)))
    status = {s.source: s for s in spans.sources}
    assert status["datadog-a"].status == "skipped"
    assert "kind span" in str(status["datadog-a"].error)
    assert status["phoenix-a"].status == "ok"

    projects = await f.query(FederatedQuery(subject_ids=("s1",), projects=("support-bot",)))
    status = {s.source: s for s in projects.sources}
    assert status["datadog-a"].status == "skipped"
    assert "project" in str(status["datadog-a"].error)
    assert {a.source for a in projects.data} == {"phoenix-a"}

    nothing = await f.query(FederatedQuery(identifiers=("x",), sources=("datadog-a",)))
    assert nothing.data == []
    assert not nothing.partial
    assert [s.status for s in nothing.sources] == ["skipped"]


async def test_pushdown_and_kind_narrowing() -> None:
    p, d = two_sources()
    f = fed(p, d)
    await f.query(
        FederatedQuery(
            subject_ids=("s2", "s1", "s1"),
            subject_kinds=(SubjectKind.SPAN, SubjectKind.SESSION),
            identifiers=("b", "a"),
            names=("n",),
            exclude_names=("m",),
            annotator_kinds=(AnnotatorKind.LLM, AnnotatorKind.HUMAN),
            include_raw=True,
        )
    )
    sent = p.calls[0]
    assert sent.subject_ids == ("s1", "s2")  # de-duplicated, and sorted when the query was built
    assert sent.subject_kinds == (SubjectKind.SESSION, SubjectKind.SPAN)
    assert sent.identifiers == ("a", "b")
    assert (sent.names, sent.exclude_names, sent.include_raw) == (("n",), ("m",), True)
    # Datadog has sessions but no spans: only session is pushed down.
    assert d.calls[0].subject_kinds == (SubjectKind.SESSION,)
    # Asking every kind a source has is no kind filter (and shares that cache entry).
    await f.query(FederatedQuery(subject_ids=("s9",), subject_kinds=tuple(DATADOG_LIKE.subject_kinds)))
    assert d.calls[1].subject_kinds == ()


async def test_the_planner_skips_from_capabilities_not_vendor_names() -> None:
    """Datadog declares HUMAN annotators only and no projects: an LLM-only or a project query
    skips it with the reason, without calling it; a query that admits HUMAN still asks it."""
    p, d = two_sources()
    f = fed(p, d)
    page = await f.query(FederatedQuery(subject_ids=("s1",), annotator_kinds=(AnnotatorKind.LLM,)))
    status = {s.source: s for s in page.sources}
    assert status["datadog-a"].status == "skipped"
    assert status["datadog-a"].error == {
        "reason": "this source has no annotations by LLM annotators (only HUMAN)"
    }
    assert d.calls == []
    assert status["phoenix-a"].status == "ok"
    page = await f.query(FederatedQuery(subject_ids=("s1",), projects=("p",)))
    assert {s.source: s.status for s in page.sources}["datadog-a"] == "skipped"
    assert d.calls == []
    await f.query(
        FederatedQuery(subject_ids=("s1",), annotator_kinds=(AnnotatorKind.LLM, AnnotatorKind.HUMAN))
    )
    assert len(d.calls) == 1


# --- gateway-side filters and raw ---------------------------------------------------------------


async def test_gateway_filters() -> None:
    items = [
        ann("phoenix-a", "s1", 10, native_id="h", annotator=AnnotatorKind.HUMAN),
        ann("phoenix-a", "s1", 20, native_id="l", annotator=AnnotatorKind.LLM),
        ann("phoenix-a", "s1", 30, native_id="c", annotator=AnnotatorKind.CODE, project="other"),
    ]
    f = fed(phoenix(items=items))

    async def ids(**kw: Any) -> list[str]:
        page = await f.query(FederatedQuery(subject_ids=("s1",), **kw))
        return [a.id.split(":")[1] for a in page.data]

    assert await ids(annotator_kinds=(AnnotatorKind.LLM, AnnotatorKind.HUMAN)) == ["l", "h"]
    assert await ids(projects=("other",)) == ["c"]
    # updated_after is inclusive, updated_before exclusive.
    assert await ids(updated_after=BASE_TIME + timedelta(seconds=20)) == ["c", "l"]
    assert await ids(updated_before=BASE_TIME + timedelta(seconds=20)) == ["h"]
    window = {
        "updated_after": BASE_TIME + timedelta(seconds=10),
        "updated_before": BASE_TIME + timedelta(seconds=30),
    }
    assert await ids(**window) == ["l", "h"]
    page = await f.query(FederatedQuery(subject_ids=("s1",), annotator_kinds=(AnnotatorKind.CODE,)))
    assert page.sources[0].count == 1


async def test_naive_datetimes_are_utc() -> None:
    f = fed(phoenix(items=[ann("phoenix-a", "s1", 10), ann("phoenix-a", "s1", 20)]))
    naive = (BASE_TIME + timedelta(seconds=15)).replace(tzinfo=None)
    page = await f.query(FederatedQuery(subject_ids=("s1",), updated_after=naive))
    assert len(page.data) == 1


async def test_raw_only_when_asked() -> None:
    f = fed(phoenix(items=[ann("phoenix-a", "s1", 1, raw={"vendor": "row"})]))
    plain = await f.query(FederatedQuery(subject_ids=("s1",)))
    assert plain.data[0].raw is None
    assert "raw" not in plain.data[0].model_dump(mode="json")
    with_raw = await f.query(FederatedQuery(subject_ids=("s1",), include_raw=True))
    assert with_raw.data[0].raw == {"vendor": "row"}


# --- cursors ------------------------------------------------------------------------------------


def many(source: str, n: int, subject: str = "s1") -> list[Annotation]:
    return [ann(source, subject, i // 3, native_id=f"{i:03d}") for i in range(n)]


async def test_cursor_pages_and_limit_may_change() -> None:
    items = many("phoenix-a", 10)
    f = fed(phoenix(items=items))
    first = await f.query(FederatedQuery(subject_ids=("s1",), limit=4))
    assert first.next_cursor is not None
    assert "=" not in first.next_cursor
    second = await f.query(FederatedQuery(subject_ids=("s1",), limit=3, cursor=first.next_cursor))
    third = await f.query(FederatedQuery(subject_ids=("s1",), limit=100, cursor=second.next_cursor))
    assert third.next_cursor is None
    got = [a.id for page in (first, second, third) for a in page.data]
    assert got == expected_order(items)
    assert [len(first.data), len(second.data), len(third.data)] == [4, 3, 3]


async def test_exact_last_page_has_no_cursor() -> None:
    f = fed(phoenix(items=many("phoenix-a", 4)))
    page = await f.query(FederatedQuery(subject_ids=("s1",), limit=4))
    assert page.next_cursor is None


async def first_cursor(f: Federation, query: FederatedQuery) -> str:
    page = await f.query(query)
    assert page.next_cursor is not None
    return page.next_cursor


async def test_tampered_cursor_is_refused() -> None:
    f = fed(phoenix(items=many("phoenix-a", 10)))
    query = FederatedQuery(subject_ids=("s1",), limit=2)
    cursor = await first_cursor(f, query)
    raw = bytearray(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    for position in (0, len(raw) // 2, len(raw) - 1):
        flipped = bytearray(raw)
        flipped[position] ^= 0x01
        forged = base64.urlsafe_b64encode(bytes(flipped)).rstrip(b"=").decode()
        with pytest.raises(InvalidCursorError, match="signature"):
            await f.query(replace(query, cursor=forged))


@pytest.mark.parametrize(
    ("cursor", "needle"),
    [("not base64!!", "base64"), ("", "1 to"), ("a" * 5000, "1 to"), ("abcd", "signature"), ("é", "base64")],
    ids=["garbage", "empty", "huge", "short", "non-ascii"],
)
async def test_malformed_cursor_is_refused(cursor: str, needle: str) -> None:
    f = fed(phoenix(items=many("phoenix-a", 3)))
    with pytest.raises(InvalidCursorError, match=needle) as info:
        await f.query(FederatedQuery(subject_ids=("s1",), cursor=cursor))
    assert info.value.status == 422
    assert info.value.code.value == "invalid_cursor"


@pytest.mark.parametrize(
    "change",
    [
        {"names": ("correctness",)},
        {"subject_ids": ("s1", "s2")},
        {"annotator_kinds": (AnnotatorKind.HUMAN,)},
        {"updated_after": BASE_TIME},
        {"sources": ("phoenix-a",)},
        {"include_raw": True},
    ],
    ids=["names", "subjects", "annotator", "window", "sources", "raw"],
)
async def test_cursor_replayed_with_other_filters_is_refused(change: dict[str, Any]) -> None:
    f = fed(phoenix(items=many("phoenix-a", 10)), datadog())
    query = FederatedQuery(subject_ids=("s1",), limit=2)
    cursor = await first_cursor(f, query)
    with pytest.raises(InvalidCursorError, match="different query"):
        await f.query(replace(query, cursor=cursor, **change))
    # Same query again, in another order and with another limit and cache mode: accepted.
    same = replace(query, subject_ids=("s1", "s1"), cursor=cursor, limit=5, use_cache=False)
    assert len((await f.query(same)).data) == 5


async def test_cursor_is_bound_to_the_key_selection_and_the_secret() -> None:
    p, d = phoenix(items=many("phoenix-a", 10)), datadog()
    f = fed(p, d)
    query = FederatedQuery(subject_ids=("s1",), limit=2)
    cursor = await first_cursor(f, query)
    with pytest.raises(InvalidCursorError, match="different query"):
        await f.query(replace(query, cursor=cursor), allowed_sources=frozenset({"phoenix-a"}))
    other = Federation([p, d], CacheConfig(), cursor_secret=b"another secret")
    with pytest.raises(InvalidCursorError, match="signature"):
        await other.query(replace(query, cursor=cursor))


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    rows=st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 3), st.sampled_from(["s1", "s2", "s3"])),
        min_size=0,
        max_size=60,
    ),
    page_sizes=st.lists(st.integers(1, 7), min_size=1, max_size=5),
    use_cache=st.booleans(),
)
async def test_paging_yields_every_match_exactly_once(
    rows: list[tuple[int, int, str]], page_sizes: list[int], use_cache: bool
) -> None:
    names = ["phoenix-a", "phoenix-b", "datadog-a"]
    items: dict[str, list[Annotation]] = {n: [] for n in names}
    for i, (src, t, subject) in enumerate(rows):
        # Few distinct timestamps: most ties are broken by id, across sources too.
        items[names[src]].append(ann(names[src], subject, t, native_id=f"{i}"))
    providers = [phoenix("phoenix-a", items["phoenix-a"]), phoenix("phoenix-b", items["phoenix-b"])]
    providers.append(datadog("datadog-a", items["datadog-a"]))
    f = fed(*providers)
    query = FederatedQuery(subject_ids=("s1", "s2", "s3"), use_cache=use_cache)
    seen: list[str] = []
    cursor: str | None = None
    for step in range(len(rows) + 2):
        page = await f.query(replace(query, cursor=cursor, limit=page_sizes[step % len(page_sizes)]))
        seen.extend(a.id for a in page.data)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert cursor is None, "paging did not end"
    assert seen == expected_order([a for group in items.values() for a in group])


async def test_pages_follows_the_cursor() -> None:
    items = many("phoenix-a", 25)
    p = phoenix(items=items)
    f = fed(p)
    pages = await all_pages(f, FederatedQuery(subject_ids=("s1",), limit=10, use_cache=False))
    assert [len(pg.data) for pg in pages] == [10, 10, 5]
    assert [a.id for pg in pages for a in pg.data] == expected_order(items)
    assert len(p.calls) == 1, "later pages reuse what the first page fetched"


async def test_a_cursor_page_query_is_not_kept_by_the_federation() -> None:
    """Each page of a paged search is a new query holding its own id strings; the federation
    keeps none of them once the page is answered. Keeping them (the first-page memo did) grew a
    gateway paging one 10,000-id search through its 100 cursors by 35 MiB."""
    f = fed(phoenix(items=many("phoenix-a", 25)))
    first = FederatedQuery(subject_ids=("s1", "s2"), limit=10)
    page = await f.query(first)
    while page.next_cursor is not None:
        # Built from the raw parts, as every page of a real client's request is.
        query = FederatedQuery(subject_ids=("s1", "s2"), limit=10, cursor=page.next_cursor)
        held = sys.getrefcount(query)
        page = await f.query(query)
        assert sys.getrefcount(query) == held, "the federation kept a page's query"


async def test_remembered_queries_are_bounded_by_the_ids_they_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    """A repeated first page is remembered (its digest, binding and sources), but what the memo
    holds is bounded by ids, not only by count: past the bound it starts afresh."""
    monkeypatch.setattr(federation_limits, "FINGERPRINT_MEMO_MAX_IDS", 10)
    f = fed(phoenix(items=many("phoenix-a", 3)))
    queries = [FederatedQuery(subject_ids=tuple(f"s{n}-{i}" for i in range(4))) for n in range(3)]
    # Counted the same way each time (an index, not a loop variable or a zip's tuple holding one).
    held = [sys.getrefcount(queries[n]) for n in range(3)]

    def kept() -> list[int]:
        return [sys.getrefcount(queries[n]) - held[n] for n in range(3)]

    await f.query(queries[0])
    await f.query(queries[1])
    assert kept() == [1, 1, 0]
    await f.query(queries[2])  # 5 + 5 + 5 ids (4 subjects and 1 a query) > 10: the memo starts afresh
    assert kept() == [0, 0, 1]
    # A remembered query answers as one computed afresh (same cursor binding).
    again = await f.query(queries[2])
    assert again.records == (await fed(phoenix(items=many("phoenix-a", 3))).query(queries[2])).records


# --- limits ---------------------------------------------------------------------------------------


async def test_total_results_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(federation_limits, "MAX_TOTAL_RESULTS", 5)
    f = fed(phoenix(items=many("phoenix-a", 4)), datadog(items=many("datadog-a", 2)))
    with pytest.raises(PayloadTooLargeError, match="limit of 5") as info:
        await f.query(FederatedQuery(subject_ids=("s1",)))
    assert "6 annotations" in info.value.detail
    assert info.value.status == 413
    page = await f.query(FederatedQuery(subject_ids=("s1",), sources=("phoenix-a",)))
    assert len(page.data) == 4


# --- failures ---------------------------------------------------------------------------------


async def test_one_source_down_gives_a_partial_answer() -> None:
    p, d = two_sources()
    d.fail = SourceUnavailableError(
        "datadog-a: HTTP 503 from the vendor", source="datadog-a", upstream_status=503
    )
    page = await fed(p, d).query(FederatedQuery(subject_ids=("s1", "s2")))
    assert page.partial
    assert {a.source for a in page.data} == {"phoenix-a"}
    status = {s.source: s for s in page.sources}
    assert status["datadog-a"].status == "error"
    assert status["datadog-a"].error == {
        "type": "https://annotation-gateway.dev/problems/source_unavailable",
        "title": "The source is unavailable",
        "status": 502,
        "detail": "datadog-a: HTTP 503 from the vendor",
        "code": "source_unavailable",
        "source": "datadog-a",
        "upstream_status": 503,
    }
    assert status["datadog-a"].count == 0
    assert status["phoenix-a"].status == "ok"


async def test_partial_deny_raises_the_failure() -> None:
    p, d = two_sources()
    error = SourceTimeoutError("datadog-a: slow", source="datadog-a")
    d.fail = error
    with pytest.raises(SourceTimeoutError) as info:
        await fed(p, d).query(FederatedQuery(subject_ids=("s1",), partial="deny"))
    assert info.value is error


async def test_all_down_raises_one_error() -> None:
    p, d = two_sources()
    p.fail = SourceUnavailableError("phoenix-a: refused", source="phoenix-a")
    d.fail = SourceUnavailableError("datadog-a: 503", source="datadog-a")
    with pytest.raises(SourceUnavailableError) as info:
        await fed(p, d).query(FederatedQuery(subject_ids=("s1",)))
    assert info.value.status == 502
    assert [e["source"] for e in info.value.errors or []] == ["phoenix-a", "datadog-a"]
    # The shared original error was not mutated.
    assert p.fail.errors is None


async def test_all_down_with_mixed_5xx_is_502() -> None:
    p, d = two_sources()
    p.fail = SourceUnavailableError("phoenix-a: refused", source="phoenix-a")
    d.fail = SourceTimeoutError("datadog-a: slow", source="datadog-a")
    with pytest.raises(SourceError) as info:
        await fed(p, d).query(FederatedQuery(subject_ids=("s1",)))
    assert type(info.value) is SourceError
    assert info.value.status == 502
    assert "phoenix-a: refused" in info.value.detail
    assert len(info.value.errors or []) == 2


async def test_all_down_with_upstream_4xx_is_never_our_5xx() -> None:
    p, d = two_sources()
    p.fail = SourceNotFoundError("phoenix-a: project not found", source="phoenix-a", upstream_status=404)
    d.fail = SourceAuthError("datadog-a: key rejected", source="datadog-a", upstream_status=403)
    with pytest.raises(SourceNotFoundError) as info:
        await fed(p, d).query(FederatedQuery(subject_ids=("s1",)))
    assert info.value.status == 404
    assert [e["code"] for e in info.value.errors or []] == ["not_found", "source_unauthorized"]
    # Mixed 4xx and 5xx: the vendor failure decides.
    d.fail = SourceTimeoutError("datadog-a: slow", source="datadog-a")
    with pytest.raises(SourceTimeoutError):
        await fed(p, d).query(FederatedQuery(subject_ids=("s1",)))


async def test_single_source_failure_is_raised_as_is() -> None:
    error = SourceRateLimitedError("phoenix-a: 429", source="phoenix-a", retry_after=3)
    with pytest.raises(SourceRateLimitedError) as info:
        await fed(phoenix(fail=error)).query(FederatedQuery(subject_ids=("s1",)))
    assert info.value is error


async def test_provider_bug_becomes_that_sources_error() -> None:
    p, d = two_sources()
    d.fail = KeyError("label_values")
    page = await fed(p, d).query(FederatedQuery(subject_ids=("s1",)))
    status = {s.source: s for s in page.sources}
    assert page.partial
    assert status["datadog-a"].error is not None
    assert status["datadog-a"].error["code"] == "source_error"
    assert "KeyError" in status["datadog-a"].error["detail"]


async def test_whole_fetch_deadline() -> None:
    p, d = two_sources()
    d.delay = 5
    f = fed(p, d, source_deadline_s=0.05)
    page = await f.query(FederatedQuery(subject_ids=("s1",)))
    status = {s.source: s for s in page.sources}
    assert status["datadog-a"].error is not None
    assert status["datadog-a"].error["code"] == "source_timeout"
    assert status["datadog-a"].error["status"] == 504


# --- caching through the federation ---------------------------------------------------------------


async def test_repeat_query_and_next_pages_come_from_cache() -> None:
    p, d = phoenix(items=many("phoenix-a", 10)), datadog(items=many("datadog-a", 5))
    f = fed(p, d)
    query = FederatedQuery(subject_ids=("s1",), limit=6)
    first = await f.query(query)
    assert [s.cached for s in first.sources] == [False, False]
    second = await f.query(replace(query, cursor=first.next_cursor))
    again = await f.query(query)
    assert [s.cached for s in second.sources] == [True, True]
    assert [s.count for s in second.sources] == [10, 5]
    assert [a.id for a in again.data] == [a.id for a in first.data]
    assert (len(p.calls), len(d.calls)) == (1, 1)
    # A different gateway filter over the same subjects reuses the per-subject entries.
    human = await f.query(replace(query, annotator_kinds=(AnnotatorKind.HUMAN,)))
    assert [s.cached for s in human.sources] == [True, True]
    assert (len(p.calls), len(d.calls)) == (1, 1)
    # no-cache goes upstream again.
    await f.query(replace(query, use_cache=False))
    assert (len(p.calls), len(d.calls)) == (2, 2)


async def test_merged_results_expire_with_the_ttl() -> None:
    clock = ManualClock()
    p = phoenix(items=many("phoenix-a", 3))
    f = fed(p, clock=clock, cache=CacheConfig(ttl_s=10, max_stale_s=100))
    await f.query(FederatedQuery(subject_ids=("s1",)))
    clock.advance(9)
    assert (await f.query(FederatedQuery(subject_ids=("s1",)))).sources[0].cached
    clock.advance(2)
    assert not (await f.query(FederatedQuery(subject_ids=("s1",)))).sources[0].cached
    assert len(p.calls) == 2


async def test_an_unchanged_refresh_renews_the_merged_result() -> None:
    clock = ManualClock()
    p, d = phoenix(items=many("phoenix-a", 4)), datadog(items=many("datadog-a", 3))
    f = fed(p, d, clock=clock, cache=CacheConfig(ttl_s=10, max_stale_s=100))
    query = FederatedQuery(subject_ids=("s1",))
    first = await f.query(query)
    # A no-cache refresh, then a poll after the ttl: both ask the sources (new record objects
    # every time) and, the answers being the same documents, give back the records held and the
    # page's JSON written for the first answer (renewed: neither merged nor encoded again).
    for again in (await f.query(replace(query, use_cache=False)), None):
        if again is None:
            clock.advance(11)
            again = await f.query(query)
        assert [s.cached for s in again.sources] == [False, False]
        assert all(x is y for x, y in zip(again.records, first.records, strict=True))
        assert again.records_json is first.records_json
    assert (len(p.calls), len(d.calls)) == (3, 3)
    # One source's answer changed: merged and written again, with the change.
    d.annotations[0] = d.annotations[0].model_copy(update={"label": "changed"})
    changed = await f.query(replace(query, use_cache=False))
    assert changed.records_json is not first.records_json
    assert [a.label for a in changed.data if a.id == d.annotations[0].id] == ["changed"]
    assert changed.records_json is not None
    assert first.records_json is not None
    assert bytes(changed.records_json.items) != bytes(first.records_json.items)


async def test_single_flight_across_concurrent_identical_queries() -> None:
    gate = asyncio.Event()
    p = phoenix(items=many("phoenix-a", 3), gate=gate)
    d = datadog(items=many("datadog-a", 3), gate=gate)
    f = fed(p, d)
    tasks = [asyncio.create_task(f.query(FederatedQuery(subject_ids=("s1",)))) for _ in range(20)]
    await asyncio.sleep(0.01)
    gate.set()
    pages = await asyncio.gather(*tasks)
    assert (p.started, d.started) == (1, 1)
    assert all(len(pg.data) == 6 for pg in pages)


async def gated_query(phoenix_gate: asyncio.Event, datadog_gate: asyncio.Event) -> asyncio.Task[QueryPage]:
    """A query of two sources whose calls have started and wait for their gates."""
    p = phoenix(items=many("phoenix-a", 3), gate=phoenix_gate)
    d = datadog(items=many("datadog-a", 3), gate=datadog_gate)
    query = asyncio.create_task(fed(p, d).query(FederatedQuery(subject_ids=("s1",))))
    while (p.started, d.started) != (1, 1):
        await asyncio.sleep(0)
    return query


async def turns_until_done(task: asyncio.Task[Any]) -> int:
    """Turns of the event loop until ``task`` is done."""
    turns = 0
    while not task.done():
        await asyncio.sleep(0)
        turns += 1
    return turns


async def test_a_page_is_ready_the_turn_after_its_last_source_answers() -> None:
    # Under load every turn of the event loop waits behind the other requests' work, so the
    # chain from an upstream answer to the page is kept short: the sources' calls run in their
    # own tasks, and a call that ends wakes the requests waiting for it from its own step (no
    # shield, gather or task per source in between; that chain took five turns).
    gate = asyncio.Event()
    query = await gated_query(gate, gate)
    gate.set()
    # One turn for the calls to resume from the gate and end, one for the request to resume.
    assert await turns_until_done(query) == 2
    assert len((await query).data) == 6


async def test_a_request_runs_the_call_of_its_slowest_source_itself() -> None:
    # The first query learns that Datadog answers last; a request then runs Datadog's call in
    # its own task (the answer cache's *Leading*): its page is ready in the very turn Datadog
    # answers (two turns when the call runs in a task of its own: the call's, then the
    # request's), and a request that joins the call gets the same answer from one call.
    phoenix_gate, datadog_gate = asyncio.Event(), asyncio.Event()
    p = phoenix(items=many("phoenix-a", 3), gate=phoenix_gate)
    d = datadog(items=many("datadog-a", 3), gate=datadog_gate)
    clock = ManualClock()
    f = fed(p, d, clock=clock)
    query = FederatedQuery(subject_ids=("s1",))
    first = asyncio.create_task(f.query(query))
    phoenix_gate.set()
    while len(p.calls) != 1:
        await asyncio.sleep(0)
    await asyncio.sleep(0.02)
    datadog_gate.set()
    await first

    d.gate = asyncio.Event()
    clock.advance(31)  # past the ttl: the request that joins below misses
    led = asyncio.create_task(f.query(replace(query, use_cache=False)))
    while (len(p.calls), d.started) != (2, 2):
        await asyncio.sleep(0)
    joined = asyncio.create_task(f.query(query, audience="another"))
    for _ in range(3):
        await asyncio.sleep(0)
    assert not led.done()
    assert not joined.done()
    d.gate.set()
    assert await turns_until_done(led) == 1
    assert len((await led).data) == 6
    assert [a.id for a in (await joined).data] == [a.id for a in (await led).data]
    assert (p.started, d.started) == (2, 2)


async def test_each_source_is_timed_to_the_end_of_its_own_call() -> None:
    # The sources' answers are read in configuration order; the second, which ended first, is
    # still timed to the end of its own call, not to when the request came to read it.
    slow, fast = asyncio.Event(), asyncio.Event()
    query = await gated_query(slow, fast)
    fast.set()
    await asyncio.sleep(0.2)
    slow.set()
    elapsed = {s.source: s.elapsed_ms for s in (await query).sources}
    assert elapsed["phoenix-a"] is not None
    assert elapsed["datadog-a"] is not None
    assert elapsed["phoenix-a"] >= 200
    assert elapsed["datadog-a"] < 100


async def test_stale_on_error_is_marked_and_not_partial() -> None:
    clock = ManualClock()
    p, d = two_sources()
    f = fed(p, d, clock=clock, cache=CacheConfig(ttl_s=10, max_stale_s=100))
    fresh = await f.query(FederatedQuery(subject_ids=("s1",)))
    clock.advance(30)
    d.fail = SourceUnavailableError("datadog-a: 503", source="datadog-a")
    stale = await f.query(FederatedQuery(subject_ids=("s1",)))
    status = {s.source: s for s in stale.sources}
    assert status["datadog-a"].stale
    assert status["datadog-a"].status == "ok"
    assert not status["phoenix-a"].stale
    assert not stale.partial
    assert [a.id for a in stale.data] == [a.id for a in fresh.data]
    # A stale answer is not kept as a merged result: the next query asks the source again.
    before = d.started
    await f.query(FederatedQuery(subject_ids=("s1",)))
    assert d.started == before + 1
    clock.advance(100)
    page = await f.query(FederatedQuery(subject_ids=("s1",)))
    assert page.partial


async def test_partial_answers_are_not_kept() -> None:
    p, d = two_sources()
    d.fail = SourceUnavailableError("datadog-a: 503", source="datadog-a")
    f = fed(p, d)
    assert (await f.query(FederatedQuery(subject_ids=("s1",)))).partial
    d.fail = None
    healed = await f.query(FederatedQuery(subject_ids=("s1",)))
    assert not healed.partial
    assert {a.source for a in healed.data} == {"phoenix-a", "datadog-a"}


async def test_cache_disabled() -> None:
    p = phoenix(items=many("phoenix-a", 3))
    f = fed(p, cache=CacheConfig(enabled=False))
    for _ in range(3):
        page = await f.query(FederatedQuery(subject_ids=("s1",)))
        assert not page.sources[0].cached
    assert len(p.calls) == 3


# --- writes ---------------------------------------------------------------------------------------


def item(subject: str = "s1", **kw: Any) -> AnnotationWrite:
    return AnnotationWrite(subject_id=subject, name=kw.pop("name", "correctness"), label="good", **kw)


async def test_write_then_read_your_write() -> None:
    p, d = two_sources()
    f = fed(p, d)
    query = FederatedQuery(subject_ids=("s1", "s2"))
    before = await f.query(query)
    assert (await f.query(query)).sources[0].cached
    result = await f.write("phoenix-a", [item("s1", name="tone")])
    assert len(result.ids) == 1
    after = await f.query(query)
    assert result.ids[0] in {a.id for a in after.data}
    assert len(after.data) == len(before.data) + 1
    status = {s.source: s for s in after.sources}
    assert not status["phoenix-a"].cached
    assert set(p.calls[-1].subject_ids) == {"s1"}, "only the written subject is fetched again"
    assert status["datadog-a"].cached


async def test_write_refusals() -> None:
    p, d = two_sources()
    f = fed(p, d)
    with pytest.raises(UnsupportedError, match="read-only"):
        await f.write("datadog-a", [item()])
    with pytest.raises(UnsupportedError, match="span"):
        await f.write("phoenix-a", [item(), item(subject_kind=SubjectKind.SPAN)])
    with pytest.raises(ForbiddenError):
        await f.write("phoenix-a", [item()], allowed_sources=frozenset({"datadog-a"}))
    with pytest.raises(RequestValidationError, match="unknown source"):
        await f.write("nope", [item()])
    with pytest.raises(RequestValidationError, match="at least one"):
        await f.write("phoenix-a", [])
    with pytest.raises(PayloadTooLargeError, match=str(MAX_WRITE_ITEMS)):
        await f.write("phoenix-a", [item()] * (MAX_WRITE_ITEMS + 1))
    assert p.writes == []


async def test_failed_write_still_invalidates() -> None:
    p = phoenix(items=many("phoenix-a", 2))
    f = fed(p)
    await f.query(FederatedQuery(subject_ids=("s1",)))

    async def timeout(items: object) -> None:
        raise SourceTimeoutError("phoenix-a: slow write", source="phoenix-a")

    p.write = timeout  # type: ignore[method-assign,assignment]
    with pytest.raises(SourceTimeoutError):
        await f.write("phoenix-a", [item()])
    assert not (await f.query(FederatedQuery(subject_ids=("s1",)))).sources[0].cached


# --- breaker, health, observer --------------------------------------------------------------------


async def test_breaker_opens_then_recovers() -> None:
    clock = ManualClock()
    p, d = two_sources()
    d.fail = SourceUnavailableError("datadog-a: 503", source="datadog-a")
    f = fed(
        p,
        d,
        clock=clock,
        cache=CacheConfig(enabled=False),
        breaker_failure_threshold=2,
        breaker_reset_timeout_s=5,
    )
    for _ in range(2):
        await f.query(FederatedQuery(subject_ids=("s1",)))
    assert f.circuit_state("datadog-a") == "open"
    calls = len(d.calls)
    page = await f.query(FederatedQuery(subject_ids=("s1",)))
    status = {s.source: s for s in page.sources}
    assert status["datadog-a"].error is not None
    assert "circuit open" in status["datadog-a"].error["detail"]
    assert len(d.calls) == calls, "no request while open"
    clock.advance(5)
    assert f.circuit_state("datadog-a") == "half_open"
    d.fail = None
    healed = await f.query(FederatedQuery(subject_ids=("s1",)))
    assert not healed.partial
    assert f.circuit_state("datadog-a") == "closed"


async def test_per_source_concurrency_cap() -> None:
    running = 0
    peak = 0
    p = phoenix(items=many("phoenix-a", 2, subject="s0"))
    plain_fetch = p.fetch

    async def counting_fetch(query: Any) -> list[Annotation]:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1
        return await plain_fetch(query)

    p.fetch = counting_fetch  # type: ignore[method-assign]
    f = fed(p, max_inflight_per_source=2)
    pages = await asyncio.gather(*(f.query(FederatedQuery(subject_ids=(f"s{i}",))) for i in range(8)))
    assert peak == 2
    assert len(pages[0].data) == 2


class Recorder(NullObserver):
    def __init__(self) -> None:
        self.upstream: list[tuple[str, str, str]] = []
        self.cache: list[tuple[str, str]] = []
        self.inflight: list[tuple[str, int]] = []
        self.circuit: list[tuple[str, str]] = []

    def on_upstream(self, source: str, operation: str, elapsed_s: float, outcome: str) -> None:
        assert elapsed_s >= 0
        self.upstream.append((source, operation, outcome))

    def on_cache(self, source: str, result: str) -> None:
        self.cache.append((source, result))

    def on_inflight(self, source: str, delta: int) -> None:
        self.inflight.append((source, delta))

    def on_circuit(self, source: str, state: str) -> None:
        self.circuit.append((source, state))


async def test_observer_hooks() -> None:
    clock = ManualClock()
    rec = Recorder()
    p, d = two_sources()
    d.fail = SourceUnavailableError("datadog-a: 503", source="datadog-a")
    f = fed(p, d, clock=clock, observer=rec, breaker_failure_threshold=1, cache=CacheConfig(ttl_s=10))
    await f.query(FederatedQuery(subject_ids=("s1",)))
    assert sorted(rec.upstream) == [
        ("datadog-a", "fetch", "source_unavailable"),
        ("phoenix-a", "fetch", "ok"),
    ]
    assert sorted(rec.cache) == [("datadog-a", "miss"), ("phoenix-a", "miss")]
    assert rec.circuit == [("datadog-a", "open")]
    assert sum(delta for _, delta in rec.inflight) == 0
    assert len(rec.inflight) == 4
    rec.upstream.clear()
    await f.query(FederatedQuery(subject_ids=("s1",)))
    assert rec.upstream == [("datadog-a", "fetch", "circuit_open")]
    assert ("phoenix-a", "hit") in rec.cache
    await f.write("phoenix-a", [item()])
    assert rec.upstream[-1] == ("phoenix-a", "write", "ok")


async def test_observer_with_only_some_hooks() -> None:
    class OnlyCache:
        def __init__(self) -> None:
            self.seen: list[str] = []

        def on_cache(self, source: str, result: str) -> None:
            self.seen.append(result)

    only = OnlyCache()
    f = fed(phoenix(items=many("phoenix-a", 1)), observer=only)  # type: ignore[arg-type]
    await f.query(FederatedQuery(subject_ids=("s1",)))
    await f.query(FederatedQuery(subject_ids=("s1",)))
    assert only.seen == ["miss", "hit"]


async def test_sources_info_and_ready() -> None:
    clock = ManualClock()
    p, d = two_sources()
    d.healthy = False
    f = fed(p, d, clock=clock)
    reports = await f.ready()
    assert {name: r.ok for name, r in reports.items()} == {"phoenix-a": True, "datadog-a": False}
    infos = await f.sources_info()
    assert [i.name for i in infos] == ["phoenix-a", "datadog-a"]
    assert infos[0].provider is ProviderKind.PHOENIX
    assert infos[0].capabilities.writable_kinds
    assert infos[0].circuit_state == "closed"
    assert infos[0].last_health is not None
    assert infos[0].last_health.version == "fake-1"
    assert infos[0].last_checked_at is not None
    assert infos[1].last_health is not None
    assert not infos[1].last_health.ok
    assert infos[0].extra == {"consecutive_failures": 0, "retry_in_s": 0.0, "in_flight": 0}
    checked = infos[0].last_checked_at
    again = await f.sources_info()
    assert again[0].last_checked_at == checked, "a recent check is reused"
    clock.advance(60)
    later = await f.sources_info()
    assert later[0].last_checked_at is not None
    assert later[0].last_checked_at >= checked


async def test_health_that_raises_or_hangs_is_unhealthy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(federation_limits, "HEALTH_TIMEOUT_S", 0.05)
    p, d = two_sources()

    async def broken() -> None:
        raise RuntimeError("boom")

    async def hang() -> None:
        await asyncio.sleep(10)

    p.health = broken  # type: ignore[method-assign,assignment]
    d.health = hang  # type: ignore[method-assign,assignment]
    reports = await fed(p, d).ready()
    assert not reports["phoenix-a"].ok
    assert "RuntimeError" in (reports["phoenix-a"].detail or "")
    assert not reports["datadog-a"].ok
    assert "TimeoutError" in (reports["datadog-a"].detail or "")


async def test_construction_and_close() -> None:
    with pytest.raises(ValueError, match="unique"):
        fed(phoenix(), phoenix())
    with pytest.raises(ValueError, match="cursor_secret"):
        Federation([phoenix()], CacheConfig(), cursor_secret=b"")
    p, d = two_sources()
    f = fed(p, d)
    assert f.source_names == ["phoenix-a", "datadog-a"]
    with pytest.raises(RequestValidationError):
        f.circuit_state("nope")
    await f.aclose()
    assert p.closed
    assert d.closed


# --- streaming (exports) -------------------------------------------------------------------------


async def test_stream_yields_every_match_once_in_chunks_sized_by_density() -> None:
    """One subject first, then chunks of about EXPORT_TARGET_RECORDS annotations at the density
    seen (at most EXPORT_CHUNK_SUBJECTS subjects); each chunk in answer order; nothing cached."""
    subjects = [f"s{i:03d}" for i in range(120)]
    items = [ann("phoenix-a", s, t, native_id=f"{s}-{t}") for s in subjects for t in range(100)]
    p = phoenix(items=items)
    f = fed(p)
    pages = [page async for page in f.stream(FederatedQuery(subject_ids=tuple(subjects)))]
    sizes = [len({r.subject_id for r in page.records}) for page in pages]
    # 1, 1 (both started before any density is known), then 2,000 / 100 = 20 a chunk.
    assert sizes[:2] == [1, 1]
    assert set(sizes[2:-1]) == {federation_limits.EXPORT_TARGET_RECORDS // 100}
    assert sum(sizes) == len(subjects)
    ids = [r.id for page in pages for r in page.records]
    assert len(ids) == len(set(ids)) == len(items)
    for page in pages:
        keys = [(-r.updated_us, r.id) for r in page.records]
        assert keys == sorted(keys)
    assert len(f.cache) == 0
    assert [c.subject_ids for c in p.calls][:2] == [("s000",), ("s001",)]


async def test_stream_of_an_identifier_only_query_is_one_chunk() -> None:
    p = phoenix(
        items=[ann("phoenix-a", "s1", 1, identifier="run-1"), ann("phoenix-a", "s2", 2, identifier="run-1")]
    )
    pages = [page async for page in fed(p).stream(FederatedQuery(identifiers=("run-1",)))]
    assert [len(page.records) for page in pages] == [2]
