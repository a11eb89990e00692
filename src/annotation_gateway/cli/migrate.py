"""``annotation-gateway migrate``: copy annotations from one configured source to another.

Contract: ``--from S --to T`` name sources of the config; the subjects come from
``--subject-id`` (repeatable) and/or ``--subject-ids-file``. Providers are built from the
config (:func:`~annotation_gateway.providers.build_provider`, secrets from the environment) and
:func:`~annotation_gateway.migrate.migrate` does the work (batches, bounded concurrency,
read-before-write, so a re-run writes nothing new); ``--name-map`` renames (TOML/JSON/CSV),
``--checkpoint FILE`` makes an interrupted run resumable, ``--datadog-project`` is the Datadog
LLM Observability project a new migration queue is created in (Phoenix → Datadog only),
``--dry-run`` reads and classifies without writing.

Output: a progress bar on stderr when stderr is a terminal (nothing otherwise); then the final
report — written / updated / unchanged / failed (each failure with why), skipped copies
(annotations an earlier migration copied *from* the target: never copied back, see
:mod:`annotation_gateway.migrate`) and the subjects the target does not know — as rich
tables, or with ``--format json`` one JSON document ``{"report": {...}, "verify": {...} |
null}`` on stdout (the report's ``skipped_copies`` counts the copies). After a real run
:func:`~annotation_gateway.migrate.verify` compares what was copied and its summary is printed
("0 differences" when every copy landed intact); ``--no-verify`` skips it.

Ctrl-C (SIGINT) cancels cleanly: the batches in flight are cancelled, the providers closed, the
checkpoint keeps every batch that completed, and the message says how to resume (run the same
command again). Exit codes: 0 done with no failure and no difference; 1 failed annotations,
verify differences, or a vendor failure that stopped the run (resume from the checkpoint); 2 bad
config or arguments (unknown source, unreadable file, checkpoint of another migration, a queue
to create without ``--datadog-project``); 130 interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from annotation_gateway.cli._app import (
    DEFAULT_CONFIG,
    EXIT_FAILURE,
    ConfigOption,
    ScopeOption,
    SubjectIdsFileOption,
    app,
    console,
    err_console,
    exit_config,
    load_or_exit,
)
from annotation_gateway.cli._inputs import (
    InputError,
    build_query,
    collect_subject_ids,
    exit_bad_input,
    exit_failed,
    exit_refused,
    read_name_map,
)
from annotation_gateway.compare import CompareResult, RowStatus
from annotation_gateway.errors import ClientError, GatewayError
from annotation_gateway.federation import FederatedQuery
from annotation_gateway.migrate import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CONCURRENCY,
    SCOPE_CHECKPOINT_KEY,
    CheckpointMismatchError,
    MigrationProgress,
    MigrationReport,
    migrate,
    scope_subject_ids,
    verify,
)
from annotation_gateway.migrate.follow import FollowRound, FollowState, follow
from annotation_gateway.providers import AnnotationProvider, build_provider
from annotation_gateway.providers.config import ConfigError
from annotation_gateway.reports import rows_table, summary_table

__all__ = ["EXIT_INTERRUPTED", "migrate_command", "run_migration"]

EXIT_INTERRUPTED = 130
"""Ctrl-C: the conventional 128 + SIGINT."""
MAX_FAILURES_SHOWN = 25
"""Failures listed in the table output (``--format json`` has every one)."""


class MigrateOutput(enum.StrEnum):
    TABLE = "table"
    JSON = "json"


async def run_migration(
    source: AnnotationProvider,
    target: AnnotationProvider,
    subject_ids: list[str] | None,
    *,
    name_map: dict[str, str] | None,
    dry_run: bool,
    checkpoint: Path | None,
    queue_project_id: str | None,
    batch_size: int,
    concurrency: int,
    check: bool,
    progress: Callable[[MigrationProgress], None] | None = None,
) -> tuple[MigrationReport, CompareResult | None]:
    """Migrate, then (unless ``dry_run`` or not ``check``) verify; the providers are closed.
    ``subject_ids=None`` migrates the source's whole scope (``--scope all``)."""
    try:
        whole_scope = subject_ids is None
        if subject_ids is None:
            subject_ids = await scope_subject_ids(source)
        report = await migrate(
            source,
            target,
            subject_ids,
            subjects_key=SCOPE_CHECKPOINT_KEY if whole_scope else None,
            name_map=name_map,
            dry_run=dry_run,
            checkpoint=checkpoint,
            batch_size=batch_size,
            concurrency=concurrency,
            progress=progress,
            queue_project_id=queue_project_id,
        )
        checked = None
        if check and not dry_run:
            checked = await verify(
                source, target, subject_ids, name_map, exclude_subjects=report.missing_subjects
            )
        return report, checked
    finally:
        await asyncio.gather(source.aclose(), target.aclose(), return_exceptions=True)


