"""The Phoenix provider against a real Phoenix 20.26.1 started by the suite (never skipped).

Data is seeded through Phoenix's own REST API (``tests.plugins.phoenix``), and expectations come
from what was seeded or from Phoenix's own direct answers, never from the provider itself.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from annotation_gateway.devservers.phoenix import PhoenixSeeder, PhoenixServer
from annotation_gateway.errors import (
    RequestValidationError,
    SourceAuthError,
    SourceNotFoundError,
)
from annotation_gateway.model import Annotation, AnnotationWrite, AnnotatorKind, SubjectKind
from annotation_gateway.providers.base import SourceQuery
from annotation_gateway.providers.phoenix import WRITE_BATCH_SIZE, PhoenixProvider, PhoenixSourceConfig
from tests.plugins.phoenix import PhoenixDataset, PhoenixProject, Seeded, seed_sessions

pytestmark = pytest.mark.phoenix

SOURCE = "phoenix-live"
ProviderFactory = Callable[..., PhoenixProvider]


@pytest.fixture
async def make_provider() -> AsyncIterator[ProviderFactory]:
    """Providers over the real aiohttp-backed transport; all closed after the test."""
    made: list[PhoenixProvider] = []

    def make(base_url: str, project: str, *, key: str | None = None, **overrides: Any) -> PhoenixProvider:
        config = PhoenixSourceConfig(
            name=SOURCE,
            base_url=base_url,
            project=project,
            api_key_env="PX_KEY" if key is not None else None,
            **overrides,
        )
        provider = PhoenixProvider.from_config(config, environ={"PX_KEY": key} if key else {})
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.aclose()


def direct(
    base_url: str, project: str, kind: str, params: list[tuple[str, str]], key: str | None = None
) -> set[str]:
    """Phoenix's own answer (GlobalIDs), paged to the end, without the provider."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    found: set[str] = set()
    cursor: str | None = None
    with httpx.Client(base_url=base_url, headers=headers, trust_env=False, timeout=30) as client:
        while True:
            page_params = [*params, ("limit", "10000"), *([("cursor", cursor)] if cursor else [])]
            response = client.get(f"/v1/projects/{project}/{kind}_annotations", params=page_params)
            if response.status_code == 404 and "None of the supplied" in response.text:
                return found
            response.raise_for_status()
            body = response.json()
            found.update(row["id"] for row in body["data"])
            cursor = body["next_cursor"]
            if not cursor:
                return found


def gids(annotations: list[Annotation]) -> list[str]:
    return [a.extensions["phoenix"]["id"] for a in annotations]


def assert_matches_seed(annotation: Annotation, seeded: Seeded, project: str) -> None:
    assert annotation.id == f"{SOURCE}:{seeded.gid}"
    assert annotation.subject.model_dump() == {
        "kind": seeded.kind,
        "id": seeded.subject_id,
        "project": project,
    }
    assert (annotation.name, annotation.identifier) == (seeded.name, seeded.identifier)
    assert (annotation.label, annotation.score, annotation.explanation) == (
        seeded.label,
        seeded.score,
        seeded.explanation,
    )
    assert annotation.annotator.model_dump() == {"kind": AnnotatorKind(seeded.annotator_kind), "id": None}
    assert annotation.metadata == seeded.metadata
    assert annotation.extensions["phoenix"] == {"id": seeded.gid, "source": "API"}
    as_json = annotation.model_dump(mode="json")
    assert as_json["created_at"].endswith("Z")
    assert as_json["updated_at"].endswith("Z")


# --- reading ----------------------------------------------------------------------------------


async def test_every_session_annotation_is_read_exactly_once_with_small_pages(
    phoenix_seeded: PhoenixDataset, make_provider: ProviderFactory
) -> None:
    seeded = {a.gid: a for a in phoenix_seeded.of_kind("session")}
    assert len(seeded) >= 2000
    provider = make_provider(phoenix_seeded.base_url, phoenix_seeded.project, page_size=97)

    got = await provider.fetch(
        SourceQuery(subject_ids=tuple(phoenix_seeded.session_ids), subject_kinds=(SubjectKind.SESSION,))
    )

    assert len(got) == len(seeded)
    assert set(gids(got)) == set(seeded)
    for annotation in got:
        assert_matches_seed(
            annotation, seeded[annotation.extensions["phoenix"]["id"]], phoenix_seeded.project
        )


