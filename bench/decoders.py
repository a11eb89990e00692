"""Which validating decoder for vendor pages: pydantic ``validate_json`` into TypedDicts, or msgspec?

Issue 10 asks to measure both on a 100-row page before choosing. This decodes one 100-row Phoenix
session-annotations page (built from a recorded Phoenix 20.26.1 answer) in today's shape, and the
same page with one field Phoenix might add later (which SPEC §2 says must land in
``extensions``), with the provider's own decoders (``providers/phoenix/wire.py``):

- ``pydantic``: ``TypeAdapter`` of the page TypedDict, rows ``extra="allow"``, ``validate_json``
  (keeps unknown fields; its errors name the field);
- ``msgspec``: the strict path, ``Struct`` rows with ``forbid_unknown_fields`` (today's shape
  only: any other page fails it and goes through pydantic);
- ``orjson`` (no validation at all), as the floor;

and the whole step the provider takes per page — decode, then map every row to its record — on
the strict path, on the pydantic path, and for the page with a new field (the strict attempt
fails, then pydantic). Run: ``.venv/bin/python -m bench.decoders``. Prints µs per page (best of
several rounds) and writes ``bench/results/decoders.json``.
"""

from __future__ import annotations

import json
import timeit
from pathlib import Path
from typing import Any

import msgspec
import orjson

from annotation_gateway.model import ProviderKind, SubjectKind
from annotation_gateway.providers.phoenix.mapping import to_records
from annotation_gateway.providers.phoenix.wire import KINDS, lenient_rows, strict_rows
from annotation_gateway.records import RecordBuilder

ROWS = 100
ROUNDS = 7
NUMBER = 200
OUT = Path(__file__).parent / "results" / "decoders.json"
_PHOENIX = ProviderKind.PHOENIX.value


def page_body() -> bytes:
    """A 100-row page in Phoenix's exact shape (a recorded row repeated with distinct values)."""
    rows = []
    for i in range(ROWS):
        rows.append(
            {
                "id": f"UHJvamVjdFNlc3Npb25Bbm5vdGF0aW9uOj{i:04d}",
                "created_at": "2026-11-23T07:15:02+00:00",
                "updated_at": "2026-11-23T07:15:02+00:00",
                "source": "API",
                "user_id": None,
                "name": ("resolution", "helpfulness", "tone")[i % 3],
                "annotator_kind": ("HUMAN", "LLM", "CODE")[i % 3],
                "result": {"label": "resolved", "score": i / 100, "explanation": f"Reviewer note {i}."},
                "metadata": {"reviewer": "alice", "batch": i // 10},
                "identifier": "",
                "session_id": f"support-{i % 20:02d}",
                "a_field_phoenix_adds_later": {"x": i},
            }
        )
    return orjson.dumps({"data": rows, "next_cursor": "UHJvamVjdFNlc3Npb25Bbm5vdGF0aW9uOjEwMA=="})


def measure() -> dict[str, Any]:
    newer = page_body()
    page = orjson.loads(newer)
    for row in page["data"]:
        del row["a_field_phoenix_adds_later"]
    today = orjson.dumps(page)
    spec = KINDS[SubjectKind.SESSION]
    untyped = msgspec.json.Decoder()

    def strict_records(body: bytes) -> list[Any]:
        decoded = strict_rows(spec, body)
        if decoded is None:
            return pydantic_records(body)
        return to_records(spec, decoded[0], None, None, RecordBuilder("px", _PHOENIX), project="p")

    def pydantic_records(body: bytes) -> list[Any]:
        rows, extras = lenient_rows(spec, spec.page.validate_json(body)["data"])
        return to_records(spec, rows, extras, None, RecordBuilder("px", _PHOENIX), project="p")

    assert strict_rows(spec, today) is not None
    assert strict_rows(spec, newer) is None
    assert [r.json for r in strict_records(today)] == [r.json for r in pydantic_records(today)]
    decoders: dict[str, Any] = {
        "orjson (no validation)": lambda: orjson.loads(today),
        "msgspec untyped": lambda: untyped.decode(today),
        "pydantic validate_json (TypedDict, extra=allow)": lambda: spec.page.validate_json(today),
        "msgspec Struct, forbid_unknown_fields (the strict path)": lambda: strict_rows(spec, today),
        "decode + map, strict path": lambda: strict_records(today),
        "decode + map, pydantic path": lambda: pydantic_records(today),
        "decode + map, a page with a new field (strict fails, then pydantic)": lambda: strict_records(newer),
    }
    results: dict[str, Any] = {"rows": ROWS, "page_bytes": len(today), "msgspec_version": msgspec.__version__}
    timings = {}
    for name, call in decoders.items():
        best = min(timeit.repeat(call, number=NUMBER, repeat=ROUNDS)) / NUMBER
        timings[name] = round(best * 1e6, 1)
    results["us_per_page"] = timings
    return results


def main() -> None:
    results = measure()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
