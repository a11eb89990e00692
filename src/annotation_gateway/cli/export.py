"""``annotation-gateway export``: every matching annotation as JSON Lines or CSV, in-process.

Contract: the filters of ``query`` (``--subject-id``/``--subject-ids-file``, whose ids may carry
a kind prefix such as ``trace:``, ``--identifier``, ``--name``...); builds the configured
sources and a federation in-process (no server needed) and streams it exactly as
``GET /v1/annotations/export`` does (:meth:`Federation.stream`: subject chunks, in the same
order, written as they arrive, through the same
:class:`~annotation_gateway.api.routes.export.ExportWriter`), so memory stays flat. Output goes
to ``--output`` (written to ``FILE.partial`` and renamed when complete) or
stdout. A rich progress display (annotations written so far; the total is known only at the end of a
stream) is drawn on stderr when stderr is a terminal, never otherwise.

Failures: one before anything was written (``--partial deny`` and a failing source, every
source failing, a 403/413) → its problem on stderr, exit 1, no file. A source failing once the
export has begun (or from the start with ``--partial allow``) → the export ends with the same
trailer as the API (JSONL ``{"_export": {"partial": true, "sources": [...]}}``, CSV
``#_export,...``), a warning naming the sources, and exit 1. Bad config or arguments → exit 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, BinaryIO

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from annotation_gateway.api.routes.export import ExportFormat, ExportWriter
from annotation_gateway.cli._app import (
    DEFAULT_CONFIG,
    EXIT_FAILURE,
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
    SubjectIdsFileOption,
    SubjectKindOption,
    app,
    err_console,
    load_or_exit,
)
from annotation_gateway.cli._inputs import command_errors, open_federation, query_from_options
from annotation_gateway.errors import GatewayError
from annotation_gateway.federation import FederatedQuery
from annotation_gateway.settings import GatewaySettings

__all__ = ["ExportSummary", "export_command", "run_export"]


class ExportSummary:
    """What an export wrote: how many annotations, and the sources that failed (if any)."""

    def __init__(self, count: int, failed: list[str]) -> None:
        self.count = count
        self.failed = failed


async def run_export(
    settings: GatewaySettings,
    query: FederatedQuery,
    fmt: ExportFormat,
    sink: BinaryIO,
    *,
    progress: Progress | None = None,
) -> ExportSummary:
    """Write every page of ``query`` to ``sink``; raises a ``GatewayError`` of the first page."""
    writer = ExportWriter(fmt, include_raw=query.include_raw)
    async with open_federation(settings) as federation:
        pages = federation.stream(query)
        task = None
        try:
            page = await anext(pages)  # failures of the first page: nothing written yet
            if progress is not None:
                # A streaming export learns its total only at the end: the bar counts up.
                task = progress.add_task("exporting", total=None)
            sink.write(writer.header())
            while True:
                writer.note(page)
                sink.write(writer.page(page.records))
                if progress is not None and task is not None:
                    progress.update(task, completed=writer.count)
                try:
                    page = await anext(pages)
                except StopAsyncIteration:
                    break
                except GatewayError as exc:
                    writer.note_error(exc)
                    break
        finally:
            aclose = getattr(pages, "aclose", None)
            if aclose is not None:
                await aclose()
        sink.write(writer.trailer())
        sink.flush()
    return ExportSummary(writer.count, sorted(writer.failed))


@contextlib.contextmanager
def _sink(output: Path | None) -> Iterator[BinaryIO]:
    if output is None:
        yield sys.stdout.buffer
        return
    partial = output.with_name(output.name + ".partial")
    try:
        with partial.open("wb") as handle:
            yield handle
        os.replace(partial, output)
    finally:
        partial.unlink(missing_ok=True)


@app.command("export")
def export_command(
    config: ConfigOption = DEFAULT_CONFIG,
    output_format: Annotated[
        ExportFormat, typer.Option("--format", "-f", help="jsonl (one annotation per line) or csv.")
    ] = ExportFormat.JSONL,
    subject_id: SubjectIdOption = None,
    subject_ids_file: SubjectIdsFileOption = None,
    identifier: IdentifierOption = None,
    name: NameOption = None,
    exclude_name: ExcludeNameOption = None,
    source: SourceOption = None,
    provider: ProviderOption = None,
    subject_kind: SubjectKindOption = None,
    annotator_kind: AnnotatorKindOption = None,
    queue: QueueOption = None,
    scope: ScopeOption = None,
    project: Annotated[list[str] | None, typer.Option(help="Only this Phoenix project (repeatable).")] = None,
    updated_after: Annotated[
        datetime | None, typer.Option(help="Only annotations updated at or after this time (UTC if naive).")
    ] = None,
    updated_before: Annotated[
        datetime | None, typer.Option(help="Only annotations updated before this time (UTC if naive).")
    ] = None,
    include_raw: Annotated[bool, typer.Option(help="Add each vendor record (`raw`).")] = False,
    partial: Annotated[
        PartialMode, typer.Option(help="deny: fail if any source fails before anything is written.")
    ] = PartialMode.ALLOW,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,
) -> None:
    """Export every matching annotation as JSON Lines or CSV, page by page (no server needed)."""
    query = query_from_options(
        subject_id=subject_id,
        subject_ids_file=subject_ids_file,
        subject_kind=subject_kind,
        scope=scope,
        identifiers=identifier,
        names=name,
        exclude_names=exclude_name,
        sources=source,
        providers=provider,
        annotator_kinds=annotator_kind,
        queues=queue,
        projects=project,
        updated_after=updated_after,
        updated_before=updated_before,
        include_raw=include_raw,
        partial=partial,
    )
    settings = load_or_exit(config)
    progress: Progress | None = None
    if err_console.is_terminal:
        progress = Progress(
            TextColumn("[bold]export[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err_console,
            transient=False,
        )
    with (
        command_errors(failed_note="nothing exported"),
        _sink(output) as sink,
        progress or contextlib.nullcontext(),
    ):
        summary = asyncio.run(run_export(settings, query, output_format, sink, progress=progress))
    where = str(output) if output is not None else "stdout"
    if summary.failed:
        err_console.print(
            f"[bold yellow]partial export:[/] {summary.count} annotations to {where}; "
            f"failed: {', '.join(summary.failed)} (named in the trailer line)",
            highlight=False,
        )
        raise typer.Exit(EXIT_FAILURE)
    err_console.print(f"exported {summary.count} annotations to {where}", highlight=False)
