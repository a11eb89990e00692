"""Tests for :mod:`annotation_gateway.provenance`: reading back where a migrated copy came from.

The provenance under test is written two ways: by hand, exactly as the README documents it
(``metadata.migrated_from``; a last reasoning line ``migrated_from: {json}``), and by migrate's
own writer (:func:`annotation_gateway.migrate.provenance`), so reader and writer cannot drift.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from annotation_gateway.migrate import PROVENANCE_MARKER as MIGRATE_MARKER
from annotation_gateway.migrate import provenance as migrate_metadata
from annotation_gateway.model import Annotation, Annotator, AnnotatorKind, ProviderKind, Subject, SubjectKind
from annotation_gateway.provenance import PROVENANCE_MARKER, Origin, copied_from, origin, reasoning_line

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
LINE = (
    'migrated_from: {"annotator":{"id":null,"kind":"HUMAN"},"id":"phx:UHJ=","identifier":"","source":"phx"}'
)


def ann(
    *,
    source: str = "src",
    explanation: str | None = None,
    metadata: dict[str, Any] | None = None,
    datadog: dict[str, Any] | None = None,
    label: str | None = "resolved",
) -> Annotation:
    return Annotation(
        id=f"{source}:1",
        source=source,
        provider=ProviderKind.DATADOG if datadog is not None else ProviderKind.PHOENIX,
        subject=Subject(kind=SubjectKind.SESSION, id="s1"),
        name="resolution",
        label=label,
        explanation=explanation,
        annotator=Annotator(kind=AnnotatorKind.HUMAN, id="alice"),
        metadata=metadata or {},
        created_at=T0,
        updated_at=T0,
        extensions={"datadog": datadog} if datadog is not None else {},
    )


def test_an_original_has_no_origin() -> None:
    assert origin(ann()) is None
    assert origin(ann(explanation="the customer said thanks")) is None
    assert origin(ann(metadata={"judge": "v2"})) is None
    assert not copied_from(ann(), "src")


def test_phoenix_metadata() -> None:
    copy = ann(metadata={"migrated_from": {"source": "dd-prod", "id": "dd-prod:a1:l1", "annotator": "u1"}})
    assert origin(copy) == Origin(source="dd-prod", id="dd-prod:a1:l1")
    assert copied_from(copy, "dd-prod")
    assert not copied_from(copy, "phx")


def test_datadog_reasoning_line_after_the_explanation() -> None:
    copy = ann(explanation=f"why 0\n\n{LINE}", datadog={"label_type": "categorical"})
    assert origin(copy) == Origin(source="phx", id="phx:UHJ=")
    # the line alone (an annotation without an explanation), trailing whitespace tolerated
    assert origin(ann(explanation=LINE + "\n", datadog={"label_type": "score"})) == Origin("phx", "phx:UHJ=")


def test_datadog_text_label_keeps_the_line_in_its_reasoning() -> None:
    # A text label's value is the canonical explanation; the reasoning is in extensions.
    copy = ann(label=None, explanation="free text", datadog={"label_type": "text", "reasoning": LINE})
    assert origin(copy) == Origin(source="phx", id="phx:UHJ=")
    # ...so a text label whose *value* ends with the line but whose reasoning does not is no copy
    quoted = ann(label=None, explanation=LINE, datadog={"label_type": "text", "reasoning": None})
    assert origin(quoted) is None


def test_metadata_wins_over_the_reasoning_line() -> None:
    # Phoenix A → Datadog → Phoenix B: B's row has both; metadata is the most recent hop.
    copy = ann(
        explanation=f"why\n\n{LINE}",
        metadata={"migrated_from": {"source": "dd", "id": "dd:a:l"}},
    )
    assert origin(copy) == Origin(source="dd", id="dd:a:l")


@pytest.mark.parametrize(
    "metadata",
    [
        {"migrated_from": "dd"},
        {"migrated_from": ["dd", "dd:1"]},
        {"migrated_from": {"source": "dd"}},
        {"migrated_from": {"id": "dd:1"}},
        {"migrated_from": {"source": "", "id": "dd:1"}},
        {"migrated_from": {"source": "dd", "id": ""}},
        {"migrated_from": {"source": 7, "id": "dd:1"}},
        {"migrated_from": {"source": "dd", "id": 1}},
        {"migrated_from": None},
    ],
)
def test_malformed_metadata_is_no_origin(metadata: dict[str, Any]) -> None:
    assert origin(ann(metadata=metadata)) is None


@pytest.mark.parametrize(
    "explanation",
    [
        'migrated_from: {"source":"phx"}',  # no id
        "migrated_from: not json",
        'migrated_from: ["phx", "phx:1"]',  # not an object
        'migrated_from: {"id":"phx:1","source":"phx"}\nlater edited by hand',  # not the last line
        'see migrated_from: {"id":"phx:1","source":"phx"}',  # not at the start of the line
        'migrated_from: {"id":"phx:1","source":"phx"} and more',  # trailing text: not JSON
    ],
)
def test_malformed_reasoning_line_is_no_origin(explanation: str) -> None:
    assert origin(ann(explanation=explanation, datadog={"label_type": "categorical"})) is None


def test_malformed_metadata_falls_back_to_the_line() -> None:
    copy = ann(explanation=LINE, metadata={"migrated_from": {"source": "dd"}})
    assert origin(copy) == Origin(source="phx", id="phx:UHJ=")


def test_an_identifier_quoting_the_marker_does_not_confuse_the_line() -> None:
    line = reasoning_line({"source": "phx", "id": "phx:9", "identifier": "x migrated_from: y"})
    assert origin(ann(explanation=f"because\n\n{line}")) == Origin(source="phx", id="phx:9")


def test_reasoning_line_is_the_documented_format() -> None:
    assert PROVENANCE_MARKER == MIGRATE_MARKER == "migrated_from: "
    line = reasoning_line({"source": "phx", "id": "phx:1", "annotator": {"kind": "LLM", "id": None}})
    assert line == 'migrated_from: {"annotator":{"id":null,"kind":"LLM"},"id":"phx:1","source":"phx"}'
    assert "\n" not in line
    assert json.loads(line.removeprefix("migrated_from: "))["id"] == "phx:1"


def test_reads_what_migrate_writes_into_phoenix_metadata() -> None:
    original = ann(source="dd-sim", datadog={"label_type": "categorical", "values": ["resolved"]})
    copy = ann(source="phx", metadata=migrate_metadata(original))
    assert origin(copy) == Origin(source="dd-sim", id="dd-sim:1")
    assert copied_from(copy, "dd-sim")