async def test_all_kinds_are_read_when_no_kind_is_given(
    phoenix_seeded: PhoenixDataset, make_provider: ProviderFactory
) -> None:
    provider = make_provider(phoenix_seeded.base_url, phoenix_seeded.project, page_size=500)
    ids = (*phoenix_seeded.session_ids, *phoenix_seeded.trace_ids, *phoenix_seeded.span_ids)

    got = await provider.fetch(SourceQuery(subject_ids=ids))

    assert sorted(gids(got)) == sorted(a.gid for a in phoenix_seeded.annotations)
    by_kind = {kind: sum(1 for a in got if a.subject.kind == kind) for kind in ("session", "trace", "span")}
    assert by_kind == {kind: len(phoenix_seeded.of_kind(kind)) for kind in ("session", "trace", "span")}


async def test_trace_annotations(phoenix_seeded: PhoenixDataset, make_provider: ProviderFactory) -> None:
    provider = make_provider(phoenix_seeded.base_url, phoenix_seeded.project)
    some = phoenix_seeded.trace_ids[:25]
    expected = {a.gid: a for a in phoenix_seeded.of_kind("trace") if a.subject_id in some}

    got = await provider.fetch(SourceQuery(subject_ids=tuple(some), subject_kinds=(SubjectKind.TRACE,)))

    assert sorted(gids(got)) == sorted(expected)
    for annotation in got:
        assert_matches_seed(
            annotation, expected[annotation.extensions["phoenix"]["id"]], phoenix_seeded.project
        )


FILTERS: list[tuple[str, dict[str, Any], list[tuple[str, str]], Callable[[Seeded], bool]]] = [
    (
        "include names",
        {"names": ("quality", "tone")},
        [("include_annotation_names", "quality"), ("include_annotation_names", "tone")],
        lambda a: a.name in {"quality", "tone"},
    ),
    (
        "exclude names",
        {"exclude_names": ("quality", "safety")},
        [("exclude_annotation_names", "quality"), ("exclude_annotation_names", "safety")],
        lambda a: a.name not in {"quality", "safety"},
    ),
    (
        "identifier",
        {"identifiers": ("reviewer-1",)},
        [("identifier", "reviewer-1")],
        lambda a: a.identifier == "reviewer-1",
    ),
    (
        "identifier and names",
        {"identifiers": ("reviewer-1",), "names": ("helpfulness",), "exclude_names": ("tone",)},
        [
            ("identifier", "reviewer-1"),
            ("include_annotation_names", "helpfulness"),
            ("exclude_annotation_names", "tone"),
        ],
        lambda a: a.identifier == "reviewer-1" and a.name == "helpfulness",
    ),
]


@pytest.mark.parametrize(("label", "query", "phoenix_params", "expect"), FILTERS, ids=[f[0] for f in FILTERS])
async def test_filters_equal_phoenixs_own_answers(
    phoenix_seeded: PhoenixDataset,
    make_provider: ProviderFactory,
    label: str,
    query: dict[str, Any],
    phoenix_params: list[tuple[str, str]],
    expect: Callable[[Seeded], bool],
) -> None:
    provider = make_provider(phoenix_seeded.base_url, phoenix_seeded.project, page_size=250)
    sessions = phoenix_seeded.session_ids[:150]

    got = await provider.fetch(
        SourceQuery(subject_ids=tuple(sessions), subject_kinds=(SubjectKind.SESSION,), **query)
    )

    phoenix = direct(
        phoenix_seeded.base_url,
        phoenix_seeded.project,
        "session",
        [*(("session_ids", s) for s in sessions), *phoenix_params],
    )
    seeded = {a.gid for a in phoenix_seeded.of_kind("session") if a.subject_id in sessions and expect(a)}
    assert len(got) == len(set(gids(got)))
    assert set(gids(got)) == phoenix == seeded
    assert seeded  # the filter selects something


async def test_identifier_only_query_equals_phoenixs_answer(
    phoenix_seeded: PhoenixDataset, make_provider: ProviderFactory
) -> None:
    provider = make_provider(phoenix_seeded.base_url, phoenix_seeded.project)
    got = await provider.fetch(SourceQuery(identifiers=("reviewer-1", "judge")))
    phoenix = {
        gid
        for kind in ("session", "trace", "span")
        for gid in direct(
            phoenix_seeded.base_url,
            phoenix_seeded.project,
            kind,
            [("identifier", "reviewer-1"), ("identifier", "judge")],
        )
    }
    seeded = {a.gid for a in phoenix_seeded.annotations if a.identifier in {"reviewer-1", "judge"}}
    assert sorted(gids(got)) == sorted(phoenix)
    assert set(phoenix) == seeded


