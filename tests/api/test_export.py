"""``GET /v1/annotations/export``: correctness against the real upstreams, flat memory, failures.

- against the real Phoenix and the Datadog simulator over real HTTP: JSONL and CSV hold every
  annotation the query API returns exactly once, and the CSV parses back to the same values;
- a source down: ``partial=deny`` is a problem before the first byte; ``partial=allow`` streams
  the other source and ends with the trailer naming the failed one (JSONL and CSV);
- a source failing on a later page (cache off, so each page asks again): the trailer names it;
- 20,000 annotations exported through the ASGI app in-process (a raw ASGI ``send`` that counts
  and drops each chunk, since ``httpx.ASGITransport`` buffers whole bodies) with tracemalloc
  tracing every Python allocation: the peak stays well below the size of the export.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import subprocess
import sys
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
from starlette.types import ASGIApp, Message

from annotation_gateway.api.app import create_app
from annotation_gateway.api.routes.export import CSV_COLUMNS
from annotation_gateway.errors import SourceUnavailableError
from annotation_gateway.federation import Federation
from annotation_gateway.federation.limits import EXPORT_FIRST_CHUNK_SUBJECTS
from annotation_gateway.model import Annotation, Annotator, AnnotatorKind, ProviderKind, Subject, SubjectKind
from annotation_gateway.providers.base import SourceQuery
from annotation_gateway.settings import AuthConfig, CacheConfig, GatewaySettings, ServerConfig
from tests.api.conftest import (
    DATADOG_SOURCE,
    PHOENIX_ONLY_KEY,
    PHOENIX_SOURCE,
    ApiData,
    ClientFactory,
    GatewayFactory,
    closed_port_url,
)
from tests.api.test_contract_fake import assert_problem
from tests.fakes import BASE_TIME, DATADOG_LIKE, FakeProvider, make_annotation

EXPORT = "/v1/annotations/export"
REPO = Path(__file__).resolve().parents[2]


def _params(data: ApiData, **extra: Any) -> dict[str, Any]:
    return {"subject_id": data.session_ids, **extra}


def _query_api_ids(client: httpx.Client, data: ApiData) -> dict[str, dict[str, Any]]:
    r = client.post("/v1/annotations/search", json={"subject_ids": data.session_ids, "limit": 1000})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["next_cursor"] is None
    return {a["id"]: a for a in body["data"]}


def test_jsonl_export_has_every_annotation_once(client: httpx.Client, api_data: ApiData) -> None:
    expected = _query_api_ids(client, api_data)
    assert len(expected) == api_data.total
    with client.stream("GET", EXPORT, params=_params(api_data, format="jsonl")) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/x-ndjson")
        assert r.headers["content-disposition"] == 'attachment; filename="annotations.jsonl"'
        lines = [line for line in r.iter_lines() if line]
    items = [json.loads(line) for line in lines]
    assert not any("_export" in item for item in items), "a complete export has no trailer"
    ids = [item["id"] for item in items]
    assert len(ids) == len(set(ids)) == api_data.total
    assert {item["id"]: item for item in items} == expected  # the very same canonical JSON


def test_csv_export_parses_back(client: httpx.Client, api_data: ApiData) -> None:
    expected = _query_api_ids(client, api_data)
    r = client.get(EXPORT, params=_params(api_data, format="csv"))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    assert r.headers["content-disposition"] == 'attachment; filename="annotations.csv"'
    reader = csv.DictReader(io.StringIO(r.text, newline=""))
    assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
    records = list(reader)
    assert len(records) == len({rec["id"] for rec in records}) == api_data.total
    for rec in records:
        a = expected[rec["id"]]
        assert rec["source"] == a["source"]
        assert rec["provider"] == a["provider"]
        assert (rec["subject_kind"], rec["subject_id"]) == (a["subject"]["kind"], a["subject"]["id"])
        assert rec["project"] == (a["subject"]["project"] or "")
        assert rec["name"] == a["name"]
        assert rec["label"] == (a["label"] or "")
        assert (float(rec["score"]) if rec["score"] else None) == a["score"]
        assert rec["explanation"] == (a["explanation"] or "")
        assert (rec["annotator_kind"], rec["annotator_id"]) == (
            a["annotator"]["kind"],
            a["annotator"]["id"] or "",
        )
        assert rec["identifier"] == a["identifier"]
        assert rec["queue_id"] == ((a["queue"] or {}).get("id") or "")
        assert rec["queue_name"] == ((a["queue"] or {}).get("name") or "")
        assert (rec["created_at"], rec["updated_at"]) == (a["created_at"], a["updated_at"])
        assert json.loads(rec["metadata"]) == a["metadata"]
        assert json.loads(rec["extensions"]) == a["extensions"]
    # Both vendors are in it, and Datadog's several reviewers stay several rows.
    assert {rec["source"] for rec in records} == {PHOENIX_SOURCE, DATADOG_SOURCE}


def test_same_filters_as_the_query(client: httpx.Client, api_data: ApiData) -> None:
    sid = api_data.session_ids[8]
    params = {"subject_id": sid, "name": "resolution", "format": "jsonl"}
    exported = [json.loads(line) for line in client.get(EXPORT, params=params).text.splitlines()]
    queried = client.get("/v1/annotations", params={"subject_id": sid, "name": "resolution"}).json()["data"]
    assert exported == queried
    assert exported  # Phoenix and both Datadog reviewers


def test_bad_parameters_and_limits(client: httpx.Client, client_for: ClientFactory, gateway: Any) -> None:
    assert_problem(client.get(EXPORT, params={"subject_id": "x", "format": "xml"}), 422, "validation_error")
    limit = assert_problem(
        client.get(EXPORT, params={"subject_id": "x", "limit": 5}), 422, "validation_error"
    )
    assert limit["errors"][0]["loc"] == ["query", "limit"]
    assert_problem(client.get(EXPORT, params={"subject_id": "x", "cursor": "abc"}), 422, "validation_error")
    assert_problem(client.get(EXPORT), 422, "validation_error")  # no subject_id nor identifier
    assert_problem(client.get(EXPORT, params={"subject_id": "x", "bogus": "1"}), 422, "validation_error")
    limited = client_for(gateway.base_url, PHOENIX_ONLY_KEY)
    assert_problem(
        limited.get(EXPORT, params={"subject_id": "x", "source": DATADOG_SOURCE}), 403, "forbidden"
    )
    assert_problem(
        client_for(gateway.base_url, None).get(EXPORT, params={"subject_id": "x"}), 401, "unauthorized"
    )


def test_a_source_down_deny_before_first_byte_allow_with_trailer(
    make_gateway: GatewayFactory, client_for: ClientFactory, api_data: ApiData
) -> None:
    gw = make_gateway([api_data.phoenix_config(), api_data.datadog_config(base_url=closed_port_url())])
    c = client_for(gw.base_url)
    denied = assert_problem(
        c.get(EXPORT, params=_params(api_data, partial="deny")), 502, "source_unavailable"
    )
    assert denied["source"] == DATADOG_SOURCE

    lines = c.get(EXPORT, params=_params(api_data)).text.splitlines()
    *data, trailer = (json.loads(line) for line in lines)
    assert len(data) == api_data.expected[PHOENIX_SOURCE]
    assert {a["source"] for a in data} == {PHOENIX_SOURCE}
    assert trailer["_export"]["partial"] is True
    (failed,) = trailer["_export"]["sources"]
    assert failed["source"] == DATADOG_SOURCE
    assert failed["error"]["code"] == "source_unavailable"

    records = list(csv.reader(io.StringIO(c.get(EXPORT, params=_params(api_data, format="csv")).text)))
    assert records[0] == list(CSV_COLUMNS)
    assert len(records) == 1 + api_data.expected[PHOENIX_SOURCE] + 1
    assert records[-1][0] == "#_export"
    assert json.loads(records[-1][1])["sources"][0]["source"] == DATADOG_SOURCE


# --- in-process: a failure on a later page, and memory --------------------------------------


@dataclass
class AsgiResult:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    size: int = 0
    chunks: int = 0
    lines: int = 0
    last: bytes = b""
    body: list[bytes] | None = None


async def _get(app: ASGIApp, path: str, params: list[tuple[str, str]], *, keep: bool = False) -> AsgiResult:
    """One GET through the ASGI app; each body chunk is counted, then dropped (unless ``keep``)."""
    query = urlencode(params).encode()
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query,
        "headers": [(b"host", b"test")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }
    result = AsgiResult(body=[] if keep else None)
    sent_request = False
    never = asyncio.Event()

    async def receive() -> Message:
        nonlocal sent_request
        if not sent_request:
            sent_request = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await never.wait()  # the client never disconnects
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            result.status = message["status"]
            result.headers = {k.decode(): v.decode() for k, v in message["headers"]}
        elif message["type"] == "http.response.body":
            chunk: bytes = message.get("body", b"")
            if chunk:
                result.size += len(chunk)
                result.chunks += 1
                result.lines += chunk.count(b"\n")
                result.last = chunk[-2000:]
                if result.body is not None:
                    result.body.append(chunk)

    await app(scope, receive, send)
    return result


def _app(federation: Federation) -> ASGIApp:
    settings = GatewaySettings(server=ServerConfig(), auth=AuthConfig(enabled=False), sources=[])
    return create_app(settings, federation=federation)


def _big(source: str, n: int, subjects: int, provider: ProviderKind) -> list[Annotation]:
    """``n`` realistic annotations (explanation, metadata, extensions) over ``subjects`` sessions."""
    out = []
    for i in range(n):
        when = BASE_TIME.replace(microsecond=i % 1_000_000)
        out.append(
            Annotation(
                id=f"{source}:{i:08d}",
                source=source,
                provider=provider,
                subject=Subject(
                    kind=SubjectKind.SESSION,
                    id=f"session-{i % subjects:05d}",
                    project="support-bot" if provider is ProviderKind.PHOENIX else None,
                ),
                name=("resolution", "helpfulness", "tone", "pii_check")[i % 4],
                label=("resolved", "unresolved", "escalated")[i % 3],
                score=(i % 101) / 100,
                explanation=f"Reviewer note {i}: the bot answered the question about the refund policy "
                "and linked the right help-centre article, but it did not confirm the order number.",
                annotator=Annotator(kind=AnnotatorKind.HUMAN, id=f"reviewer-{i % 17}"),
                metadata={"batch": i // 100, "tool": "review-ui 3.2"},
                created_at=when,
                updated_at=when,
                extensions={provider.value: {"native_id": f"n-{i}", "source": "API"}},
            )
        )
    return out


async def measure_export_memory() -> dict[str, Any]:
    """Cold exports of 10,000 and 20,000 annotations (500 and 1,000 sessions, 20 annotations each)
    in both formats under tracemalloc; the figures the test checks.

    Run in a fresh interpreter by the test: tracemalloc counts every thread's allocations, and the
    suite's session fixtures keep servers running in threads of the pytest process.
    """
    figures: dict[str, Any] = {}
    for subjects in (500, 1000):  # 1,000: GET's subject id limit
        phoenix = FakeProvider("px", _big("px", subjects * 10, subjects, ProviderKind.PHOENIX))
        datadog = FakeProvider(
            "dd",
            _big("dd", subjects * 10, subjects, ProviderKind.DATADOG),
            provider_kind=ProviderKind.DATADOG,
            caps=DATADOG_LIKE,
        )
        params = [("subject_id", f"session-{i:05d}") for i in range(subjects)]
        for fmt in ("jsonl", "csv"):
            federation = Federation([phoenix, datadog], CacheConfig(), cursor_secret=b"k" * 32)
            app = _app(federation)
            try:
                # One tiny export first: the app builds its middleware stack and serializers on first use.
                warm_up = await _get(app, EXPORT, [("subject_id", "warm-up"), ("format", fmt)])
                tracemalloc.start()
                try:
                    run = await _get(app, EXPORT, [*params, ("format", fmt)])
                    peak = tracemalloc.get_traced_memory()[1]
                finally:
                    tracemalloc.stop()
                cached = len(federation.cache)
            finally:
                await federation.aclose()
            figures[f"{fmt}-{subjects}"] = {
                "warm_up_status": warm_up.status,
                "status": run.status,
                "lines": run.lines,
                "size": run.size,
                "chunks": run.chunks,
                "trailer": b"_export" in run.last,
                "peak": peak,
                "cached_groups": cached,
            }
    return figures


def test_export_of_20000_annotations_keeps_memory_flat() -> None:
    code = "import asyncio, json; from tests.api.test_export import measure_export_memory as m; "
    code += "print(json.dumps(asyncio.run(m())))"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    for fmt in ("jsonl", "csv"):
        for subjects in (500, 1000):
            got = figures[f"{fmt}-{subjects}"]
            assert got["warm_up_status"] == 200
            assert got["status"] == 200
            assert got["lines"] == subjects * 20 + (1 if fmt == "csv" else 0)
            assert not got["trailer"]
            assert got["chunks"] >= subjects // 10  # sent a slice at a time, not as one body
            # Nothing an export reads is kept in the cache (only the warm-up's one subject).
            assert got["cached_groups"] <= 2
        small, large = figures[f"{fmt}-500"], figures[f"{fmt}-1000"]
        print(
            f"{fmt}: {small['size']:,} B exported with a traced peak of {small['peak']:,} B; "
            f"{large['size']:,} B with {large['peak']:,} B"
        )
        # Twice the export, the same memory: the peak is a few subject chunks, not the export.
        assert large["peak"] < small["peak"] * 1.3 + 256 * 1024, (small, large)
        assert large["peak"] < large["size"] / 2, f"{fmt}: peak {large['peak']:,} B for {large['size']:,} B"


async def test_a_source_failing_on_a_later_page_is_named_in_the_trailer() -> None:
    calls = {"dd": 0}

    def fail_after_first(query: SourceQuery) -> SourceUnavailableError | None:
        calls["dd"] += 1
        return SourceUnavailableError("simulated outage", source="dd") if calls["dd"] > 1 else None

    # 100 subjects, 25 Phoenix and 5 Datadog annotations each. The export's first chunks are one
    # subject each (federation.id_chunks.Chunker), each chunk asking each source once, so the second
    # chunk meets the outage, and every chunk after it too.
    assert EXPORT_FIRST_CHUNK_SUBJECTS == 1
    phoenix = FakeProvider(
        "px", [make_annotation("px", f"s{i % 100:03d}", updated_at=i) for i in range(2_500)]
    )
    datadog = FakeProvider(
        "dd",
        [
            make_annotation("dd", f"s{i % 100:03d}", updated_at=i, provider=ProviderKind.DATADOG)
            for i in range(500)
        ],
        provider_kind=ProviderKind.DATADOG,
        caps=DATADOG_LIKE,
        fail=fail_after_first,
    )
    federation = Federation([phoenix, datadog], CacheConfig(enabled=False), cursor_secret=b"k" * 32)
    app = _app(federation)
    params = [("subject_id", f"s{i:03d}") for i in range(100)]
    try:
        allowed = await _get(app, EXPORT, params, keep=True)
        assert allowed.status == 200
        lines = b"".join(allowed.body or []).splitlines()
        trailer = json.loads(lines[-1])
        assert trailer["_export"]["partial"] is True
        assert [s["source"] for s in trailer["_export"]["sources"]] == ["dd"]
        assert len(lines) - 1 == 30 + 99 * 25  # the first subject whole, the rest without dd

        calls["dd"] = 0
        denied = await _get(app, EXPORT, [*params, ("partial", "deny"), ("format", "csv")], keep=True)
        assert denied.status == 200  # the first page was complete: streaming had begun
        records = list(csv.reader(io.StringIO(b"".join(denied.body or []).decode(), newline="")))
        assert records[-1][0] == "#_export"
        failure = json.loads(records[-1][1])["sources"][0]
        assert failure["source"] == "dd"
        assert failure["error"]["code"] == "source_unavailable"
        assert len(records) - 2 == 30  # the header, one complete chunk (one subject), the trailer
    finally:
        await federation.aclose()
