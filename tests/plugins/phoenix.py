"""Fixtures for a real Phoenix server, started once per test run (registered by tests/conftest.py).

- ``phoenix_server``: Phoenix without auth; ``phoenix_auth_server``: Phoenix with auth on (admin
  secret in ``.admin_secret``). Both session-scoped, on 127.0.0.1, stopped at the end of the run.
  A server is only started when a collected test uses it, and both are launched as soon as
  collection is over, so their ~10-15 s start-ups overlap with each other.
- If Phoenix cannot start, the fixture **fails** (with the tail of Phoenix's log); it never skips.
- ``phoenix_seeded``: a project seeded through Phoenix's own REST API (210 sessions of one trace
  each, 2,100 session annotations, 420 trace annotations, 21 span annotations; ~6 s); returns
  what was written, so tests compute their expectations independently of the provider.
- ``phoenix_project``: a fresh, small project per test (for writes that must not disturb others).
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from annotation_gateway.devservers.phoenix import (
    PhoenixSeeder,
    PhoenixServer,
    PhoenixStartError,
    new_span_id,
    new_trace_id,
)

_SERVERS: dict[str, PhoenixServer] = {}
_LAUNCH_ERRORS: dict[str, PhoenixStartError] = {}
_FIXTURE_OF = {"noauth": "phoenix_server", "auth": "phoenix_auth_server"}


def _server(mode: str) -> PhoenixServer:
    if mode not in _SERVERS:
        _SERVERS[mode] = PhoenixServer(auth=mode == "auth")
    return _SERVERS[mode]


def pytest_collection_finish(session: pytest.Session) -> None:
    """Launch (without waiting) every Phoenix some selected test needs, so start-ups overlap."""
    if session.config.option.collectonly:
        return
    used: set[str] = set()
    for item in session.items:
        used.update(getattr(item, "fixturenames", ()))
    for mode, fixture_name in _FIXTURE_OF.items():
        if fixture_name in used:
            try:
                _server(mode).launch()
            except PhoenixStartError as exc:  # reported by the fixture, as a failure
                _LAUNCH_ERRORS[mode] = exc


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    for server in _SERVERS.values():
        server.stop()


def _started(mode: str) -> PhoenixServer:
    if mode in _LAUNCH_ERRORS:
        raise _LAUNCH_ERRORS[mode]
    server = _server(mode)
    server.start()  # waits for the launched process; raises PhoenixStartError with its log
    return server


@pytest.fixture(scope="session")
def phoenix_server() -> Iterator[PhoenixServer]:
    """A real Phoenix without auth, on loopback."""
    server = _started("noauth")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def phoenix_auth_server() -> Iterator[PhoenixServer]:
    """A real Phoenix with auth on; ``admin_secret`` mints keys (``create_system_api_key``)."""
    server = _started("auth")
    yield server
    server.stop()


# --- seeded data ------------------------------------------------------------------------------

SESSION_NAMES = ("quality", "tone", "helpfulness", "safety", "relevance")
SESSION_IDENTIFIERS = ("", "reviewer-1")
TRACE_NAMES = ("resolved", "latency_ok")
ANNOTATOR_KINDS = ("HUMAN", "LLM", "CODE")
LABELS = ("good", "ok", "bad")


@dataclass(frozen=True)
class Seeded:
    """One annotation as written to Phoenix, with the GlobalID Phoenix gave it."""

    gid: str
    kind: str  # session | trace | span
    subject_id: str
    name: str
    identifier: str
    annotator_kind: str
    label: str | None
    score: float | None
    explanation: str | None
    metadata: dict[str, Any]


@dataclass
class PhoenixDataset:
    """What ``phoenix_seeded`` wrote, for tests to derive expectations from."""

    base_url: str
    project: str
    project_id: str
    session_ids: list[str]
    trace_ids: list[str]
    traces_of_session: dict[str, list[str]]
    span_ids: list[str]
    annotations: list[Seeded] = field(default_factory=list)

    def of_kind(self, kind: str) -> list[Seeded]:
        return [a for a in self.annotations if a.kind == kind]


def seed_sessions(
    seeder: PhoenixSeeder, project: str, n_sessions: int, traces_per_session: int = 1
) -> tuple[list[str], dict[str, list[str]], list[str]]:
    """One span per trace, carrying ``session.id``; returns sessions, their traces, the spans.

    One span per trace on purpose: Phoenix stores posted spans ~100 per transaction, about
    0.5 s each on this machine, and annotations need only the session, trace and span to exist.
    """
    run = uuid.uuid4().hex[:8]
    session_ids = [f"{project}-{run}-sess-{i:04d}" for i in range(n_sessions)]
    traces_of: dict[str, list[str]] = {}
    span_ids: list[str] = []
    spans: list[dict[str, Any]] = []
    start = datetime.now(UTC) - timedelta(hours=1)
    for i, session_id in enumerate(session_ids):
        for turn in range(traces_per_session):
            trace_id, span_id = new_trace_id(), new_span_id()
            traces_of.setdefault(session_id, []).append(trace_id)
            span_ids.append(span_id)
            when = start + timedelta(seconds=i * 10 + turn)
            spans.append(
                seeder.span(
                    trace_id=trace_id,
                    span_id=span_id,
                    session_id=session_id,
                    name=f"turn-{turn}",
                    start_time=when,
                )
            )
    seeder.add_spans(project, spans)
    return session_ids, traces_of, span_ids


def _result(n: int) -> dict[str, Any]:
    """A varied result: label only, score only, explanation only, or all three."""
    label, score, explanation = LABELS[n % 3], round((n % 11) / 10, 1), f"because {n}"
    match n % 4:
        case 0:
            return {"label": label}
        case 1:
            return {"score": score}
        case 2:
            return {"explanation": explanation}
        case _:
            return {"label": label, "score": score, "explanation": explanation}


@pytest.fixture(scope="session")
def phoenix_seeded(phoenix_server: PhoenixServer) -> PhoenixDataset:
    """≥2,000 session annotations over 210 sessions, plus trace and span annotations."""
    project = f"gw-seeded-{uuid.uuid4().hex[:6]}"
    with PhoenixSeeder(phoenix_server.base_url) as seeder:
        created = seeder.create_project(project, "annotation-gateway test data")
        session_ids, traces_of, span_ids = seed_sessions(seeder, project, 210)
        counter = itertools.count()
        session_wire = [
            {
                "session_id": session_id,
                "name": name,
                "identifier": identifier,
                "annotator_kind": ANNOTATOR_KINDS[n % 3],
                "result": _result(n),
                "metadata": {"n": n} if n % 5 else {},
            }
            for session_id in session_ids
            for name in SESSION_NAMES
            for identifier in SESSION_IDENTIFIERS
            for n in [next(counter)]
        ]
        trace_ids = [t for s in session_ids for t in traces_of[s]]
        trace_wire = [
            {
                "trace_id": trace_id,
                "name": name,
                "identifier": "",
                "annotator_kind": "CODE",
                "result": _result(n),
                "metadata": {},
            }
            for trace_id in trace_ids
            for name in TRACE_NAMES
            for n in [next(counter)]
        ]
        span_wire = [
            {
                "span_id": span_id,
                "name": "correctness",
                "identifier": "judge",
                "annotator_kind": "LLM",
                "result": _result(n),
                "metadata": {},
            }
            for span_id in span_ids[::10]
            for n in [next(counter)]
        ]
        gids = {
            "session": seeder.annotate_sessions(session_wire),
            "trace": seeder.annotate_traces(trace_wire),
            "span": seeder.annotate_spans(span_wire),
        }
    dataset = PhoenixDataset(
        base_url=phoenix_server.base_url,
        project=project,
        project_id=created["id"],
        session_ids=session_ids,
        trace_ids=trace_ids,
        traces_of_session=traces_of,
        span_ids=span_ids,
    )
    for kind, wire in (("session", session_wire), ("trace", trace_wire), ("span", span_wire)):
        for gid, item in zip(gids[kind], wire, strict=True):
            result = item["result"]
            dataset.annotations.append(
                Seeded(
                    gid=gid,
                    kind=kind,
                    subject_id=item[f"{kind}_id"],
                    name=item["name"],
                    identifier=item["identifier"],
                    annotator_kind=item["annotator_kind"],
                    label=result.get("label"),
                    score=result.get("score"),
                    explanation=result.get("explanation"),
                    metadata=item["metadata"],
                )
            )
    return dataset


@dataclass
class PhoenixProject:
    """A small fresh project: a few sessions, one trace (of one span) each."""

    base_url: str
    project: str
    session_ids: list[str]
    trace_ids: list[str]
    span_ids: list[str]


@pytest.fixture
def phoenix_project(phoenix_server: PhoenixServer) -> PhoenixProject:
    project = f"gw-scratch-{uuid.uuid4().hex[:8]}"
    with PhoenixSeeder(phoenix_server.base_url) as seeder:
        seeder.create_project(project)
        session_ids, traces_of, span_ids = seed_sessions(seeder, project, 3)
    return PhoenixProject(
        base_url=phoenix_server.base_url,
        project=project,
        session_ids=session_ids,
        trace_ids=[traces_of[s][0] for s in session_ids],
        span_ids=span_ids,
    )