async def test_empty_name_and_identifier_filters_are_applied_by_the_provider(
    phoenix_seeded: PhoenixDataset, make_provider: ProviderFactory
) -> None:
    provider = make_provider(phoenix_seeded.base_url, phoenix_seeded.project)
    sessions = phoenix_seeded.session_ids[:20]
    got = await provider.fetch(
        SourceQuery(
            subject_ids=tuple(sessions),
            subject_kinds=(SubjectKind.SESSION,),
            identifiers=("",),
            names=("", "tone"),
        )
    )
    expected = {
        a.gid
        for a in phoenix_seeded.of_kind("session")
        if a.subject_id in sessions and a.identifier == "" and a.name == "tone"
    }
    assert set(gids(got)) == expected
    assert expected


async def test_2500_ids_with_unknown_ones_are_chunked_and_read_once(
    phoenix_seeded: PhoenixDataset, make_provider: ProviderFactory
) -> None:
    provider = make_provider(phoenix_seeded.base_url, phoenix_seeded.project, max_concurrency=4)
    unknown = [str(uuid.uuid4()) for _ in range(2500 - len(phoenix_seeded.session_ids))]
    ids = [*unknown[:1000], *phoenix_seeded.session_ids, *unknown[1000:]]

    got = await provider.fetch(SourceQuery(subject_ids=tuple(ids), subject_kinds=(SubjectKind.SESSION,)))

    assert len(got) == len(phoenix_seeded.of_kind("session"))
    assert set(gids(got)) == {a.gid for a in phoenix_seeded.of_kind("session")}


async def test_unknown_sessions_are_empty(
    phoenix_seeded: PhoenixDataset, make_provider: ProviderFactory
) -> None:
    provider = make_provider(phoenix_seeded.base_url, phoenix_seeded.project)
    assert await provider.fetch(SourceQuery(subject_ids=("no-such-session", str(uuid.uuid4())))) == []


async def test_unknown_project_is_not_found(
    phoenix_seeded: PhoenixDataset, make_provider: ProviderFactory
) -> None:
    provider = make_provider(phoenix_seeded.base_url, f"no-such-project-{uuid.uuid4().hex[:6]}")
    with pytest.raises(SourceNotFoundError, match="not found"):
        await provider.fetch(SourceQuery(subject_ids=tuple(phoenix_seeded.session_ids[:1])))
    report = await provider.health()
    assert not report.ok
    assert report.version == "20.26.1"


async def test_project_by_globalid(phoenix_seeded: PhoenixDataset, make_provider: ProviderFactory) -> None:
    provider = make_provider(phoenix_seeded.base_url, phoenix_seeded.project_id)
    got = await provider.fetch(SourceQuery(subject_ids=tuple(phoenix_seeded.session_ids[:3])))
    assert len(got) == 3 * 10
    assert {a.subject.project for a in got} == {phoenix_seeded.project_id}


async def test_health(phoenix_seeded: PhoenixDataset, make_provider: ProviderFactory) -> None:
    report = await make_provider(phoenix_seeded.base_url, phoenix_seeded.project).health()
    assert report.ok, report.detail
    assert report.version == "20.26.1"
    assert report.extra == {"project": phoenix_seeded.project, "project_id": phoenix_seeded.project_id}


# --- writing ----------------------------------------------------------------------------------


async def test_upsert_keeps_the_id_and_replaces_the_row(
    phoenix_project: PhoenixProject, make_provider: ProviderFactory
) -> None:
    provider = make_provider(phoenix_project.base_url, phoenix_project.project)
    session = phoenix_project.session_ids[0]

    first = await provider.write(
        [
            AnnotationWrite(subject_id=session, name="quality", label="good", score=0.9, metadata={"v": 1}),
            AnnotationWrite(subject_id=session, name="quality", identifier="r2", label="meh"),
        ]
    )
    second = await provider.write(
        [
            AnnotationWrite(
                subject_id=session, name="quality", annotator_kind=AnnotatorKind.LLM, explanation="new"
            )
        ]
    )

    assert second.ids[0] == first.ids[0]
    assert first.ids[1] != first.ids[0]
    got = {a.id: a for a in await provider.fetch(SourceQuery(subject_ids=(session,)))}
    assert set(got) == set(first.ids)
    replaced = got[first.ids[0]]
    assert (replaced.label, replaced.score, replaced.explanation) == (None, None, "new")
    assert replaced.annotator.kind is AnnotatorKind.LLM
    assert replaced.metadata == {}
    assert got[first.ids[1]].identifier == "r2"


