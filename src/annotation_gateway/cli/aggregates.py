"""``annotation-gateway metrics`` and ``annotation-gateway agreement`` (SPEC §8), in-process.

Contract: the same query as ``query``/``export`` (ids, an id file, or ``--scope all``, and every
filter) plus the route's own options, answered by the same aggregation as
``/v1/annotations/metrics`` and ``/v1/annotations/agreement`` over the configured sources (no
server needed). ``--format json|csv|html`` writes exactly the bytes the API answers (the
renderers are the API's); ``table`` (the default) draws fitted tables. ``--output`` writes to a
file. Bad input exits 2 with the API's own message; a source failing with ``--partial deny``, or
every source failing, exits 1; a partial answer is drawn and marked, and exits 1 too.
"""

from __future__ import annotations

import asyncio
import enum
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from annotation_gateway import charts
from annotation_gateway.aggregate.agreement import AgreementAggregator, RaterField
from annotation_gateway.aggregate.metrics import GroupKey, MetricsAggregator, MetricsSpec
from annotation_gateway.api.routes.aggregates import (
    HTML_MAX_TABLE_ROWS,
    agreement_csv,
    agreement_json,
    metrics_csv,
    metrics_json,
)
from annotation_gateway.api.schemas import source_statuses
from annotation_gateway.cli._app import (
    DEFAULT_CONFIG,
    EXIT_FAILURE,
    AnnotatorKindOption,
    ConfigOption,
    NameOption,
    PartialMode,
    ProviderOption,
    QueueOption,
    ScopeOption,
    SourceOption,
    SubjectIdOption,
    SubjectIdsFileOption,
    SubjectKindOption,
    app,
    console,
    err_console,
    load_or_exit,
)
from annotation_gateway.cli._inputs import command_errors, exit_bad_input, open_federation, query_from_options
from annotation_gateway.federation import FederatedQuery
from annotation_gateway.federation.answers import SourceStatus
from annotation_gateway.records import Record
from annotation_gateway.reports import FittedTable

__all__ = ["AggregateOutput", "agreement_command", "metrics_command"]


class AggregateOutput(enum.StrEnum):
    TABLE = "table"
    JSON = "json"
    CSV = "csv"
    HTML = "html"


