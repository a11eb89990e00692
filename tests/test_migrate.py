"""Migrate against a real Phoenix and the Datadog simulator, in both directions.

Expectations come from what the tests seeded (through each vendor's own API), never from the
code under test. Loopback only; nothing is skipped.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from annotation_gateway.compare import CompareRequest, compare
from annotation_gateway.devservers.phoenix import PhoenixSeeder, PhoenixServer
from annotation_gateway.migrate import (
    PROVENANCE_MARKER,
    CheckpointMismatchError,
    MigrationProgress,
    MigrationReport,
    migrate,
    migration_queue_name,
    verify,
)
from annotation_gateway.model import Annotation, Queue
from annotation_gateway.providers import AnnotationProvider, SourceQuery, build_provider
from annotation_gateway.providers.datadog import DatadogProvider
from annotation_gateway.providers.phoenix import PhoenixSourceConfig
from tests.plugins.datadog import DatadogSimulator
from tests.plugins.phoenix import seed_sessions

pytestmark = pytest.mark.phoenix

DD_PROJECT = "llm-obs-project-1"


# --- helpers --------------------------------------------------------------------------------


class Providers:
    """Builds providers for a test and closes them at the end."""

    def __init__(self) -> None:
        self.made: list[AnnotationProvider] = []

    def phoenix(self, server: PhoenixServer, project: str, name: str = "phoenix-src") -> AnnotationProvider:
        config = PhoenixSourceConfig(name=name, base_url=server.base_url, project=project)  # type: ignore[arg-type]
        provider = build_provider(config)
        self.made.append(provider)
        return provider

    def datadog(self, sim: DatadogSimulator, name: str = "datadog-src") -> DatadogProvider:
        provider = DatadogProvider.from_config(sim.source_config(name), environ=sim.environ)
        self.made.append(provider)
        return provider


@pytest.fixture
async def providers() -> AsyncIterator[Providers]:
    made = Providers()
    yield made
    for provider in made.made:
        await provider.aclose()


def new_project(server: PhoenixServer, n_sessions: int) -> tuple[str, list[str], list[str], list[str]]:
    """A fresh Phoenix project: (name, session ids, one trace id per session, root span ids)."""
    project = f"gw-migrate-{uuid.uuid4().hex[:8]}"
    with PhoenixSeeder(server.base_url) as seeder:
        seeder.create_project(project)
        sessions, traces_of, roots = seed_sessions(seeder, project, n_sessions)
    return project, sessions, [traces_of[s][0] for s in sessions], roots


def datadog_seed(sessions: list[str], trace: str, *, queue: str = "support-quality") -> dict[str, Any]:
    """Two queues; sessions reviewed by alice and bob, one trace, one unknown session, one experiment."""
    labels = [
        {"name": "quality", "type": "score", "min": 0, "max": 5, "has_reasoning": True},
        {"name": "topic", "type": "categorical", "values": ["billing", "bug", "other"]},
        {"name": "resolved", "type": "boolean", "has_assessment": True},
        {"name": "feedback", "type": "text"},
    ]
    first: list[dict[str, Any]] = [
        {
            "type": "session",
            "content_id": sessions[0],
            "annotations": [
                {
                    "user": "alice",
                    "label_values": [
                        {"label": "quality", "value": 4, "reasoning": "clear answer"},
                        {"label": "topic", "value": ["billing", "bug"]},
                        {"label": "resolved", "value": True, "assessment": "pass"},
                    ],
                },
                {"user": "bob", "label_values": {"quality": 2, "feedback": "too long"}},
            ],
        },
        {
            "type": "session",
            "content_id": sessions[1],
            "annotations": [{"user": "alice", "label_values": {"topic": ["other"], "resolved": False}}],
        },
        {
            "type": "trace",
            "content_id": trace,
            "annotations": [{"user": "bob", "label_values": {"quality": 5}}],
        },
        {
            "type": "session",
            "content_id": "ghost-session-" + sessions[0],
            "annotations": [{"user": "alice", "label_values": {"quality": 1}}],
        },
        {
            "type": "experiment_trace",
            "content_id": "experiment-" + sessions[0],
            "annotations": [{"user": "alice", "label_values": {"quality": 3}}],
        },
    ]
    second: list[dict[str, Any]] = [
        {
            "type": "session",
            "content_id": sessions[2],
            "annotations": [{"user": "carol", "label_values": {"quality": 3}}],
        },
        {
            "type": "session",
            "content_id": sessions[0],
            "annotations": [{"user": "alice", "label_values": {"quality": 5}}],
        },
    ]
    return {
        "queues": [
            {"name": queue, "label_schemas": labels, "interactions": first},
            {"name": f"{queue}-second", "label_schemas": labels[:1], "interactions": second},
        ]
    }


# Canonical annotations the seed above yields, per subject role (counted by hand from the seed):
# sessions[0]: alice 3 + bob 2 + alice (second queue) 1 = 6; sessions[1]: 2; sessions[2]: 1;
# trace: 1; ghost: 1; experiment: 1.
DD_EXPECTED = {"s0": 6, "s1": 2, "s2": 1, "trace": 1, "ghost": 1, "experiment": 1}


async def everything(provider: AnnotationProvider, subject_ids: list[str]) -> list[Annotation]:
    return await provider.fetch(SourceQuery(subject_ids=tuple(subject_ids)))


def assert_no_differences(result: Any) -> None:
    overall = result.overall
    assert overall.n_rows > 0
    assert (overall.label_differs, overall.score_differs, overall.only_left, overall.only_right) == (
        0,
        0,
        0,
        0,
    ), [(r.subject_id, r.name, r.status) for r in result.rows if r.status != "agree"]


def seed_phoenix_annotations(
    server: PhoenixServer, sessions: list[str], traces: list[str], roots: list[str]
) -> int:
    """Session, trace and span annotations of every shape; returns how many were written."""
    session_rows: list[dict[str, Any]] = []
    for i, session in enumerate(sessions):
        session_rows += [
            {
                "session_id": session,
                "name": "quality",
                "identifier": "",
                "annotator_kind": "HUMAN",
                "result": {"label": ["good", "bad"][i % 2], "score": 0.5 + i, "explanation": f"why {i}"},
                "metadata": {"ticket": i},
            },
            {
                "session_id": session,
                "name": "quality",
                "identifier": "reviewer-1",
                "annotator_kind": "LLM",
                "result": {"label": "good", "score": 0.9},
                "metadata": {},
            },
            {
                "session_id": session,
                "name": "helpfulness",
                "identifier": "",
                "annotator_kind": "CODE",
                "result": {"score": float(i)},
                "metadata": {},
            },
            {
                "session_id": session,
                "name": "notes_text",
                "identifier": "",
                "annotator_kind": "HUMAN",
                "result": {"explanation": f"note {i}"},
                "metadata": {},
            },
        ]
    trace_rows = [
        {
            "trace_id": trace,
            "name": "resolved",
            "identifier": "",
            "annotator_kind": "CODE",
            "result": {"label": "yes"},
            "metadata": {},
        }
        for trace in traces
    ]
    span_rows = [
        {
            "span_id": roots[0],
            "name": "correctness",
            "identifier": "",
            "annotator_kind": "LLM",
            "result": {"label": "correct"},
            "metadata": {},
        }
    ]
    with PhoenixSeeder(server.base_url) as seeder:
        seeder.annotate_sessions(session_rows)
        seeder.annotate_traces(trace_rows)
        seeder.annotate_spans(span_rows)
    return len(session_rows) + len(trace_rows) + len(span_rows)


async def datadog_state(dd: Any, subjects: list[str]) -> list[tuple[Any, ...]]:
    """What Datadog holds (read through its API), without the ids and timestamps a run renews."""
    rows: list[tuple[Any, ...]] = [
        (
            a.queue.name if a.queue else None,
            a.subject.kind.value,
            a.subject.id,
            a.name,
            a.label,
            a.score,
            a.explanation,
            a.extensions["datadog"]["label_type"],
        )
        for a in await everything(dd, subjects)
    ]
    schemas = sorted(
        (q.name, s.name, s.type, tuple(s.values or ()))
        for q in await dd.queues.list_queues()
        for s in q.label_schemas
    )
    return sorted(rows, key=repr) + [("schema", *s) for s in schemas]


# --- Datadog → Phoenix ----------------------------------------------------------------------


async def test_datadog_to_phoenix_copies_reports_and_is_idempotent(
    phoenix_server: PhoenixServer, datadog_sim: DatadogSimulator, providers: Providers
) -> None:
    project, sessions, traces, _ = new_project(phoenix_server, 3)
    datadog_sim.seed(datadog_seed(sessions, traces[0]))
    ghost, experiment = "ghost-session-" + sessions[0], "experiment-" + sessions[0]
    subjects = [*sessions, traces[0], ghost, experiment]
    dd = providers.datadog(datadog_sim)
    px = providers.phoenix(phoenix_server, project)
    seen: list[MigrationProgress] = []

    report = await migrate(dd, px, subjects, batch_size=2, concurrency=2, progress=seen.append)

    total = sum(DD_EXPECTED.values())
    assert report.method == "upsert"
    assert report.annotations_read == total
    assert report.missing_subjects == [ghost]
    assert (report.written, report.updated, report.unchanged, report.failed) == (total - 2, 0, 0, 2)
    reasons = {f.subject_id: f.reason for f in report.failures}
    assert "not found" in reasons[ghost]
    assert "experiment_trace" in reasons[experiment]
    assert [p.batches_done for p in seen] == [1, 2, 3]
    assert seen[-1].subjects_done == len(subjects)

    copied = await everything(px, subjects)
    assert len(copied) == total - 2
    # Identifiers derived from the Datadog annotation and label: unique, so nothing merged.
    assert len({(a.subject.id, a.name, a.identifier) for a in copied}) == len(copied)
    assert all(a.identifier.startswith("dd:") for a in copied)
    alice_topic = next(a for a in copied if a.name == "topic" and a.subject.id == sessions[0])
    origin = alice_topic.metadata["migrated_from"]
    assert alice_topic.label == "billing, bug"
    assert origin["source"] == "datadog-src"
    assert origin["annotator"]
    assert origin["queue"]["name"] == "support-quality"
    assert origin["values"] == ["billing", "bug"]
    resolved = next(a for a in copied if a.name == "resolved" and a.subject.id == sessions[0])
    assert (resolved.label, resolved.score, resolved.metadata["migrated_from"]["assessment"]) == (
        "true",
        1.0,
        "pass",
    )
    assert {a.subject.kind.value for a in copied if a.subject.id == traces[0]} == {"trace"}

    assert_no_differences(await verify(dd, px, subjects, exclude_subjects=report.missing_subjects))

    again = await migrate(dd, px, subjects, batch_size=2)
    assert (again.written, again.updated, again.unchanged) == (0, 0, total - 2)
    assert len(await everything(px, subjects)) == total - 2

    # bob changes one value in Datadog: exactly that annotation is updated in place.
    changed = datadog_seed(sessions, traces[0])
    changed["queues"][0]["interactions"][0]["annotations"][1]["label_values"]["quality"] = 1
    datadog_sim.seed(changed)
    third = await migrate(dd, px, subjects)
    assert (third.written, third.updated, third.unchanged) == (0, 1, total - 3)
    after = await everything(px, subjects)
    assert len(after) == total - 2
    assert sorted(a.score for a in after if a.subject.id == sessions[0] and a.name == "quality") == [
        1.0,
        4.0,
        5.0,
    ]


async def test_datadog_to_phoenix_dry_run_writes_nothing(
    phoenix_server: PhoenixServer, datadog_sim: DatadogSimulator, providers: Providers
) -> None:
    project, sessions, traces, _ = new_project(phoenix_server, 3)
    datadog_sim.seed(datadog_seed(sessions, traces[0]))
    subjects = [*sessions, traces[0]]
    dd, px = providers.datadog(datadog_sim), providers.phoenix(phoenix_server, project)

    report = await migrate(dd, px, subjects, dry_run=True)

    expected = DD_EXPECTED["s0"] + DD_EXPECTED["s1"] + DD_EXPECTED["s2"] + DD_EXPECTED["trace"]
    assert report.dry_run
    assert (report.written, report.updated, report.failed) == (expected, 0, 0)
    assert await everything(px, subjects) == []


async def test_datadog_to_phoenix_resumed_run_equals_a_clean_run(
    phoenix_server: PhoenixServer, datadog_sim: DatadogSimulator, providers: Providers, tmp_path: Path
) -> None:
    # Phoenix session ids are unique across projects, so the clean run gets its own project and
    # its own (identically annotated) Datadog content ids; states are compared by position.
    project_a, sessions_a, traces_a, _ = new_project(phoenix_server, 3)
    project_b, sessions_b, traces_b, _ = new_project(phoenix_server, 3)
    datadog_sim.seed(datadog_seed(sessions_a, traces_a[0], queue="q"))
    datadog_sim.seed(datadog_seed(sessions_b, traces_b[0], queue="q"))
    subjects_a, subjects_b = [*sessions_a, traces_a[0]], [*sessions_b, traces_b[0]]
    dd = providers.datadog(datadog_sim)
    px_a, px_b = providers.phoenix(phoenix_server, project_a), providers.phoenix(phoenix_server, project_b)
    checkpoint = tmp_path / "dd-to-px.json"

    class Killed(Exception):
        pass

    def die(progress: MigrationProgress) -> None:
        raise Killed

    with pytest.raises(Killed):
        await migrate(dd, px_a, subjects_a, batch_size=1, concurrency=1, checkpoint=checkpoint, progress=die)
    saved = json.loads(checkpoint.read_text())
    assert saved["completed_subjects"] == subjects_a[:1]
    assert not saved["finished"]
    assert len(await everything(px_a, subjects_a)) == DD_EXPECTED["s0"]

    resumed = await migrate(dd, px_a, subjects_a, batch_size=1, concurrency=1, checkpoint=checkpoint)
    clean = await migrate(dd, px_b, subjects_b, batch_size=1)

    assert resumed.subjects_resumed == 1
    assert resumed.batches_total == len(subjects_a) - 1
    # Totals in the checkpoint cover the whole migration, so both reports say the same.
    assert (resumed.written, resumed.updated, resumed.unchanged, resumed.failed) == (
        clean.written,
        clean.updated,
        clean.unchanged,
        clean.failed,
    )

    def state(rows: list[Annotation], subjects: list[str]) -> list[tuple[Any, ...]]:
        where = {s: i for i, s in enumerate(subjects)}
        return sorted(
            (
                where[a.subject.id],
                a.subject.kind.value,
                a.name,
                a.label,
                a.score,
                a.explanation,
                a.annotator.kind.value,
                a.metadata["migrated_from"]["annotator"],
                a.metadata["migrated_from"]["queue"]["name"],
            )
            for a in rows
        )

    rows_a, rows_b = await everything(px_a, subjects_a), await everything(px_b, subjects_b)
    assert len(rows_a) == len({(a.subject.id, a.name, a.identifier) for a in rows_a})
    assert state(rows_a, subjects_a) == state(rows_b, subjects_b)
    assert json.loads(checkpoint.read_text())["finished"] is True


# --- Phoenix → Datadog ----------------------------------------------------------------------


async def test_phoenix_to_datadog_through_queues(
    phoenix_server: PhoenixServer, datadog_sim: DatadogSimulator, providers: Providers
) -> None:
    project, sessions, traces, roots = new_project(phoenix_server, 3)
    n = seed_phoenix_annotations(phoenix_server, sessions, traces, roots)
    subjects = [*sessions, *traces, roots[0]]
    px, dd = providers.phoenix(phoenix_server, project), providers.datadog(datadog_sim)

    report = await migrate(px, dd, subjects, queue_project_id=DD_PROJECT, batch_size=2)

    assert report.method == "annotation_queues"
    assert report.annotations_read == n
    assert (report.written, report.updated, report.unchanged, report.failed) == (n - 1, 0, 0, 1)
    [span_failure] = report.failures
    assert span_failure.subject_id == roots[0]
    assert "not span" in span_failure.reason
    base = migration_queue_name("phoenix-src")
    assert report.queues == [base, f"{base}:reviewer-1"]

    queues = {q.name: q for q in await dd.queues.list_queues()}
    assert set(queues) == {base, f"{base}:reviewer-1"}
    assert all(q.project_id == DD_PROJECT for q in queues.values())
    schema = {s.name: s for s in queues[base].label_schemas}
    assert {k: v.type for k, v in schema.items()} == {
        "quality": "categorical",
        "quality_score": "score",
        "helpfulness": "score",
        "notes_text": "text",
        "resolved": "categorical",
    }
    assert sorted(schema["quality"].values or []) == ["bad", "good"]

    base_queue = next(Queue(id=q.id, name=q.name) for q in queues.values() if q.name == base)
    copied = [
        a
        for a in await everything(dd, subjects)
        if a.queue and a.queue.name and a.queue.name.startswith(base)
    ]
    quality = next(
        a for a in copied if a.name == "quality" and a.subject.id == sessions[0] and a.queue == base_queue
    )
    assert quality.label == "good"
    # What Datadog cannot keep (annotator, identifier, Phoenix id) rides in the reasoning.
    assert quality.explanation is not None
    assert quality.explanation.startswith("why 0\n\n" + PROVENANCE_MARKER)
    origin = json.loads(quality.explanation.split(PROVENANCE_MARKER, 1)[1])
    assert origin["annotator"] == {"kind": "HUMAN", "id": None}
    assert origin["identifier"] == ""
    assert origin["source"] == "phoenix-src"
    assert {a.subject.kind.value for a in copied if a.subject.id == traces[0]} == {"trace"}

    assert_no_differences(await verify(px, dd, subjects))

    def writes() -> int:
        return len([r for r in datadog_sim.requests if r.method in ("POST", "PUT")])

    before = writes()
    again = await migrate(px, dd, subjects, queue_project_id=DD_PROJECT)
    assert (again.written, again.updated, again.unchanged, again.failed) == (0, 0, n - 1, 1)
    assert writes() == before  # the second run sent nothing at all

    # A new categorical value extends the label schema; one changed value is one update.
    with PhoenixSeeder(phoenix_server.base_url) as seeder:
        seeder.annotate_sessions(
            [
                {
                    "session_id": sessions[1],
                    "name": "quality",
                    "identifier": "",
                    "annotator_kind": "HUMAN",
                    "result": {"label": "excellent", "score": 1.5, "explanation": "why 1"},
                    "metadata": {"ticket": 1},
                }
            ]
        )
    third = await migrate(px, dd, subjects, queue_project_id=DD_PROJECT)
    assert (third.written, third.updated, third.unchanged) == (0, 1, n - 2)
    queue = next(q for q in await dd.queues.list_queues() if q.name == base)
    assert "excellent" in (next(s for s in queue.label_schemas if s.name == "quality").values or [])
    assert_no_differences(await verify(px, dd, subjects))


async def test_phoenix_to_datadog_dry_run_creates_nothing(
    phoenix_server: PhoenixServer, datadog_sim: DatadogSimulator, providers: Providers
) -> None:
    project, sessions, traces, roots = new_project(phoenix_server, 2)
    n = seed_phoenix_annotations(phoenix_server, sessions, traces, roots)
    px, dd = providers.phoenix(phoenix_server, project), providers.datadog(datadog_sim)

    report = await migrate(px, dd, [*sessions, *traces, roots[0]], dry_run=True)

    assert (report.written, report.failed) == (n - 1, 1)
    assert await dd.queues.list_queues() == []
    assert not [r for r in datadog_sim.requests if r.method != "GET"]


async def test_phoenix_to_datadog_killed_then_resumed_equals_clean_run(
    phoenix_server: PhoenixServer, datadog_sim: DatadogSimulator, providers: Providers, tmp_path: Path
) -> None:
    project, sessions, traces, roots = new_project(phoenix_server, 4)
    seed_phoenix_annotations(phoenix_server, sessions, traces, roots)
    subjects = [*sessions, *traces]
    px = providers.phoenix(phoenix_server, project)

    async def run(
        checkpoint: Path | None, progress: Callable[[MigrationProgress], None] | None
    ) -> MigrationReport:
        dd = providers.datadog(datadog_sim)
        return await migrate(
            px,
            dd,
            subjects,
            queue_project_id=DD_PROJECT,
            checkpoint=checkpoint,
            batch_size=2,
            concurrency=2,
            progress=progress,
        )

    # 1. Killed by an exception after the first batch, then resumed.
    class Killed(Exception):
        pass

    def die(progress: MigrationProgress) -> None:
        raise Killed

    raised = tmp_path / "raised.json"
    with pytest.raises(Killed):
        await run(raised, die)
    # Batches that finished while the first one was stopping the run count as done too.
    recorded = len(json.loads(raised.read_text())["completed_subjects"])
    assert 2 <= recorded < len(subjects)
    resumed = await run(raised, None)
    assert resumed.subjects_resumed == recorded
    after_raise = await datadog_state(providers.datadog(datadog_sim), subjects)

    # 2. The task cancelled half-way (what Ctrl-C under asyncio.run does), then resumed.
    datadog_sim.reset()
    cancelled = tmp_path / "cancelled.json"
    first_batch = asyncio.Event()
    task = asyncio.create_task(run(cancelled, lambda p: first_batch.set()))
    await first_batch.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    done = json.loads(cancelled.read_text())["completed_subjects"]
    assert 0 < len(done) < len(subjects)
    await run(cancelled, None)
    after_cancel = await datadog_state(providers.datadog(datadog_sim), subjects)

    # 3. One clean run on an empty Datadog.
    datadog_sim.reset()
    clean = await run(None, None)
    assert clean.failed == 0
    assert after_raise == after_cancel == await datadog_state(providers.datadog(datadog_sim), subjects)
    assert len(after_raise) > 20
    assert_no_differences(await verify(px, providers.datadog(datadog_sim), subjects))


# --- copies never travel back (issue 15) ------------------------------------------------------


async def test_copies_are_never_migrated_back_and_compare_leaves_them_out(
    phoenix_server: PhoenixServer, datadog_sim: DatadogSimulator, providers: Providers
) -> None:
    """Phoenix → Datadog, then Datadog → Phoenix, then Phoenix → Datadog again: each direction
    copies only the originals of its source; the other side's copies are skipped and counted.
    """
    project, sessions, traces, roots = new_project(phoenix_server, 3)
    seed_phoenix_annotations(phoenix_server, sessions, traces, roots)
    datadog_sim.seed(datadog_seed(sessions, traces[0]))
    subjects = [*sessions, *traces]  # no span: every Phoenix annotation here can go to Datadog
    px, dd = providers.phoenix(phoenix_server, project), providers.datadog(datadog_sim)
    # Phoenix originals: 4 session annotations x 3 sessions + 1 trace annotation x 3 traces.
    px_originals = 4 * 3 + 3
    # Datadog originals on these subjects (DD_EXPECTED): sessions[0..2] and traces[0].
    dd_originals = DD_EXPECTED["s0"] + DD_EXPECTED["s1"] + DD_EXPECTED["s2"] + DD_EXPECTED["trace"]
    # The Phoenix annotations as Datadog holds them (one canonical annotation per label value):
    # per session quality "" (label + score: 2 labels), quality reviewer-1 (2), helpfulness (1),
    # notes_text (text: 1) = 6; per trace resolved (1). Each carries the reasoning line.
    dd_copies = 6 * 3 + 3

    before = compare(
        await everything(px, subjects),
        await everything(dd, subjects),
        CompareRequest(subject_ids=subjects, left=px.name, right=dd.name),
    )

    there = await migrate(px, dd, subjects, queue_project_id=DD_PROJECT)
    assert (there.written, there.skipped_copies, there.failed) == (px_originals, 0, 0)

    # Back: the copies just made in Datadog (provenance in the reasoning line) stay there.
    dry = await migrate(dd, px, subjects, dry_run=True)
    assert dry.annotations_read == dd_originals + dd_copies
    assert (dry.written, dry.updated, dry.unchanged, dry.failed) == (dd_originals, 0, 0, 0)
    assert dry.skipped_copies == dd_copies
    assert len(await everything(px, subjects)) == px_originals
    back = await migrate(dd, px, subjects)
    assert (back.written, back.updated, back.unchanged, back.failed) == (dd_originals, 0, 0, 0)
    assert back.skipped_copies == dd_copies
    in_phoenix = await everything(px, subjects)
    assert len(in_phoenix) == px_originals + dd_originals
    assert {a.metadata["migrated_from"]["source"] for a in in_phoenix if "migrated_from" in a.metadata} == {
        dd.name
    }
    assert_no_differences(await verify(dd, px, subjects))

    # There again: the Datadog originals now copied into Phoenix (metadata) are not sent back.
    def writes() -> int:
        return len([r for r in datadog_sim.requests if r.method in ("POST", "PUT")])

    sent = writes()
    again = await migrate(px, dd, subjects, queue_project_id=DD_PROJECT)
    assert (again.written, again.updated, again.unchanged, again.failed) == (0, 0, px_originals, 0)
    assert again.skipped_copies == dd_originals
    assert writes() == sent
    assert len(await everything(dd, subjects)) == dd_originals + dd_copies
    assert_no_differences(await verify(px, dd, subjects))

    # Both sides now hold copies of the other; compare leaves them out by default.
    request = CompareRequest(subject_ids=subjects, left=px.name, right=dd.name)
    after = compare(await everything(px, subjects), await everything(dd, subjects), request)
    assert (after.ignored.left_copied_from_right, after.ignored.right_copied_from_left) == (
        dd_originals,
        dd_copies,
    )
    assert (after.rows, after.summary, after.overall) == (before.rows, before.summary, before.overall)


# --- errors -----------------------------------------------------------------------------------


async def test_checkpoint_of_another_migration_is_refused(
    phoenix_server: PhoenixServer, datadog_sim: DatadogSimulator, providers: Providers, tmp_path: Path
) -> None:
    project, sessions, traces, _ = new_project(phoenix_server, 1)
    datadog_sim.seed(datadog_seed([sessions[0], "x", "y"], traces[0]))
    dd, px = providers.datadog(datadog_sim), providers.phoenix(phoenix_server, project)
    checkpoint = tmp_path / "c.json"
    await migrate(dd, px, sessions, checkpoint=checkpoint)
    with pytest.raises(CheckpointMismatchError):
        await migrate(dd, px, sessions, checkpoint=checkpoint, name_map={"quality": "q"})
    # A finished checkpoint does not make the next run a no-op: it starts afresh.
    again = await migrate(dd, px, sessions, checkpoint=checkpoint)
    assert again.subjects_resumed == 0
    assert again.unchanged == DD_EXPECTED["s0"]


async def test_name_map_renames_and_verify_pairs_through_it(
    phoenix_server: PhoenixServer, datadog_sim: DatadogSimulator, providers: Providers
) -> None:
    project, sessions, traces, _ = new_project(phoenix_server, 3)
    datadog_sim.seed(datadog_seed(sessions, traces[0]))
    dd, px = providers.datadog(datadog_sim), providers.phoenix(phoenix_server, project)
    name_map = {"quality": "answer_quality"}
    report = await migrate(dd, px, sessions, name_map=name_map)
    assert report.failed == 0
    names = {a.name for a in await everything(px, sessions)}
    assert "answer_quality" in names
    assert "quality" not in names
    assert_no_differences(await verify(dd, px, sessions, name_map))
