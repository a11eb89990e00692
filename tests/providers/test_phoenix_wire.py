"""Phoenix's two page decoders agree (``providers/phoenix/wire.py``).

A page is decoded strictly first (msgspec Structs: the shape Phoenix 20.26.1 answers, no field
more) and through pydantic's TypedDicts only when that fails. These tests hold the two to the
same answer: every annotation page recorded from a real Phoenix decodes on the strict path, and
maps to byte-identical records either way; what the strict path refuses (an unknown field, a
value only pydantic's lax mode takes) still reaches the caller through the other, extras kept.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from annotation_gateway.model import ProviderKind, SubjectKind
from annotation_gateway.providers.phoenix.mapping import to_records
from annotation_gateway.providers.phoenix.wire import (
    KINDS,
    Extras,
    Kind,
    Result,
    Row,
    StrictResult,
    StrictRow,
    lenient_rows,
    strict_rows,
)
from annotation_gateway.records import RecordBuilder

CONTRACTS = Path(__file__).resolve().parents[1] / "fixtures" / "contracts" / "phoenix"
SUFFIXES = {spec.read_suffix: spec for spec in KINDS.values()}


def recorded_pages() -> list[tuple[str, Kind, bytes]]:
    """Every successful annotation read recorded from Phoenix 20.26.1, as (name, kind, body)."""
    pages = []
    for path in sorted(CONTRACTS.glob("*/*.json")):
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or "response" not in data:
            continue  # not a transcript (an index, the OpenAPI document)
        request, response = data.get("request", {}), data["response"]
        url = request.get("url", "").split("?")[0]
        suffix = url.rsplit("/", 1)[-1]
        if request.get("method") == "GET" and suffix in SUFFIXES and response["status"] == 200:
            body = response["body_json"]
            if body is not None and body.get("data"):
                pages.append((f"{path.parent.name}/{path.stem}", SUFFIXES[suffix], orjson.dumps(body)))
    return pages


PAGES = recorded_pages()


def records_json(spec: Kind, rows: Sequence[StrictRow], extras: list[Extras | None] | None) -> list[bytes]:
    builder = RecordBuilder("px", ProviderKind.PHOENIX.value)
    return [record.json for record in to_records(spec, rows, extras, None, builder, project="p")]


def lenient(spec: Kind, body: bytes) -> tuple[list[StrictRow], list[Extras | None]]:
    return lenient_rows(spec, spec.page.validate_json(body)["data"])


def test_the_recordings_hold_pages_of_every_kind() -> None:
    assert len(PAGES) >= 20
    assert {spec.kind for _, spec, _ in PAGES} == {SubjectKind.SESSION, SubjectKind.TRACE, SubjectKind.SPAN}


@pytest.mark.parametrize(("name", "spec", "body"), PAGES, ids=[name for name, _, _ in PAGES])
def test_every_recorded_page_decodes_strictly_to_the_same_records(name: str, spec: Kind, body: bytes) -> None:
    strict = strict_rows(spec, body)
    assert strict is not None, f"{name}: Phoenix 20.26.1's own answer left the strict path"
    rows, cursor = strict
    assert cursor == orjson.loads(body)["next_cursor"]
    held, extras = lenient(spec, body)
    assert extras == [None] * len(held)
    assert records_json(spec, rows, None) == records_json(spec, held, extras)


def test_the_twins_declare_the_same_fields() -> None:
    """The Structs and the TypedDicts describe one wire shape (a field added to one only would
    send every page to the slow path, or drop it into extensions)."""
    assert set(StrictRow.__struct_fields__) == Row.__required_keys__ | Row.__optional_keys__
    assert set(StrictResult.__struct_fields__) == Result.__required_keys__ | Result.__optional_keys__
    for spec in KINDS.values():
        assert spec.known_fields == set(StrictRow.__struct_fields__) | {spec.row_field}


def a_page(mutate: Any) -> tuple[Kind, bytes, dict[str, Any]]:
    _, spec, body = next(p for p in PAGES if p[1].kind is SubjectKind.SESSION)
    page = orjson.loads(body)
    row = copy.deepcopy(page["data"][0])
    mutate(row)
    return spec, orjson.dumps({"data": [row], "next_cursor": None}), row


def test_an_unknown_field_leaves_the_strict_path_and_is_kept() -> None:
    def mutate(row: dict[str, Any]) -> None:
        row["added_in_21"] = [1, 2]
        row["result"] = {**(row.get("result") or {}), "confidence": 0.5}

    spec, body, row = a_page(mutate)
    assert strict_rows(spec, body) is None
    held, extras = lenient(spec, body)
    assert extras == [Extras({"added_in_21": [1, 2]}, {"confidence": 0.5})]
    doc = orjson.loads(records_json(spec, held, extras)[0])
    assert doc["extensions"]["phoenix"]["added_in_21"] == [1, 2]
    assert doc["extensions"]["phoenix"]["result"] == {"confidence": 0.5}
    assert doc["id"] == f"px:{row['id']}"


def test_a_value_only_pydantics_lax_mode_takes_is_still_read() -> None:
    def mutate(row: dict[str, Any]) -> None:
        row["result"] = {"label": "x", "score": "0.25", "explanation": None}

    spec, body, _ = a_page(mutate)
    assert strict_rows(spec, body) is None
    held, extras = lenient(spec, body)
    assert extras == [None]
    assert orjson.loads(records_json(spec, held, extras)[0])["score"] == 0.25


def test_the_strict_path_gives_utc_times_whatever_the_offset() -> None:
    def mutate(row: dict[str, Any]) -> None:
        row["updated_at"] = "2026-11-23T09:15:02.5+02:00"

    spec, body, _ = a_page(mutate)
    strict = strict_rows(spec, body)
    assert strict is not None
    doc = orjson.loads(records_json(spec, strict[0], None)[0])
    assert doc["updated_at"] == "2026-11-23T07:15:02.500000Z"
    held, extras = lenient(spec, body)
    assert records_json(spec, strict[0], None) == records_json(spec, held, extras)