FormatOption = Annotated[AggregateOutput, typer.Option("--format", "-f", help="table, json, csv or html.")]
OutputOption = Annotated[Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")]
FromOption = Annotated[
    datetime | None, typer.Option("--from", help="Inclusive start on --time-field (UTC if naive).")
]
ToOption = Annotated[
    datetime | None, typer.Option("--to", help="Exclusive end on --time-field (UTC if naive).")
]
TimeFieldOption = Annotated[str, typer.Option("--time-field", help="updated_at or created_at.")]


def _spec(**fields: Any) -> MetricsSpec:
    with command_errors():
        return MetricsSpec(**fields)


async def _run(config: Path, query: FederatedQuery, consume: Any) -> tuple[bool, list[SourceStatus]]:
    settings = load_or_exit(config)
    async with open_federation(settings) as federation:
        return await federation.consume(query, consume)


def _execute(config: Path, query: FederatedQuery, consume: Any) -> tuple[bool, list[SourceStatus]]:
    with command_errors():
        return asyncio.run(_run(config, query, consume))


def _write(data: bytes, output: Path | None) -> None:
    if output is None:
        sys.stdout.buffer.write(data if data.endswith(b"\n") else data + b"\n")
        sys.stdout.flush()
    else:
        output.write_bytes(data)
        err_console.print(f"wrote {output}", highlight=False)


def _sources_lines(partial: bool, sources: list[SourceStatus]) -> None:
    for status in sources:
        style = {"ok": "green", "error": "red", "skipped": "yellow"}[status.status]
        line = f"[{style}]{status.source}[/] {status.status}: {status.count} annotation(s)"
        if status.scanned_subjects is not None:
            line += f" in {status.scanned_subjects} subject(s) scanned"
        if status.error:
            line += f" — {status.error.get('detail') or status.error.get('reason') or status.error}"
        console.print(line, highlight=False)
    if partial:
        console.print(
            "[bold yellow]partial:[/] a source failed; its annotations are missing", highlight=False
        )


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


@app.command("metrics")
def metrics_command(
    config: ConfigOption = DEFAULT_CONFIG,
    subject_id: SubjectIdOption = None,
    subject_ids_file: SubjectIdsFileOption = None,
    scope: ScopeOption = None,
    name: NameOption = None,
    source: SourceOption = None,
    provider: ProviderOption = None,
    subject_kind: SubjectKindOption = None,
    annotator_kind: AnnotatorKindOption = None,
    queue: QueueOption = None,
    group_by: Annotated[
        list[str] | None,
        typer.Option(
            "--group-by",
            "-g",
            help="name, source, provider, annotator_kind, "
            "annotator_id, subject_kind, project, queue or label (repeatable, ≤ 4).",
        ),
    ] = None,
    interval: Annotated[
        str | None, typer.Option(help="hour, day, week (ISO, Monday) or month (UTC).")
    ] = None,
    time_field: TimeFieldOption = "updated_at",
    start: FromOption = None,
    end: ToOption = None,
    partial: Annotated[PartialMode, typer.Option(help="deny: fail if any source fails.")] = PartialMode.ALLOW,
    output_format: FormatOption = AggregateOutput.TABLE,
    output: OutputOption = None,
) -> None:
    """Counts, score statistics and label counts per time bucket and group (SPEC §8)."""
    query = query_from_options(
        subject_id=subject_id,
        subject_ids_file=subject_ids_file,
        subject_kind=subject_kind,
        scope=scope,
        names=name,
        sources=source,
        providers=provider,
        annotator_kinds=annotator_kind,
        queues=queue,
        partial=partial,
    )
    keys: list[GroupKey] = list(group_by or [])  # type: ignore[arg-type]
    spec = _spec(
        group_by=tuple(keys),
        interval=_checked(interval, ("hour", "day", "week", "month"), "--interval"),
        time_field=_checked(time_field, ("updated_at", "created_at"), "--time-field"),
        start=start,
        end=end,
    )
    aggregator = MetricsAggregator(spec)
    partial_answer, sources = _execute(config, spec.narrow(query), aggregator.add)
    rows = aggregator.rows()
    if output_format is AggregateOutput.JSON:
        _write(metrics_json(rows, partial_answer, sources), output)
    elif output_format is AggregateOutput.CSV:
        _write(metrics_csv(rows, spec.group_by), output)
    elif output_format is AggregateOutput.HTML:
        page = charts.metrics_html(
            rows,
            group_by=spec.group_by,
            interval=spec.interval,
            title="Annotation metrics",
            partial=partial_answer,
            sources=source_statuses(sources),
            max_rows=HTML_MAX_TABLE_ROWS,
        )
        _write(page, output)
    else:
        console.print(_metrics_table(rows, spec))
        _sources_lines(partial_answer, sources)
    if partial_answer:
        raise typer.Exit(EXIT_FAILURE)


def _checked(value: Any, allowed: tuple[str, ...], option: str) -> Any:
    if value is not None and value not in allowed:
        raise exit_bad_input(f"{option}: {value!r} is not one of {', '.join(allowed)}")
    return value


def _metrics_table(rows: list[dict[str, Any]], spec: MetricsSpec) -> FittedTable:
    table = Table(title=f"{len(rows)} row(s)", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    columns = ["bucket", *spec.group_by, "count", "scores", "mean", "stdev", "p50", "p90", "labels"]
    for column in columns:
        table.add_column(
            column,
            justify="right" if column in ("count", "scores", "mean", "stdev", "p50", "p90") else "left",
        )
    for row in rows:
        labels = ", ".join(f"{label} {n}" for label, n in row["label_counts"].items())
        table.add_row(
            (row["bucket"] or "")[:16].replace("T00:00", "").replace("T", " "),
            *("∅" if row[k] is None else str(row[k]) for k in spec.group_by),
            str(row["count"]),
            str(row["score_count"]),
            _num(row["score_mean"]),
            _num(row["score_stdev"]),
            _num(row["score_p50"]),
            _num(row["score_p90"]),
            labels,
        )
    return FittedTable(table, free=[len(columns) - 1])


@app.command("agreement")
def agreement_command(
    config: ConfigOption = DEFAULT_CONFIG,
    subject_id: SubjectIdOption = None,
    subject_ids_file: SubjectIdsFileOption = None,
    scope: ScopeOption = None,
    name: NameOption = None,
    source: SourceOption = None,
    provider: ProviderOption = None,
    subject_kind: SubjectKindOption = None,
    annotator_kind: AnnotatorKindOption = None,
    queue: QueueOption = None,
    by: Annotated[
        str, typer.Option(help="annotator_kind, annotator_id or source: who the raters are.")
    ] = "annotator_kind",
    time_field: TimeFieldOption = "updated_at",
    start: FromOption = None,
    end: ToOption = None,
    partial: Annotated[PartialMode, typer.Option(help="deny: fail if any source fails.")] = PartialMode.ALLOW,
    output_format: FormatOption = AggregateOutput.TABLE,
    output: OutputOption = None,
) -> None:
    """Do raters agree? Per annotation name: kappa, Krippendorff's alpha, disagreements (SPEC §8)."""
    rater: RaterField = _checked(by, ("annotator_kind", "annotator_id", "source"), "--by")
    query = query_from_options(
        subject_id=subject_id,
        subject_ids_file=subject_ids_file,
        subject_kind=subject_kind,
        scope=scope,
        names=name,
        sources=source,
        providers=provider,
        annotator_kinds=annotator_kind,
        queues=queue,
        partial=partial,
    )
    spec = _spec(
        time_field=_checked(time_field, ("updated_at", "created_at"), "--time-field"), start=start, end=end
    )
    aggregator = AgreementAggregator(rater)
    keeps = spec.window()

    def consume(records: list[Record]) -> None:
        aggregator.add(records if keeps is None else [r for r in records if keeps(r)])

    partial_answer, sources = _execute(config, spec.narrow(query), consume)
    results = aggregator.results()
    if output_format is AggregateOutput.JSON:
        _write(agreement_json(rater, results, partial_answer, sources), output)
    elif output_format is AggregateOutput.CSV:
        _write(agreement_csv(results), output)
    elif output_format is AggregateOutput.HTML:
        answer = {
            "by": rater,
            "results": results,
            "partial": partial_answer,
            "sources": source_statuses(sources),
        }
        _write(charts.agreement_html(answer, title="Annotation agreement"), output)
    else:
        console.print(_agreement_table(rater, results))
        for result in results:
            if result["disagreements"]:
                shown = ", ".join(result["disagreements"][:10]) + (
                    " …" if len(result["disagreements"]) > 10 else ""
                )
                console.print(f"{result['name']}: raters disagree on {shown}", highlight=False)
        _sources_lines(partial_answer, sources)
    if partial_answer:
        raise typer.Exit(EXIT_FAILURE)


def _agreement_table(by: str, results: list[dict[str, Any]]) -> FittedTable:
    table = Table(title=f"agreement by {by}", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    columns = ["name", "raters", "subjects", "agreement", "kappa", "alpha"]
    for column in columns:
        table.add_column(column, justify="left" if column in ("name", "raters") else "right")
    for r in results:
        kappa = "" if r["kappa"] is None else f"{r['kappa']:.3f} ({r['kappa_kind']})"
        alpha = "" if r["alpha"] is None else f"{r['alpha']:.3f} ({r['alpha_level']})"
        agreement = "" if r["percent_agreement"] is None else f"{r['percent_agreement']:.0%}"
        table.add_row(r["name"], " ".join(r["raters"]), str(r["subjects"]), agreement, kappa, alpha)
    return FittedTable(table)