def _round_line(current: FollowRound) -> None:
    if current.error is not None:
        err_console.print(
            f"round {current.number}: [bold red]{current.error}[/] — the changes stay pending; retrying",
            highlight=False,
        )
        return
    line = f"round {current.number}: {current.changes} change(s) on {current.subjects} subject(s)"
    report = current.report
    if report is not None:
        line += (
            f": written {report.written}, updated {report.updated}, unchanged {report.unchanged}, "
            f"failed {report.failed}"
        )
        if report.failed:
            line += " — not advanced; retried next round"
    err_console.print(line, highlight=False)


def _run_follow(
    source: AnnotationProvider,
    target: AnnotationProvider,
    query: FederatedQuery,
    *,
    state_path: Path | None,
    name_map: dict[str, str] | None,
    interval_s: float,
    rounds: int | None,
    queue_project_id: str | None,
) -> None:
    """``--follow``: rounds until ``rounds`` or Ctrl-C (a normal stop: exit 0, state kept)."""

    async def run() -> FollowState:
        try:
            return await follow(
                source,
                target,
                query,
                state_path=state_path,
                name_map=name_map,
                interval_s=interval_s,
                rounds=rounds,
                queue_project_id=queue_project_id,
                on_round=_round_line,
            )
        finally:
            await asyncio.gather(source.aclose(), target.aclose(), return_exceptions=True)

    try:
        state = asyncio.run(run())
    except KeyboardInterrupt:
        where = f"; {state_path} keeps where it is" if state_path is not None else ""
        err_console.print(f"stopped{where}: run the same command to continue.", highlight=False)
        return
    except CheckpointMismatchError as exc:
        raise exit_bad_input(str(exc)) from None
    except ClientError as exc:
        raise exit_refused(exc) from None
    err_console.print(
        f"followed {state.rounds} round(s) in all; {state.changed} annotation(s) written or updated",
        highlight=False,
    )


def _differences(result: CompareResult) -> int:
    return sum(1 for row in result.rows if row.status is not RowStatus.AGREE)


def _report_table(report: MigrationReport) -> Table:
    verb = " (dry run: nothing written)" if report.dry_run else ""
    title = f"migrate {report.source} → {report.target}{verb}"
    table = Table(title=title, title_justify="left", show_header=False, min_width=len(title))
    table.add_column("what")
    table.add_column("count", justify="right")
    resumed = f" ({report.subjects_resumed} done by an earlier run)" if report.subjects_resumed else ""
    rows: list[tuple[str, str, str]] = [
        ("method", report.method, ""),
        ("subjects", f"{report.subjects_total}{resumed}", ""),
        ("annotations read", str(report.annotations_read), ""),
        ("would write" if report.dry_run else "written", str(report.written), "green"),
        ("would update" if report.dry_run else "updated", str(report.updated), "green"),
        ("unchanged", str(report.unchanged), "dim"),
        ("failed", str(report.failed), "bold red" if report.failed else ""),
        (f"skipped: copies of {report.target}", str(report.skipped_copies), "dim"),
        (
            "subjects missing in target",
            str(len(report.missing_subjects)),
            "yellow" if report.missing_subjects else "",
        ),
        ("elapsed", f"{report.elapsed_s:.1f} s", "dim"),
    ]
    if report.queues:
        shown = ", ".join(report.queues[:3]) + (
            f" … ({len(report.queues)} queues)" if len(report.queues) > 3 else ""
        )
        rows.insert(1, ("queues", shown, ""))
    for label, value, style in rows:
        table.add_row(Text(label), Text(value, style=style))
    return table


