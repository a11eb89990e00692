"""``/v1/annotations/metrics`` and ``/v1/annotations/agreement`` (SPEC §8): aggregates for
dashboards, computed as the records stream by.

Contract:
- both take the filters of ``GET /v1/annotations`` (ids, or ``scope=all``; not ``limit`` or
  ``cursor``: the whole result is aggregated) plus their own parameters; ``POST
  /v1/annotations/metrics`` takes the search body with the same extra fields;
- metrics: ``group_by`` (repeatable, 0..4), ``interval`` (``hour|day|week|month``),
  ``time_field`` (``updated_at``, default, or ``created_at``), ``from`` (inclusive) and ``to``
  (exclusive), each RFC 3339 or integer epoch **milliseconds** (Grafana's ``${__from}``);
  answer ``{"rows", "partial", "sources"}`` (:mod:`annotation_gateway.aggregate.metrics` says
  what a row is), or CSV (``label_counts`` as a JSON string) or a self-contained HTML page;
- agreement: ``by`` (``annotator_kind``, default, ``annotator_id`` or ``source``) and the same
  window; answer ``{"by", "results", "partial", "sources"}``, or CSV (one record per name) or HTML;
- ``format`` (``json|csv|html``) wins over ``Accept``; an ``Accept`` admitting none is 406;
- sources fail as for reads: ``partial: true`` with the failing source's problem in
  ``sources[]``; ``partial=deny`` → that source's problem (502/504/4xx class). The JSON, CSV and
  HTML renderers here are also what the CLI writes.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import anyio
import orjson
from fastapi import APIRouter, Body, Request, Response
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from annotation_gateway import charts
from annotation_gateway.aggregate.agreement import RATER_FIELDS, AgreementAggregator
from annotation_gateway.aggregate.buckets import INTERVALS, Interval
from annotation_gateway.aggregate.metrics import (
    GROUP_KEYS,
    MAX_GROUP_BY,
    GroupKey,
    MetricsAggregator,
    MetricsSpec,
    TimeField,
)
from annotation_gateway.api.auth import BEARER_SECURITY, AuthDep, FederationDep
from annotation_gateway.api.negotiation import REPORT_MEDIA_TYPES, ReportFormat, negotiate_report
from annotation_gateway.api.problems import validation_problem
from annotation_gateway.api.routes.annotations import cache_policy
from annotation_gateway.api.schemas import (
    PROBLEM_RESPONSES,
    AnnotationQueryParams,
    AnnotationSearchBody,
    SourceStatusModel,
    parse_query_params,
    query_items,
    query_parameters_openapi,
    source_statuses,
)
from annotation_gateway.federation import FederatedQuery
from annotation_gateway.federation.answers import SourceStatus
from annotation_gateway.records import Record

__all__ = [
    "agreement_csv",
    "agreement_json",
    "metrics_csv",
    "metrics_json",
    "parse_moment",
    "router",
]

router = APIRouter(prefix="/v1/annotations", tags=["aggregates"])


HTML_MAX_TABLE_ROWS = 5000
"""Rows listed in an HTML metrics page's table (the charts draw every row): a year of days for
100 groups made a 12 MB page."""
_EPOCH_MS = re.compile(r"^-?\d{1,15}$")
_OWN_METRICS = ("group_by", "interval", "time_field", "from", "to", "format")
_OWN_AGREEMENT = ("by", "time_field", "from", "to", "format")
_NOT_HERE = ("limit", "cursor")


def parse_moment(value: str, field: str) -> datetime:
    """``from`` / ``to``: integer epoch milliseconds or RFC 3339 (naive means UTC)."""
    text = value.strip()
    try:
        if _EPOCH_MS.match(text):
            return datetime.fromtimestamp(int(text) / 1000, tz=UTC)
        moment = datetime.fromisoformat(text)
    except (ValueError, OverflowError, OSError):
        raise validation_problem(
            [
                {
                    "loc": ("query", field),
                    "msg": "must be RFC 3339 or epoch milliseconds",
                    "type": "value_error",
                }
            ]
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _negotiate(request: Request, explicit: str | None) -> ReportFormat:
    chosen: ReportFormat | None = None
    if explicit is not None:
        try:
            chosen = ReportFormat(explicit)
        except ValueError:
            raise validation_problem(
                [{"loc": ("query", "format"), "msg": "must be json, csv or html", "type": "enum"}]
            ) from None
    return negotiate_report(request.headers.get("accept"), chosen)


def _split(request: Request, own: Sequence[str]) -> tuple[dict[str, list[str]], list[tuple[str, str]]]:
    """The route's own parameters, and the rest (the filters of ``GET /v1/annotations``)."""
    mine: dict[str, list[str]] = {}
    filters: list[tuple[str, str]] = []
    refused: list[Mapping[str, Any]] = []
    for key, value in query_items(request.scope["query_string"]):
        if key in own:
            mine.setdefault(key, []).append(value)
        elif key in _NOT_HERE:
            refused.append(
                {
                    "loc": ("query", key),
                    "msg": "not allowed: the whole result is aggregated",
                    "type": "extra_forbidden",
                }
            )
        else:
            filters.append((key, value))
    if refused:
        raise validation_problem(refused)
    return mine, filters