async def test_writes_in_several_batches_come_back_in_request_order(
    phoenix_project: PhoenixProject, make_provider: ProviderFactory
) -> None:
    provider = make_provider(phoenix_project.base_url, phoenix_project.project)
    items = [
        AnnotationWrite(subject_id=phoenix_project.session_ids[i % 3], name=f"check-{i:04d}", score=i)
        for i in range(WRITE_BATCH_SIZE * 2 + 37)
    ]
    result = await provider.write(items)
    assert len(result.ids) == len(items) == len(set(result.ids))
    got = {a.id: a for a in await provider.fetch(SourceQuery(subject_ids=tuple(phoenix_project.session_ids)))}
    assert [(got[i].name, got[i].score, got[i].subject.id) for i in result.ids] == [
        (item.name, item.score, item.subject_id) for item in items
    ]


async def test_write_with_an_unknown_session_writes_nothing(
    phoenix_project: PhoenixProject, make_provider: ProviderFactory
) -> None:
    provider = make_provider(phoenix_project.base_url, phoenix_project.project)
    known = phoenix_project.session_ids[0]
    with pytest.raises(SourceNotFoundError) as caught:
        await provider.write(
            [
                AnnotationWrite(subject_id=known, name="mixed", score=1),
                AnnotationWrite(subject_id="does-not-exist", name="mixed", score=1),
            ]
        )
    assert caught.value.errors == [
        {
            "loc": ["annotations", 1, "subject_id"],
            "msg": f"no such session in Phoenix project {phoenix_project.project!r}",
            "type": "unknown_subject",
            "subject_kind": "session",
            "subject_id": "does-not-exist",
        }
    ]
    assert await provider.fetch(SourceQuery(subject_ids=(known,), names=("mixed",))) == []


async def test_write_to_a_session_of_another_project_is_refused(
    phoenix_project: PhoenixProject, phoenix_seeded: PhoenixDataset, make_provider: ProviderFactory
) -> None:
    provider = make_provider(phoenix_project.base_url, phoenix_project.project)
    elsewhere = phoenix_seeded.session_ids[0]
    with pytest.raises(SourceNotFoundError) as caught:
        await provider.write([AnnotationWrite(subject_id=elsewhere, name="x", score=1)])
    assert [e["subject_id"] for e in caught.value.errors or []] == [elsewhere]
    assert (
        direct(
            phoenix_seeded.base_url,
            phoenix_seeded.project,
            "session",
            [("session_ids", elsewhere), ("include_annotation_names", "x")],
        )
        == set()
    )


async def test_reserved_name_is_refused(
    phoenix_project: PhoenixProject, make_provider: ProviderFactory
) -> None:
    provider = make_provider(phoenix_project.base_url, phoenix_project.project)
    with pytest.raises(RequestValidationError, match="reserved"):
        await provider.write(
            [AnnotationWrite(subject_id=phoenix_project.session_ids[0], name="note", explanation="x")]
        )


async def test_trace_and_span_writes(phoenix_project: PhoenixProject, make_provider: ProviderFactory) -> None:
    provider = make_provider(phoenix_project.base_url, phoenix_project.project)
    trace, span = phoenix_project.trace_ids[0], phoenix_project.span_ids[1]
    result = await provider.write(
        [
            AnnotationWrite(subject_id=trace, subject_kind=SubjectKind.TRACE, name="resolved", label="yes"),
            AnnotationWrite(subject_id=span, subject_kind=SubjectKind.SPAN, name="correct", score=1.0),
        ]
    )
    got = await provider.fetch(SourceQuery(subject_ids=(trace, span)))
    assert sorted(a.id for a in got) == sorted(result.ids)
    assert {(a.subject.kind, a.subject.id) for a in got} == {
        (SubjectKind.TRACE, trace),
        (SubjectKind.SPAN, span),
    }
    with pytest.raises(SourceNotFoundError):
        await provider.write(
            [AnnotationWrite(subject_id="0" * 32, subject_kind=SubjectKind.TRACE, name="x", score=1)]
        )


