"""``annotation-gateway compare``: compare two sources' annotations of the same subjects.

Contract: builds the configured sources and a federation in-process (no server needed), reads
every page of both sides exactly as ``POST /v1/compare`` does
(:func:`~annotation_gateway.api.routes.compare.fetch_sides`: a failing source fails the
comparison), runs :func:`~annotation_gateway.compare.compare` and prints it as a rich ``table``
(summary per name, then the rows that differ; ``--all-rows`` for every row), ``json``
(the API's answer), ``csv`` or ``html`` (the self-contained report), to stdout or ``--output``.

Subjects come from ``--subject-id`` (repeatable) and/or ``--subject-ids-file`` (one per line);
``--name-map`` is a TOML/JSON/CSV (``left,right``) file, ``--subject-map`` a CSV
(``left_id,right_id``); see :mod:`annotation_gateway.cli._inputs`.

Annotations a migration copied from the other side are left out by default (a copy is not an
independent judgement; see :mod:`annotation_gateway.compare`) and counted in the answer's
``ignored``; the table says how many under the summary. ``--include-copies`` compares them too.

Exit codes: 0 compared (differences are data, not failure), 1 a source failed, 2 bad config or
arguments (unknown source, bad file, invalid request).
"""

from __future__ import annotations

import asyncio
import enum
import sys
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.text import Text

from annotation_gateway.api.routes.compare import CompareFormat, fetch_sides, render
from annotation_gateway.cli._app import (
    DEFAULT_CONFIG,
    ConfigOption,
    ScopeOption,
    SubjectIdsFileOption,
    app,
    console,
    err_console,
    load_or_exit,
)
from annotation_gateway.cli._inputs import (
    InputError,
    collect_subject_ids,
    command_errors,
    exit_bad_input,
    open_federation,
    read_name_map,
    read_subject_map,
)
from annotation_gateway.compare import CompareRequest, CompareResult, compare
from annotation_gateway.reports import to_rich_table
from annotation_gateway.settings import GatewaySettings

__all__ = ["CompareOutput", "compare_command", "run_compare"]


class CompareOutput(enum.StrEnum):
    TABLE = "table"
    JSON = "json"
    CSV = "csv"
    HTML = "html"


async def run_compare(settings: GatewaySettings, request: CompareRequest) -> CompareResult:
    """Fetch both sides (every page) through an in-process federation and compare them."""
    async with open_federation(settings) as federation:
        left, right = await fetch_sides(federation, request)
    return await asyncio.to_thread(compare, left, right, request)


def _request_or_exit(**fields: object) -> CompareRequest:
    try:
        return CompareRequest.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "request"
        raise exit_bad_input(f"{where}: {first['msg']}") from None


@app.command("compare")
def compare_command(
    config: ConfigOption = DEFAULT_CONFIG,
    left: Annotated[
        str, typer.Option("--left", "-l", help="The left source (its vocabulary is the key).")
    ] = "",
    right: Annotated[str, typer.Option("--right", "-r", help="The right source.")] = "",
    subject_id: Annotated[
        list[str] | None, typer.Option("--subject-id", "-s", help="Subject id, left vocabulary (repeatable).")
    ] = None,
    subject_ids_file: SubjectIdsFileOption = None,
    name: Annotated[
        list[str] | None, typer.Option("--name", "-n", help="Only this annotation name (repeatable).")
    ] = None,
    name_map: Annotated[
        Path | None, typer.Option(help="Left name → right name: TOML, JSON or CSV (left,right).")
    ] = None,
    subject_map: Annotated[
        Path | None, typer.Option(help="Left id → right id: CSV (left_id,right_id).")
    ] = None,
    score_tolerance: Annotated[
        float, typer.Option(min=0.0, help="Scores at most this far apart are equal.")
    ] = 1e-9,
    output_format: Annotated[
        CompareOutput, typer.Option("--format", "-f", help="table, json, csv or html.")
    ] = CompareOutput.TABLE,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,
    all_rows: Annotated[
        bool, typer.Option("--all-rows", help="table: every row, not only differences.")
    ] = False,
    scope: ScopeOption = None,
    include_copies: Annotated[
        bool,
        typer.Option(
            "--include-copies",
            help="Also compare annotations a migration copied from the other side "
            "(left out by default: a copy is not an independent judgement).",
        ),
    ] = False,
) -> None:
    """Compare two sources' annotations per (subject, name), in-process (no server needed)."""
    if not left or not right:
        raise exit_bad_input("give --left and --right (source names from the config)")
    try:
        ids = collect_subject_ids(subject_id, subject_ids_file)
        names_map = read_name_map(name_map) if name_map is not None else None
        subjects_map = read_subject_map(subject_map) if subject_map is not None else None
    except InputError as exc:
        raise exit_bad_input(str(exc)) from None
    if not ids and scope is None:
        raise exit_bad_input("give at least one --subject-id or a --subject-ids-file, or --scope all")
    request = _request_or_exit(
        subject_ids=ids,
        scope=None if scope is None else scope.value,
        left=left,
        right=right,
        names=name or None,
        name_map=names_map,
        subject_map=subjects_map,
        score_tolerance=score_tolerance,
        include_copies=include_copies,
    )
    settings = load_or_exit(config)
    with command_errors(failed_note="no comparison: one side could not be read completely"):
        result = asyncio.run(run_compare(settings, request))
    _write(result, output_format, output, all_rows=all_rows)


def _copies_note(result: CompareResult) -> str:
    """One line saying how many migrated copies were left out, or ``""`` if none were."""
    ig = result.ignored
    if not ig.left_copied_from_right and not ig.right_copied_from_left:
        return ""
    return (
        f"not compared: {ig.left_copied_from_right} annotations of {result.left} copied from "
        f"{result.right} and {ig.right_copied_from_left} of {result.right} copied from "
        f"{result.left} by a migration (--include-copies compares them)"
    )


def _write(result: CompareResult, fmt: CompareOutput, output: Path | None, *, all_rows: bool) -> None:
    if fmt is CompareOutput.TABLE:
        tables = to_rich_table(result, only_differences=not all_rows)
        note = _copies_note(result)
        if output is None:
            console.print(tables)
            if note:
                console.print(Text(note, style="dim"))
        else:
            with output.open("w", encoding="utf-8") as handle:
                file_console = Console(file=handle, width=160, color_system=None)
                file_console.print(tables)
                if note:
                    file_console.print(Text(note))
        return
    data = render(result, CompareFormat(fmt.value))
    if output is None:
        sys.stdout.buffer.write(data if data.endswith(b"\n") else data + b"\n")
        sys.stdout.flush()
    else:
        output.write_bytes(data)
        o = result.overall
        err_console.print(
            f"wrote {output} ({o.n_rows} rows: {o.agree} agree, {o.label_differs} label differs, "
            f"{o.score_differs} score differs, {o.only_left} only left, {o.only_right} only right)",
            highlight=False,
        )