def _one(mine: dict[str, list[str]], key: str) -> str | None:
    values = mine.get(key)
    return values[-1] if values else None


def _choice(value: str | None, allowed: Sequence[str], field: str) -> str | None:
    if value is not None and value not in allowed:
        raise validation_problem(
            [{"loc": ("query", field), "msg": f"must be one of {', '.join(allowed)}", "type": "enum"}]
        )
    return value


def _spec(
    group_by: Sequence[str],
    interval: str | None,
    time_field: str | None,
    start: datetime | None,
    end: datetime | None,
) -> MetricsSpec:
    for key in group_by:
        _choice(key, GROUP_KEYS, "group_by")
    _choice(interval, INTERVALS, "interval")
    _choice(time_field, ("updated_at", "created_at"), "time_field")
    return MetricsSpec(
        group_by=tuple(group_by),  # type: ignore[arg-type]
        interval=interval,  # type: ignore[arg-type]
        time_field=time_field or "updated_at",  # type: ignore[arg-type]
        start=start,
        end=end,
    )


def _window(mine: dict[str, list[str]]) -> tuple[datetime | None, datetime | None]:
    start, end = _one(mine, "from"), _one(mine, "to")
    return (
        None if start is None else parse_moment(start, "from"),
        None if end is None else parse_moment(end, "to"),
    )


# --- rendering (the CLI writes the same bytes) -------------------------------------------------


def _statuses(partial: bool, sources: Sequence[SourceStatus]) -> dict[str, Any]:
    return {"partial": partial, "sources": source_statuses(sources)}


def metrics_json(rows: Sequence[Mapping[str, Any]], partial: bool, sources: Sequence[SourceStatus]) -> bytes:
    return orjson.dumps({"rows": list(rows), **_statuses(partial, sources)})