async def test_awkward_session_ids_round_trip(
    phoenix_server: PhoenixServer, make_provider: ProviderFactory
) -> None:
    # Phoenix strips leading/trailing blanks from session.id, so blanks go inside.
    project = f"gw odd {uuid.uuid4().hex[:6]}"  # a space: the path segment must be encoded
    odd = ['it\'s "quoted", with a comma', "unicodé/日本?&=#", "inner  spaces", "back\\slash"]
    with PhoenixSeeder(phoenix_server.base_url) as seeder:
        seeder.create_project(project)
        spans = [
            seeder.span(trace_id=uuid.uuid4().hex, span_id=uuid.uuid4().hex[:16], session_id=s) for s in odd
        ]
        seeder.add_spans(project, spans)
    provider = make_provider(phoenix_server.base_url, project)

    result = await provider.write(
        [AnnotationWrite(subject_id=s, name="q", identifier=s, score=1) for s in odd]
    )
    got = await provider.fetch(SourceQuery(subject_ids=tuple(odd), identifiers=tuple(odd)))

    assert sorted((a.subject.id, a.identifier) for a in got) == sorted((s, s) for s in odd)
    assert sorted(a.id for a in got) == sorted(result.ids)


# --- auth ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def auth_project(phoenix_auth_server: PhoenixServer) -> tuple[str, list[str], str]:
    """A project on the auth server seeded with the admin secret; a system API key for it."""
    project = f"gw-auth-{uuid.uuid4().hex[:6]}"
    with PhoenixSeeder(phoenix_auth_server.base_url, api_key=phoenix_auth_server.admin_secret) as seeder:
        seeder.create_project(project)
        session_ids, _, _ = seed_sessions(seeder, project, 2)
        seeder.annotate_sessions(
            [
                {"session_id": s, "name": "quality", "annotator_kind": "HUMAN", "result": {"label": "good"}}
                for s in session_ids
            ]
        )
    return project, session_ids, phoenix_auth_server.create_system_api_key("gateway-tests")


async def test_auth_with_a_system_api_key(
    phoenix_auth_server: PhoenixServer,
    auth_project: tuple[str, list[str], str],
    make_provider: ProviderFactory,
) -> None:
    project, session_ids, key = auth_project
    provider = make_provider(phoenix_auth_server.base_url, project, key=key)

    got = await provider.fetch(SourceQuery(subject_ids=tuple(session_ids)))
    written = await provider.write([AnnotationWrite(subject_id=session_ids[0], name="tone", label="calm")])
    report = await provider.health()

    assert {a.subject.id for a in got} == set(session_ids)
    assert written.ids[0].startswith(f"{SOURCE}:")
    assert report.ok, report.detail


@pytest.mark.parametrize("key", ["wrong-key-value", None], ids=["wrong key", "no key"])
async def test_auth_rejects_a_wrong_or_missing_key(
    phoenix_auth_server: PhoenixServer,
    auth_project: tuple[str, list[str], str],
    make_provider: ProviderFactory,
    key: str | None,
) -> None:
    project, session_ids, _ = auth_project
    provider = make_provider(phoenix_auth_server.base_url, project, key=key)

    with pytest.raises(SourceAuthError) as read_error:
        await provider.fetch(SourceQuery(subject_ids=tuple(session_ids)))
    with pytest.raises(SourceAuthError):
        await provider.write([AnnotationWrite(subject_id=session_ids[0], name="tone", label="x")])
    report = await provider.health()

    assert read_error.value.upstream_status == 401
    assert "Invalid token" in read_error.value.detail
    assert not report.ok
    assert report.version == "20.26.1"  # the version endpoint is public
    if key:
        assert key not in read_error.value.detail
        assert key not in (report.detail or "")


async def test_auth_off_needs_no_key(phoenix_seeded: PhoenixDataset, make_provider: ProviderFactory) -> None:
    provider = make_provider(phoenix_seeded.base_url, phoenix_seeded.project, key="ignored-when-auth-is-off")
    assert len(await provider.fetch(SourceQuery(subject_ids=tuple(phoenix_seeded.session_ids[:2])))) == 20