def _failures_table(report: MigrationReport) -> Table:
    shown = report.failures[:MAX_FAILURES_SHOWN]
    table = Table(
        title=f"failed ({len(shown)} of {len(report.failures)}; --format json lists all)",
        title_justify="left",
    )
    for column in ("subject", "name", "source id", "why"):
        table.add_column(column, overflow="fold")
    for failure in shown:
        table.add_row(
            Text(failure.subject_id),
            Text(failure.name or ""),
            Text(failure.source_id or ""),
            Text(failure.reason),
        )
    return table


def _print_table(report: MigrationReport, checked: CompareResult | None) -> None:
    console.print(_report_table(report))
    if report.failures:
        console.print(_failures_table(report))
    if report.missing_subjects:
        console.print(
            Text(f"subjects {report.target} does not know (not written): ", style="yellow").append(
                ", ".join(report.missing_subjects), style=""
            )
        )
    if checked is None:
        return
    differences = _differences(checked)
    if differences:
        console.print(summary_table(checked))
        console.print(rows_table(checked, only_differences=True, max_rows=MAX_FAILURES_SHOWN))
    style = "bold green" if differences == 0 else "bold red"
    console.print(
        Text("verify: ", style="bold")
        .append(f"{differences} differences", style=style)
        .append(
            f" ({checked.overall.n_rows} (subject, name) rows of {checked.left} "
            f"compared with {checked.right})"
        )
    )


def _json_document(report: MigrationReport, checked: CompareResult | None) -> dict[str, Any]:
    verified: dict[str, Any] | None = None
    if checked is not None:
        verified = {
            "differences": _differences(checked),
            "overall": checked.overall.model_dump(mode="json"),
            "rows": [
                {
                    "subject_id": row.subject_id,
                    "name": row.name,
                    "right_name": row.right_name,
                    "status": row.status.value,
                    "left_label": row.left.label if row.left else None,
                    "right_label": row.right.label if row.right else None,
                    "left_score": row.left.score if row.left else None,
                    "right_score": row.right.score if row.right else None,
                }
                for row in checked.rows
                if row.status is not RowStatus.AGREE
            ],
        }
    return {"report": report.model_dump(mode="json"), "verify": verified}


def _checkpoint_state(path: Path | None) -> str:
    if path is None or not path.exists():
        return ""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return (
            f" ({len(data.get('completed_subjects', []))} of {data.get('subjects_total', '?')} subjects done)"
        )
    except (OSError, ValueError):
        return ""


