"""Datadog's two read-page decoders agree (``providers/datadog/wire.py``).

A read page is decoded strictly first (msgspec Structs: the shape Datadog answers today, no
field more) and through pydantic's TypedDicts (:data:`PAGE`) only when that fails. These tests
hold the two to the same answer: Datadog's own example and the simulator's answers (array and
legacy object forms, zero times) decode on the strict path and map to byte-identical records
either way; a page with fields this module does not know leaves the strict path and keeps them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from pydantic import TypeAdapter

from annotation_gateway.errors import SourceProtocolError
from annotation_gateway.model import Annotation, ProviderKind
from annotation_gateway.providers.datadog.mapping import NO_LABELS, QueueLabels, map_label_value, to_records
from annotation_gateway.providers.datadog.wire import (
    PAGE,
    LabelSchema,
    PageAnnotation,
    PageInteraction,
    PageLabelValue,
    ReadPage,
    StrictAnnotation,
    StrictInteraction,
    StrictLabelValue,
    lenient_page,
    strict_page,
)
from annotation_gateway.records import RecordBuilder
from tests.plugins.datadog import DatadogSimulator
from tests.providers.test_datadog_provider import LABELS, READ, every_label_type_seed

_CANONICAL = TypeAdapter(Annotation).dump_json
DD = RecordBuilder("dd", ProviderKind.DATADOG.value)
EXAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "contracts" / "datadog"


def records_json(page: ReadPage, labels: QueueLabels) -> list[bytes]:
    extras = page.extras or [None] * len(page.interactions)
    return [
        record.json
        for interaction, extra in zip(page.interactions, extras, strict=True)
        for record in to_records(interaction, extra, None, labels, DD)
    ]


def assert_both_paths_agree(body: bytes, labels: QueueLabels) -> list[bytes]:
    strict = strict_page(body)
    assert strict is not None, "an answer in today's shape left the strict path"
    lenient = lenient_page(PAGE.validate_json(body))
    assert lenient.extras == [None] * len(lenient.interactions)
    assert strict.total == lenient.total
    got = records_json(strict, labels)
    assert got == records_json(lenient, labels)
    return got


def example_page() -> dict[str, Any]:
    """The read page of Datadog's OpenAPI examples (``GetLLMObsAnnotatedInteractionsByTraceIDs``)."""
    examples = json.loads((EXAMPLES / "llm-obs-annotations.examples.json").read_text())
    operation = examples["operations"]["GetLLMObsAnnotatedInteractionsByTraceIDs"]
    page: dict[str, Any] = operation["responses"]["200"]["default"]
    return page


def test_datadogs_own_example_decodes_strictly_to_the_same_records() -> None:
    (record,) = assert_both_paths_agree(orjson.dumps(example_page()), NO_LABELS)
    assert orjson.loads(record)["created_at"] == "2025-06-01T12:00:00Z"  # the zero time fell back


def read_page(sim: DatadogSimulator, content_ids: list[str]) -> bytes:
    response = httpx.get(
        f"{sim.base_url}{READ}",
        params=[("contentIds", c) for c in content_ids] + [("offset", "0"), ("limit", "100")],
        headers={"DD-API-KEY": sim.api_key, "DD-APPLICATION-KEY": sim.app_key},
        trust_env=False,
    )
    assert response.status_code == 200
    return response.content


def test_the_simulators_answers_decode_strictly_to_the_same_records(datadog_sim: DatadogSimulator) -> None:
    made = datadog_sim.seed(every_label_type_seed())
    ids_by_name = made["queues"][0]["label_schemas"]
    labels = QueueLabels.of(LabelSchema(**label, id=ids_by_name[label["name"]]) for label in LABELS)
    ids = ["sess-1", "trace-1", "exp-1"]
    as_array = assert_both_paths_agree(read_page(datadog_sim, ids), labels)
    assert len(as_array) == 7  # every non-empty label value of both annotations
    datadog_sim.configure(label_values="object")
    as_object = assert_both_paths_agree(read_page(datadog_sim, ids), labels)
    assert len(as_object) == len(as_array)
    datadog_sim.configure(label_values="array", zero_time=True)
    assert len(assert_both_paths_agree(read_page(datadog_sim, ids), labels)) == len(as_array)


def test_the_twins_declare_the_same_fields() -> None:
    """Each Struct and its TypedDict describe one level of the wire shape (a field added to
    one only would send every page to the slow path, or drop it into extensions)."""
    for strict, typed in (
        (StrictLabelValue, PageLabelValue),
        (StrictAnnotation, PageAnnotation),
        (StrictInteraction, PageInteraction),
    ):
        assert set(strict.__struct_fields__) == typed.__required_keys__ | typed.__optional_keys__


def test_fields_this_module_does_not_know_leave_the_strict_path_and_are_kept() -> None:
    examples = json.loads((EXAMPLES / "llm-obs-annotations.examples.json").read_text())
    page: dict[str, Any] = examples["operations"]["GetLLMObsAnnotatedInteractionsByTraceIDs"]["responses"][
        "200"
    ]["default"]
    interaction = page["data"]["attributes"]["annotated_interactions"][0]
    interaction["region"] = "eu"
    interaction["annotations"][0]["label_values"][0]["confidence"] = 0.9
    body = orjson.dumps(page)
    assert strict_page(body) is None
    lenient = lenient_page(PAGE.validate_json(body))
    (record,) = records_json(lenient, NO_LABELS)
    datadog = orjson.loads(record)["extensions"]["datadog"]
    assert (datadog["interaction"], datadog["label_value"]) == ({"region": "eu"}, {"confidence": 0.9})
    assert "annotation" not in datadog


