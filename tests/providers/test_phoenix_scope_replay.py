"""Phoenix scope discovery against recorded answers of a real Phoenix 20.26.1 (respx, no network).

The transcripts in ``tests/fixtures/contracts/phoenix/scope`` were recorded by
``tests/fixtures/record_phoenix_scope.py``: the sessions and traces listings paged through their
cursors, narrowed by ``end_time``, empty, of an unknown project, and with a bad cursor.
Expectations are read from the transcripts' bodies.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import respx

from annotation_gateway.errors import PayloadTooLargeError, SourceNotFoundError, SourceRequestError
from annotation_gateway.model import SubjectKind
from annotation_gateway.providers.base import ScopeRequest
from tests.providers.test_phoenix_replay import BASE, Replay, make_config, make_provider, transcript

RECORDED_PROJECT = "gw-scope-rec"
BOTH = (SubjectKind.SESSION, SubjectKind.TRACE)


def listed(name: str, key: str) -> list[str]:
    return [row[key] for row in transcript(name)["response"]["body_json"]["data"]]


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(using="httpx", base_url=BASE, assert_all_called=False) as router:
        yield router


async def discover(
    mock: respx.MockRouter, replay: Replay, request: ScopeRequest, project: str = RECORDED_PROJECT
):
    mock.get(url__regex=r".*").mock(side_effect=replay)
    provider = make_provider(make_config(project=project))
    try:
        return await provider.discover(request)
    finally:
        await provider.aclose()


async def test_sessions_and_traces_are_listed_through_every_cursor(mock: respx.MockRouter) -> None:
    replay = Replay("scope/01", "scope/02", "scope/06", "scope/07")
    found = await discover(mock, replay, ScopeRequest(subject_kinds=BOTH, max_subjects=1000))
    sessions = listed("scope/01", "session_id") + listed("scope/02", "session_id")
    traces = listed("scope/06", "trace_id") + listed("scope/07", "trace_id")
    assert len(sessions) == 3
    assert len(traces) == 7
    expected = sorted([(s, SubjectKind.SESSION) for s in sessions] + [(t, SubjectKind.TRACE) for t in traces])
    assert list(found.subjects) == expected
    assert found.queue_ids is None
    # Each listing followed its cursor to the end: two pages each.
    assert sorted(r.url.path.rsplit("/", 1)[1] for r in replay.requests) == ["sessions"] * 2 + ["traces"] * 2


async def test_a_time_window_narrows_traces_at_phoenix_and_sessions_here(mock: respx.MockRouter) -> None:
    before = datetime(2026, 11, 30, 13, 0, tzinfo=UTC)
    replay = Replay("scope/01", "scope/02", "scope/08")
    found = await discover(
        mock, replay, ScopeRequest(subject_kinds=BOTH, max_subjects=1000, started_before=before)
    )
    trace_ids = listed("scope/08", "trace_id")
    rows = (
        transcript("scope/01")["response"]["body_json"]["data"]
        + transcript("scope/02")["response"]["body_json"]["data"]
    )
    early = [r["session_id"] for r in rows if datetime.fromisoformat(r["start_time"]) < before]
    assert early == ["rec-sess-0"]
    assert list(found.subjects) == sorted(
        [(s, SubjectKind.SESSION) for s in early] + [(t, SubjectKind.TRACE) for t in trace_ids]
    )
    [traces] = [r for r in replay.requests if r.url.path.endswith("/traces")]
    assert traces.url.params["end_time"] == before.isoformat()


async def test_an_empty_project_has_an_empty_scope(mock: respx.MockRouter) -> None:
    replay = Replay("scope/03", "scope/09")
    found = await discover(
        mock, replay, ScopeRequest(subject_kinds=BOTH, max_subjects=10), project="gw-scope-empty"
    )
    assert found.subjects == ()


@pytest.mark.parametrize("number", ["04", "10"])
async def test_an_unknown_project_is_not_found(mock: respx.MockRouter, number: str) -> None:
    kind = SubjectKind.SESSION if number == "04" else SubjectKind.TRACE
    replay = Replay(f"scope/{number}")
    with pytest.raises(SourceNotFoundError, match="gw-no-such-project not found"):
        await discover(
            mock, replay, ScopeRequest(subject_kinds=(kind,), max_subjects=10), project="gw-no-such-project"
        )


@pytest.mark.parametrize(("first", "bad"), [("01", "05"), ("06", "11")])
async def test_a_cursor_phoenix_refuses_is_its_4xx_not_ours(
    mock: respx.MockRouter, first: str, bad: str
) -> None:
    """Phoenix answering 422 to a cursor it issued (a Phoenix restarted between pages) is the
    vendor refusing the request: a SourceRequestError naming its message, never a 5xx of ours."""
    kind = SubjectKind.SESSION if first == "01" else SubjectKind.TRACE
    path = f"/v1/projects/{RECORDED_PROJECT}/{'sessions' if first == '01' else 'traces'}"
    replay = Replay(f"scope/{first}", f"scope/{bad}")
    assert transcript(f"scope/{bad}")["response"]["status"] == 422
    # The recorded refusal of a cursor, served where the issued cursor is followed.
    issued = transcript(f"scope/{first}")["response"]["body_json"]["next_cursor"]
    replay.table[("GET", path, (("cursor", issued),))] = replay.table[
        ("GET", path, (("cursor", "not-a-cursor"),))
    ]
    with pytest.raises(SourceRequestError, match="Invalid cursor") as raised:
        await discover(mock, replay, ScopeRequest(subject_kinds=(kind,), max_subjects=1000))
    assert raised.value.status < 500


async def test_more_subjects_than_allowed_is_413_at_once(mock: respx.MockRouter) -> None:
    replay = Replay("scope/06", "scope/07")
    with pytest.raises(PayloadTooLargeError, match="more than 3 subjects"):
        await discover(mock, replay, ScopeRequest(subject_kinds=(SubjectKind.TRACE,), max_subjects=3))
    assert len(replay.requests) == 1  # stopped at the first page that went over
