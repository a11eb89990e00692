"""``annotation-gateway query``: run a federated query in-process and print it.

Contract: builds the configured sources and a :class:`~annotation_gateway.federation.Federation`
exactly as the server does (no server needed), runs one query (or every page with ``--all``)
and prints a rich table or, with ``--format json``, the API's answer shape
``{data, next_cursor, partial, sources}``. A failing source is reported (partial) unless
``--partial deny``; a failed query prints its problem and exits 1; a bad config, or input the
API refuses (an unknown source, too many ids), exits 2
(:func:`~annotation_gateway.cli._inputs.command_errors`).

``-s`` takes an id as the table prints it: ``support-07`` or ``trace:4f1c…`` (a kind prefix
also asks for that kind; see :func:`~annotation_gateway.cli._inputs.collect_subjects`). The
table never breaks an id, name or label inside a word (see :func:`_table`).
"""

from __future__ import annotations

import asyncio
import enum
import sys
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from annotation_gateway.api.schemas import page_json
from annotation_gateway.cli._app import (
    DEFAULT_CONFIG,
    AnnotatorKindOption,
    ConfigOption,
    ExcludeNameOption,
    IdentifierOption,
    NameOption,
    PartialMode,
    ProviderOption,
    QueueOption,
    ScopeOption,
    SourceOption,
    SubjectIdOption,
    SubjectKindOption,
    app,
    console,
    load_or_exit,
)
from annotation_gateway.cli._inputs import command_errors, open_federation, query_from_options
from annotation_gateway.federation import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    FederatedQuery,
    QueryPage,
)
from annotation_gateway.model import SubjectKind
from annotation_gateway.reports import FittedTable
from annotation_gateway.settings import GatewaySettings

__all__ = ["OutputFormat", "query", "run_query"]

EXPLANATION_WIDTH = 40
ID_WIDTH = 9
_COLUMNS = ("updated_at", "source", "subject", "name", "label", "score", "annotator", "explanation")


class OutputFormat(enum.StrEnum):
    TABLE = "table"
    JSON = "json"


async def run_query(settings: GatewaySettings, query: FederatedQuery, *, follow: bool) -> QueryPage:
    """The page for ``query`` (every page merged into one when ``follow``)."""
    async with open_federation(settings) as federation:
        if not follow:
            return await federation.query(query)
        pages = [page async for page in federation.pages(query)]
        return QueryPage(
            records=[record for page in pages for record in page.records],
            next_cursor=None,
            partial=any(page.partial for page in pages),
            sources=pages[0].sources,
        )


def _short(text: str) -> str:
    """Long opaque ids (Datadog user UUIDs) cut to what tells them apart in a table."""
    return text if len(text) <= ID_WIDTH else text[: ID_WIDTH - 1] + "…"


def _table(page: QueryPage) -> FittedTable:
    """The page as a table (see :class:`~annotation_gateway.reports.FittedTable`): no id, name or
    label is ever broken inside a word; the explanation (free text, at most EXPLANATION_WIDTH
    characters here) is cut with "…" to the room left. Columns are separated by spaces, not rules,
    and a row takes one line: when the width does not allow that, the explanation, then the
    annotator, then the time are left out (the caption says so); a session query at 80 columns
    keeps the time, source, subject, name, label and score."""
    title = f"{len(page.data)} annotation(s)" + (" — PARTIAL" if page.partial else "")
    table = Table(
        title=title,
        caption="subjects are sessions unless prefixed (trace:…, span:…)",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )
    for column in _COLUMNS:
        table.add_column(column, justify="right" if column == "score" else "left")
    for a in page.data:
        explanation = a.explanation or ""
        if len(explanation) > EXPLANATION_WIDTH:
            explanation = explanation[: EXPLANATION_WIDTH - 1] + "…"
        table.add_row(
            a.updated_at.strftime("%m-%d %H:%M:%S"),
            a.source,
            a.subject.id
            if a.subject.kind is SubjectKind.SESSION
            else f"{a.subject.kind.value}:{a.subject.id}",
            a.name,
            a.label or "",
            "" if a.score is None else f"{a.score:g}",
            a.annotator.kind.value + (f" {_short(a.annotator.id)}" if a.annotator.id else ""),
            explanation,
        )
    optional = [[_COLUMNS.index(name)] for name in ("explanation", "annotator", "updated_at")]
    return FittedTable(table, free=[_COLUMNS.index("explanation")], optional=optional, one_line=True)


@app.command()
def query(
    config: ConfigOption = DEFAULT_CONFIG,
    subject_id: SubjectIdOption = None,
    identifier: IdentifierOption = None,
    name: NameOption = None,
    exclude_name: ExcludeNameOption = None,
    source: SourceOption = None,
    provider: ProviderOption = None,
    subject_kind: SubjectKindOption = None,
    annotator_kind: AnnotatorKindOption = None,
    queue: QueueOption = None,
    scope: ScopeOption = None,
    limit: Annotated[
        int, typer.Option(min=1, max=MAX_PAGE_SIZE, help="Annotations per page.")
    ] = DEFAULT_PAGE_SIZE,
    all_pages: Annotated[bool, typer.Option("--all", help="Follow the cursor to the last page.")] = False,
    include_raw: Annotated[bool, typer.Option(help="Add each vendor record as `raw` (JSON).")] = False,
    partial: Annotated[PartialMode, typer.Option(help="deny: fail if any source fails.")] = PartialMode.ALLOW,
    output: Annotated[
        OutputFormat, typer.Option("--format", "-f", help="table or json.")
    ] = OutputFormat.TABLE,
) -> None:
    """Query annotations across every source, in-process (no server needed)."""
    federated = query_from_options(
        subject_id=subject_id,
        subject_kind=subject_kind,
        scope=scope,
        identifiers=identifier,
        names=name,
        exclude_names=exclude_name,
        sources=source,
        providers=provider,
        annotator_kinds=annotator_kind,
        queues=queue,
        limit=limit,
        include_raw=include_raw,
        partial=partial,
    )
    settings = load_or_exit(config)
    with command_errors():
        page = asyncio.run(run_query(settings, federated, follow=all_pages))
    if output is OutputFormat.JSON:
        sys.stdout.buffer.write(page_json(page) + b"\n")
        sys.stdout.flush()
        return
    console.print(_table(page))
    for status in page.sources:
        style = {"ok": "green", "error": "red", "skipped": "yellow"}[status.status]
        line = f"[{style}]{status.source}[/] {status.status}: {status.count} match(es)"
        if status.scanned_subjects is not None:
            line += f" in {status.scanned_subjects} subject(s) scanned"
        line += f", {status.elapsed_ms:.0f} ms"
        if status.error:
            line += f" — {status.error.get('detail') or status.error.get('reason') or status.error}"
        console.print(line, highlight=False)
    if page.next_cursor:
        console.print(f"[dim]more: --limit {MAX_PAGE_SIZE} or --all[/]")