def test_records_write_their_extensions_as_the_canonical_model_does() -> None:
    """A Datadog record holds ``extensions.datadog`` as a struct msgspec writes: its JSON is
    what pydantic writes for the same annotation (large floats among unknown fields included),
    the fields in the documented order, the optional ones only when present."""
    examples = json.loads((EXAMPLES / "llm-obs-annotations.examples.json").read_text())
    page: dict[str, Any] = examples["operations"]["GetLLMObsAnnotatedInteractionsByTraceIDs"]["responses"][
        "200"
    ]["default"]
    interaction = page["data"]["attributes"]["annotated_interactions"][0]
    interaction["region"] = {"size": 1e16, "tags": ["a", 2.5]}
    interaction["annotations"][0]["label_values"][0]["confidence"] = 1e300
    lenient = lenient_page(PAGE.validate_json(orjson.dumps(page)))
    extras = lenient.extras or [None] * len(lenient.interactions)
    records = [
        record
        for interaction, extra in zip(lenient.interactions, extras, strict=True)
        for record in to_records(interaction, extra, None, NO_LABELS, DD)
    ]
    assert records
    for record in records:
        assert record.json == _CANONICAL(record.annotation())
        datadog = orjson.loads(record.json)["extensions"]["datadog"]
        assert list(datadog)[:8] == [
            "interaction_id", "annotation_id", "label_schema_id", "label_type",
            "assessment", "modified_by", "can_annotate", "content_id",
        ]  # fmt: skip
        assert datadog.get("label_type_inferred", True) is True
    assert b'"size":1e+16' in records[0].json
    assert b'"confidence":1e+300' in records[0].json


def test_every_score_value_maps_as_the_label_value_table_says() -> None:
    """to_records maps a number-valued score label itself (the common case) and every other
    value through map_label_value: both give the table's answer, and a boolean score is refused
    with the same error either way."""
    examples = json.loads((EXAMPLES / "llm-obs-annotations.examples.json").read_text())
    page: dict[str, Any] = examples["operations"]["GetLLMObsAnnotatedInteractionsByTraceIDs"]["responses"][
        "200"
    ]["default"]
    annotation = page["data"]["attributes"]["annotated_interactions"][0]["annotations"][0]
    values: list[Any] = [0, 5, -1, 0.5, 1e300, "0.25", "3", 2**60]
    annotation["label_values"] = [
        {"label_schema_id": f"s{i}", "name_when_saved": f"n{i}", "type": "score", "value": v}
        | {"reasoning": "r"}
        for i, v in enumerate(values)
    ]
    strict = strict_page(orjson.dumps(page))
    assert strict is not None
    records = [r for r in to_records(strict.interactions[0], None, None, NO_LABELS, DD)]
    assert [r.name for r in records] == [f"n{i}" for i in range(len(values))]
    for record, value in zip(records, values, strict=True):
        expected = map_label_value("score", value, "r")
        assert expected is not None
        assert (record.label, record.score, record.explanation) == expected[:3]
        assert isinstance(record.score, float)
        assert record.json == _CANONICAL(record.annotation())
    boolean = {"label_schema_id": "b", "name_when_saved": "b", "type": "score", "value": True}
    annotation["label_values"] = [boolean]
    strict = strict_page(orjson.dumps(page))
    assert strict is not None
    with pytest.raises(SourceProtocolError, match="expected a number for a score label"):
        list(to_records(strict.interactions[0], None, None, NO_LABELS, DD))


@pytest.mark.parametrize(
    ("label_type", "values"),
    [
        ("boolean", [True, False, "true", "FALSE", None]),
        ("categorical", [["bug"], ["bug", "how-to"], ["bug", ""], [""], [], "good", "", None]),
        ("text", ["a note", ""]),
    ],
)
def test_boolean_categorical_and_text_values_map_as_the_label_value_table_says(
    label_type: str, values: list[Any]
) -> None:
    """to_records maps the common boolean and categorical values itself and every other value
    through map_label_value: both give the table's answer (an unset value gives no record), the
    categorical choices are kept in order, and a wrong type is refused the same way either way."""
    examples = json.loads((EXAMPLES / "llm-obs-annotations.examples.json").read_text())
    page: dict[str, Any] = examples["operations"]["GetLLMObsAnnotatedInteractionsByTraceIDs"]["responses"][
        "200"
    ]["default"]
    annotation = page["data"]["attributes"]["annotated_interactions"][0]["annotations"][0]
    annotation["label_values"] = [
        {
            "label_schema_id": f"s{i}",
            "name_when_saved": f"n{i}",
            "type": label_type,
            "value": v,
            "reasoning": "r",
        }
        for i, v in enumerate(values)
    ]
    strict = strict_page(orjson.dumps(page))
    assert strict is not None
    by_name = {r.name: r for r in to_records(strict.interactions[0], None, None, NO_LABELS, DD)}
    for i, value in enumerate(values):
        expected = map_label_value(label_type, value, "r")
        if expected is None:
            assert f"n{i}" not in by_name, value
            continue
        record = by_name[f"n{i}"]
        assert (record.label, record.score, record.explanation) == expected[:3], value
        datadog = orjson.loads(record.json)["extensions"]["datadog"]
        assert datadog.get("values") == expected.values, value
        assert record.json == _CANONICAL(record.annotation())
    wrong = {"boolean": 1, "categorical": 5, "text": ["x"]}[label_type]
    annotation["label_values"] = [
        {"label_schema_id": "w", "name_when_saved": "w", "type": label_type, "value": wrong}
    ]
    strict = strict_page(orjson.dumps(page))
    assert strict is not None
    with pytest.raises(SourceProtocolError, match="expected"):
        list(to_records(strict.interactions[0], None, None, NO_LABELS, DD))