@app.command("migrate")
def migrate_command(
    config: ConfigOption = DEFAULT_CONFIG,
    from_source: Annotated[str, typer.Option("--from", help="The source to copy from.")] = "",
    to_source: Annotated[str, typer.Option("--to", help="The source to copy into.")] = "",
    subject_id: Annotated[
        list[str] | None, typer.Option("--subject-id", "-s", help="Subject id (repeatable).")
    ] = None,
    subject_ids_file: SubjectIdsFileOption = None,
    scope: ScopeOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Read and classify; write nothing.")] = False,
    name_map: Annotated[
        Path | None, typer.Option(help="Source name → target name: TOML, JSON or CSV (left,right).")
    ] = None,
    checkpoint: Annotated[
        Path | None, typer.Option(help="Checkpoint file: an interrupted run resumes from it.")
    ] = None,
    datadog_project: Annotated[
        str | None,
        typer.Option(help="Datadog LLM Observability project id to create migration queues in."),
    ] = None,
    batch_size: Annotated[
        int, typer.Option(min=1, max=1000, help="Subjects per batch.")
    ] = DEFAULT_BATCH_SIZE,
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="Batches in flight.")] = DEFAULT_CONCURRENCY,
    check: Annotated[
        bool, typer.Option("--verify/--no-verify", help="Compare what was copied after the run.")
    ] = True,
    output_format: Annotated[
        MigrateOutput, typer.Option("--format", "-f", help="table or json.")
    ] = MigrateOutput.TABLE,
    follow_changes: Annotated[
        bool,
        typer.Option(
            "--follow",
            help="Keep going: copy what changed since the checkpoint, wait, repeat (Ctrl-C stops).",
        ),
    ] = False,
    interval: Annotated[
        float, typer.Option(min=0.0, help="--follow: seconds to wait when nothing changed.")
    ] = 10.0,
    max_rounds: Annotated[
        int | None, typer.Option(min=1, help="--follow: stop after this many rounds.")
    ] = None,
) -> None:
    """Copy annotations from one source to another: resumable, idempotent, verified."""
    if not from_source or not to_source:
        raise exit_bad_input("give --from and --to (source names from the config)")
    if from_source == to_source:
        raise exit_bad_input("--from and --to must be different sources")
    try:
        ids = collect_subject_ids(subject_id, subject_ids_file)
        names = read_name_map(name_map) if name_map is not None else None
    except InputError as exc:
        raise exit_bad_input(str(exc)) from None
    if not ids and scope is None:
        raise exit_bad_input("give at least one --subject-id or a --subject-ids-file, or --scope all")
    if ids and scope is not None:
        raise exit_bad_input("give subject ids or --scope all, not both")
    if follow_changes and dry_run:
        raise exit_bad_input("--follow copies as changes arrive; it has no --dry-run")
    settings = load_or_exit(config)
    configs = {c.name: c for c in settings.sources if c.enabled}
    for option, name in (("--from", from_source), ("--to", to_source)):
        if name not in configs:
            raise exit_bad_input(
                f"{option}: unknown source {name!r}; configured: {', '.join(configs) or 'none'}"
            )
    try:
        source = build_provider(configs[from_source])
        try:
            target = build_provider(configs[to_source])
        except BaseException:
            asyncio.run(source.aclose())
            raise
    except ConfigError as exc:
        raise exit_config(exc) from None

    if follow_changes:
        _run_follow(
            source,
            target,
            build_query(subject_ids=tuple(ids), scope=None if scope is None else scope.value),
            state_path=checkpoint,
            name_map=names,
            interval_s=interval,
            rounds=max_rounds,
            queue_project_id=datadog_project,
        )
        return

    progress: Progress | None = None
    on_progress: Callable[[MigrationProgress], None] | None = None
    if err_console.is_terminal:
        progress = Progress(
            TextColumn("[bold]migrate[/] subjects"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=err_console,
        )
        task = progress.add_task("", total=len(ids) or None)

        def on_progress(p: MigrationProgress) -> None:
            verb = "would write" if p.dry_run else "written"
            assert progress is not None
            progress.update(
                task,
                total=p.subjects_total,
                completed=p.subjects_done,
                description=f"{verb} {p.written} · updated {p.updated} · unchanged {p.unchanged} "
                f"· failed {p.failed}",
            )

    try:
        with progress or contextlib.nullcontext():
            report, checked = asyncio.run(
                run_migration(
                    source,
                    target,
                    ids if scope is None else None,
                    name_map=names,
                    dry_run=dry_run,
                    checkpoint=checkpoint,
                    queue_project_id=datadog_project,
                    batch_size=batch_size,
                    concurrency=concurrency,
                    check=check,
                    progress=on_progress,
                )
            )
    except KeyboardInterrupt:
        if checkpoint is not None:
            err_console.print(
                f"[bold yellow]interrupted.[/] Checkpoint kept in {checkpoint}"
                f"{_checkpoint_state(checkpoint)}; run the same command again to resume where it stopped.",
                highlight=False,
            )
        else:
            err_console.print(
                "[bold yellow]interrupted.[/] No --checkpoint was given: running the same command again "
                "starts over, and re-reads what was already copied (writes are upserts: nothing is "
                "duplicated). Add --checkpoint FILE to resume instead.",
                highlight=False,
            )
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except CheckpointMismatchError as exc:
        raise exit_bad_input(str(exc)) from None
    except ClientError as exc:
        hint = ""
        if "queue_project_id" in exc.detail:
            hint = " (give --datadog-project PROJECT_ID)"
        raise exit_refused(exc, hint) from None
    except GatewayError as exc:
        note = None
        if checkpoint is not None:
            note = (
                f"the run stopped; {checkpoint} keeps what completed{_checkpoint_state(checkpoint)}: "
                "run the same command again to resume."
            )
        raise exit_failed(exc, note) from None

    if output_format is MigrateOutput.JSON:
        sys.stdout.write(json.dumps(_json_document(report, checked), indent=2) + "\n")
        sys.stdout.flush()
    else:
        _print_table(report, checked)
    if report.failed or (checked is not None and _differences(checked)):
        raise typer.Exit(EXIT_FAILURE)