def _csv(header: Sequence[str], records: Iterable[Sequence[Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(records)
    return out.getvalue().encode()


def metrics_csv(rows: Sequence[Mapping[str, Any]], group_by: Sequence[str]) -> bytes:
    columns = [
        "bucket",
        *group_by,
        "count",
        "score_count",
        "score_mean",
        "score_stdev",
        "score_min",
        "score_max",
        "score_p50",
        "score_p90",
        "label_counts",
    ]
    return _csv(
        columns,
        (
            [
                orjson.dumps(row[c]).decode() if c == "label_counts" else ("" if row[c] is None else row[c])
                for c in columns
            ]
            for row in rows
        ),
    )


def agreement_json(
    by: str, results: Sequence[Mapping[str, Any]], partial: bool, sources: Sequence[SourceStatus]
) -> bytes:
    return orjson.dumps({"by": by, "results": list(results), **_statuses(partial, sources)})


def agreement_csv(results: Sequence[Mapping[str, Any]]) -> bytes:
    columns = [
        "name",
        "raters",
        "subjects",
        "percent_agreement",
        "kappa",
        "kappa_kind",
        "alpha",
        "alpha_level",
        "disagreements",
    ]
    return _csv(
        columns,
        (
            [
                r["name"],
                " ".join(r["raters"]),
                r["subjects"],
                *(
                    "" if r[c] is None else r[c]
                    for c in ("percent_agreement", "kappa", "kappa_kind", "alpha")
                ),
                r["alpha_level"],
                " ".join(r["disagreements"]),
            ]
            for r in results
        ),
    )


def _response(content: bytes, fmt: ReportFormat) -> Response:
    return Response(content, media_type=REPORT_MEDIA_TYPES[fmt], headers={"Vary": "Accept"})


# --- metrics ------------------------------------------------------------------------------------


async def _metrics(
    request: Request,
    principal: AuthDep,
    federation: FederationDep,
    query: FederatedQuery,
    spec: MetricsSpec,
    fmt: ReportFormat,
) -> Response:
    aggregator = MetricsAggregator(spec)
    partial, sources = await federation.consume(
        cache_policy(request).apply(spec.narrow(query)),
        aggregator.add,
        allowed_sources=principal.allowed_sources,
    )
    rows = aggregator.rows()
    if fmt is ReportFormat.CSV:
        return _response(metrics_csv(rows, spec.group_by), fmt)
    if fmt is ReportFormat.HTML:
        page = await anyio.to_thread.run_sync(
            lambda: charts.metrics_html(
                rows,
                group_by=spec.group_by,
                interval=spec.interval,
                title="Annotation metrics",
                partial=partial,
                sources=source_statuses(sources),
                max_rows=HTML_MAX_TABLE_ROWS,
            )
        )
        return _response(page, fmt)
    return _response(metrics_json(rows, partial, sources), fmt)


def _metrics_parameters() -> list[dict[str, Any]]:
    own: list[dict[str, Any]] = [
        {
            "name": "group_by",
            "in": "query",
            "required": False,
            "style": "form",
            "explode": True,
            "description": f"Group rows by these keys (repeat the key, 0..{MAX_GROUP_BY}); "
            "`queue` is the queue's name.",
            "schema": {
                "type": "array",
                "maxItems": MAX_GROUP_BY,
                "items": {"type": "string", "enum": list(GROUP_KEYS)},
            },
        },
        {
            "name": "interval",
            "in": "query",
            "required": False,
            "description": "Time buckets (UTC; ISO weeks start on Monday); none: one row per group.",
            "schema": {"type": "string", "enum": list(INTERVALS)},
        },
        *_window_parameters(),
        {
            "name": "format",
            "in": "query",
            "required": False,
            "description": "`json` (default), `csv` (label_counts as a JSON string) or `html` (charts). "
            "Overrides Accept.",
            "schema": {"type": "string", "enum": [f.value for f in ReportFormat]},
        },
    ]
    return own + [p for p in query_parameters_openapi(AnnotationQueryParams) if p["name"] not in _NOT_HERE]


def _window_parameters() -> list[dict[str, Any]]:
    moment = {"type": "string", "description": "RFC 3339, or integer epoch milliseconds"}
    return [
        {
            "name": "time_field",
            "in": "query",
            "required": False,
            "description": "The time the window and the buckets use.",
            "schema": {"type": "string", "enum": ["updated_at", "created_at"], "default": "updated_at"},
        },
        {
            "name": "from",
            "in": "query",
            "required": False,
            "description": "Inclusive start on time_field: RFC 3339 or epoch milliseconds "
            "(Grafana's ${__from}).",
            "schema": moment,
        },
        {
            "name": "to",
            "in": "query",
            "required": False,
            "description": "Exclusive end on time_field: RFC 3339 or epoch milliseconds (Grafana's ${__to}).",
            "schema": moment,
        },
    ]


class MetricsAnswer(BaseModel):
    """The metrics answer (documentation model: rows are flat, one field per ``group_by`` key)."""

    rows: list[dict[str, Any]] = Field(
        description="One row per (bucket, group): bucket, the group_by fields, count, score_count, "
        "score_mean, score_stdev, score_min, score_max, score_p50, score_p90, label_counts."
    )
    partial: bool
    sources: list[SourceStatusModel]


class AgreementAnswer(BaseModel):
    """The agreement answer (documentation model)."""

    by: str
    results: list[dict[str, Any]] = Field(
        description="Per name: raters, subjects, percent_agreement, kappa, kappa_kind, alpha, "
        "alpha_level, confusion ({raters, labels, matrix}), disagreements."
    )
    partial: bool
    sources: list[SourceStatusModel]


def _responses(model: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    return {
        200: {
            "model": model,
            "description": "The aggregate (JSON), or CSV / HTML as asked.",
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "text/html": {"schema": {"type": "string"}},
            },
        },
        **PROBLEM_RESPONSES,
        406: {"description": "The Accept header admits none of JSON, CSV, HTML (`not_acceptable`)."},
    }


@router.get(
    "/metrics",
    operation_id="annotation_metrics",
    summary="Counts, score statistics and label counts per time bucket and group",
    description="The filters of `GET /v1/annotations` (ids or `scope=all`; not limit/cursor) plus "
    "`group_by`, `interval`, `time_field`, `from`, `to`. One flat row per (bucket, group) with at "
    "least one annotation, ordered by bucket then the group values (null first): `count`, "
    "`score_count`, `score_mean`, `score_stdev` (sample), `score_min`, `score_max`, `score_p50`, "
    "`score_p90` (linear interpolation), `label_counts`. Aggregated as the annotations stream: "
    "memory grows with groups and scores only.",
    response_class=Response,
    responses=_responses(MetricsAnswer),
    openapi_extra={"parameters": _metrics_parameters(), **BEARER_SECURITY},
)
async def annotation_metrics(request: Request, principal: AuthDep, federation: FederationDep) -> Response:
    mine, filters = _split(request, _OWN_METRICS)
    fmt = _negotiate(request, _one(mine, "format"))
    start, end = _window(mine)
    spec = _spec(mine.get("group_by", []), _one(mine, "interval"), _one(mine, "time_field"), start, end)
    query = parse_query_params(filters).to_query(use_cache=True)
    return await _metrics(request, principal, federation, query, spec, fmt)


class MetricsBody(AnnotationSearchBody):
    """``POST /v1/annotations/metrics``: the search body plus the metrics parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    group_by: list[GroupKey] = Field(default_factory=list, max_length=MAX_GROUP_BY)
    interval: Interval | None = None
    time_field: TimeField = "updated_at"
    window_from: str | int | None = Field(default=None, validation_alias=AliasChoices("from"))
    window_to: str | int | None = Field(default=None, validation_alias=AliasChoices("to"))
    format: Literal["json", "csv", "html"] | None = None


@router.post(
    "/metrics",
    operation_id="annotation_metrics_search",
    summary="Metrics with the search body (long id lists)",
    description="`GET /v1/annotations/metrics` with the query as a JSON body (the search body's "
    "fields and the GET names) plus `group_by`, `interval`, `time_field`, `from`, `to`, `format`.",
    response_class=Response,
    responses=_responses(MetricsAnswer),
    openapi_extra=BEARER_SECURITY,
)
async def annotation_metrics_search(
    request: Request,
    principal: AuthDep,
    federation: FederationDep,
    body: Annotated[
        dict[str, Any],
        Body(
            examples=[
                {"scope": "all", "group_by": ["name", "source"], "interval": "day", "from": 1764547200000}
            ]
        ),
    ],
) -> Response:
    try:
        parsed = MetricsBody.model_validate(body)
    except ValidationError as exc:
        raise validation_problem(
            [{**err, "loc": ("body", *err["loc"])} for err in exc.errors(include_input=False)]
        ) from None
    fmt = _negotiate(request, parsed.format)
    mine = {k: [str(v)] for k, v in (("from", parsed.window_from), ("to", parsed.window_to)) if v is not None}
    start, end = _window(mine)
    spec = _spec(parsed.group_by, parsed.interval, parsed.time_field, start, end)
    return await _metrics(request, principal, federation, parsed.to_query(use_cache=True), spec, fmt)


# --- agreement ----------------------------------------------------------------------------------


@router.get(
    "/agreement",
    operation_id="annotation_agreement",
    summary="Inter-rater agreement per annotation name",
    description="The filters of `GET /v1/annotations` plus `by` (`annotator_kind`, default: "
    "does the LLM judge agree with the reviewers?; `annotator_id`; `source`) and the window "
    "(`time_field`, `from`, `to`). Per name: the raters, the subjects rated by at least two, "
    "percent agreement, Cohen's kappa (two raters) or Fleiss' kappa (more), Krippendorff's alpha "
    "(nominal for labels, interval for scores), the first two raters' confusion matrix and the "
    "subjects where raters disagree. Several annotations of one rater on one subject count as "
    "one rating: the majority label (ties: the newest), or the mean score.",
    response_class=Response,
    responses=_responses(AgreementAnswer),
    openapi_extra={
        "parameters": [
            {
                "name": "by",
                "in": "query",
                "required": False,
                "description": "Who the raters are.",
                "schema": {"type": "string", "enum": list(RATER_FIELDS), "default": "annotator_kind"},
            },
            *_window_parameters(),
            {
                "name": "format",
                "in": "query",
                "required": False,
                "description": "`json` (default), `csv` (one record per name) or `html`. Overrides Accept.",
                "schema": {"type": "string", "enum": [f.value for f in ReportFormat]},
            },
            *[p for p in query_parameters_openapi(AnnotationQueryParams) if p["name"] not in _NOT_HERE],
        ],
        **BEARER_SECURITY,
    },
)
async def annotation_agreement(request: Request, principal: AuthDep, federation: FederationDep) -> Response:
    mine, filters = _split(request, _OWN_AGREEMENT)
    fmt = _negotiate(request, _one(mine, "format"))
    by = _choice(_one(mine, "by"), RATER_FIELDS, "by") or "annotator_kind"
    start, end = _window(mine)
    spec = _spec((), None, _one(mine, "time_field"), start, end)
    query = parse_query_params(filters).to_query(use_cache=True)
    aggregator = AgreementAggregator(by)  # type: ignore[arg-type]
    keeps = spec.window()

    def consume(records: Sequence[Record]) -> None:
        aggregator.add(records if keeps is None else [r for r in records if keeps(r)])

    partial, sources = await federation.consume(
        cache_policy(request).apply(spec.narrow(query)),
        consume,
        allowed_sources=principal.allowed_sources,
    )
    results = aggregator.results()
    if fmt is ReportFormat.CSV:
        return _response(agreement_csv(results), fmt)
    if fmt is ReportFormat.HTML:
        answer = {"by": by, "results": results, "partial": partial, "sources": source_statuses(sources)}
        page = await anyio.to_thread.run_sync(
            lambda: charts.agreement_html(answer, title="Annotation agreement")
        )
        return _response(page, fmt)
    return _response(agreement_json(by, results, partial, sources), fmt)
