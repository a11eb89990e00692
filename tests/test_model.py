"""The canonical model's JSON is exactly the SPEC §2 shape."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from annotation_gateway.model import (
    Annotation,
    AnnotationWrite,
    Annotator,
    Queue,
    Subject,
    format_utc,
)

SPEC_FIELDS = {
    "id", "source", "provider", "subject", "name", "label", "score", "explanation", "annotator",
    "identifier", "metadata", "queue", "created_at", "updated_at", "extensions",
}  # fmt: skip


def make(**overrides: object) -> Annotation:
    fields: dict[str, object] = {
        "id": "phoenix-prod:UHJvamVjdDox",
        "source": "phoenix-prod",
        "provider": "phoenix",
        "subject": Subject(kind="session", id="sess-1", project="support-bot"),
        "name": "quality",
        "annotator": Annotator(kind="HUMAN", id="u1"),
        "created_at": "2026-11-23T05:24:13+00:00",
        "updated_at": "2026-11-23T05:24:14.384502+00:00",
    }
    fields.update(overrides)
    return Annotation.model_validate(fields)


def test_json_has_exactly_the_spec_fields_without_raw() -> None:
    body = json.loads(make().model_dump_json())
    assert set(body) == SPEC_FIELDS
    assert body["subject"] == {"kind": "session", "id": "sess-1", "project": "support-bot"}
    assert body["annotator"] == {"kind": "HUMAN", "id": "u1"}
    assert body["identifier"] == ""
    assert body["metadata"] == {}
    assert body["extensions"] == {}
    assert body["queue"] is None


def test_raw_appears_only_when_set() -> None:
    with_raw = json.loads(make(raw={"id": "x"}).model_dump_json())
    assert with_raw["raw"] == {"id": "x"}
    assert "raw" not in json.loads(make(raw={"id": "x"}).without_raw().model_dump_json())


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("2026-11-23T05:24:13+00:00", "2026-11-23T05:24:13Z"),
        ("2026-11-23T07:24:13+02:00", "2026-11-23T05:24:13Z"),
        ("2026-11-23T05:24:13.5Z", "2026-11-23T05:24:13.500000Z"),
        (datetime(2026, 11, 23, 5, 24, 13), "2026-11-23T05:24:13Z"),  # naive is taken as UTC
        (datetime(2026, 11, 23, 0, 0, tzinfo=timezone(timedelta(hours=-5))), "2026-11-23T05:00:00Z"),
    ],
)
def test_timestamps_are_rfc3339_utc_with_z(given: object, expected: str) -> None:
    annotation = make(updated_at=given)
    assert json.loads(annotation.model_dump_json())["updated_at"] == expected
    assert format_utc(annotation.updated_at) == expected  # what CSV export writes: the same text
    assert annotation.updated_at.tzinfo == UTC


def test_queue_and_extensions_round_trip() -> None:
    annotation = make(
        provider="datadog",
        subject=Subject(kind="trace", id="t1"),
        queue=Queue(id="q1", name="support"),
        extensions={"datadog": {"assessment": "pass"}},
    )
    again = Annotation.model_validate_json(annotation.model_dump_json())
    assert again == annotation


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError, match="surprise"):
        make(surprise=1)


def test_write_needs_a_result() -> None:
    with pytest.raises(ValidationError, match="at least one of label, score or explanation"):
        AnnotationWrite(subject_id="s", name="q")
    assert AnnotationWrite(subject_id="s", name="q", score=0.0).score == 0.0


def test_write_refuses_non_finite_scores() -> None:
    with pytest.raises(ValidationError):
        AnnotationWrite(subject_id="s", name="q", score=float("nan"))
