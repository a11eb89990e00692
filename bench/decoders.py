"""Which validating decoder for vendor pages: pydantic ``validate_json`` into TypedDicts, or msgspec?

Issue 10 asks to measure both on a 100-row page before choosing. This decodes one 100-row Phoenix
session-annotations page (built from a recorded Phoenix 20.26.1 answer, with one field Phoenix
might add later, which SPEC §2 says must land in ``extensions``) with:

- ``pydantic``: the Phoenix provider's own page decoder (``providers/phoenix/wire.py``:
  ``TypeAdapter`` of the page TypedDict, rows ``extra="allow"``) with ``validate_json``; unknown
  fields are kept;
- ``msgspec``: ``msgspec.json.decode(type=page Struct)`` — Structs drop unknown fields, so keeping
  them needs a second, untyped decode of the page (``msgspec-keep-extras``);
- ``orjson`` (no validation at all), as the floor.

Run: ``.venv/bin/python -m bench.decoders`` (msgspec must be installed: ``pip install msgspec``;
it is a bench-only dependency). Prints µs per page (best of several rounds) and writes
``bench/results/decoders.json``.
"""

from __future__ import annotations

import json
import timeit
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from annotation_gateway.model import SubjectKind
from annotation_gateway.providers.phoenix.wire import KINDS

ROWS = 100
ROUNDS = 7
NUMBER = 200
OUT = Path(__file__).parent / "results" / "decoders.json"

try:
    import msgspec
except ImportError:  # a bench-only dependency
    msgspec = None
else:

    class Result(msgspec.Struct):
        label: str | None = None
        score: float | None = None
        explanation: str | None = None

    class SessionRow(msgspec.Struct):
        id: str
        created_at: datetime
        updated_at: datetime
        source: str
        user_id: str | None
        name: str
        annotator_kind: str
        session_id: str
        result: Result | None = None
        metadata: dict[str, Any] | None = None
        identifier: str = ""

    class SessionPage(msgspec.Struct):
        data: list[SessionRow]
        next_cursor: str | None


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
    body = page_body()
    pydantic_page = KINDS[SubjectKind.SESSION].page  # the very decoder the Phoenix provider uses
    decoders: dict[str, Any] = {
        "orjson (no validation)": lambda: orjson.loads(body),
        "pydantic validate_json (TypedDict, extra=allow)": lambda: pydantic_page.validate_json(body),
    }
    kept_extra = "a_field_phoenix_adds_later" in pydantic_page.validate_json(body)["data"][0]
    results: dict[str, Any] = {
        "rows": ROWS,
        "page_bytes": len(body),
        "pydantic_keeps_unknown_fields": kept_extra,
    }
    if msgspec is None:
        results["msgspec"] = "not installed (pip install msgspec to measure it)"
    else:
        decoder = msgspec.json.Decoder(SessionPage)
        untyped = msgspec.json.Decoder()
        decoders["msgspec Struct"] = lambda: decoder.decode(body)
        decoders["msgspec Struct + untyped decode to keep unknown fields"] = lambda: (
            decoder.decode(body),
            untyped.decode(body),
        )
        results["msgspec_version"] = msgspec.__version__
        first = decoder.decode(body).data[0]
        results["msgspec_keeps_unknown_fields"] = hasattr(first, "a_field_phoenix_adds_later")
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
