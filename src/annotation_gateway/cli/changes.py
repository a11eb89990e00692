"""``annotation-gateway changes``: the change feed (SPEC §10) on the command line, in-process.

Contract: the query of ``export`` (ids, an id file or ``--scope all``, and every filter) plus
``--since`` (a previous ``next_since``) and ``--limit``. Each change is printed as one JSON line
(the SPEC §2 annotation) on stdout, oldest first; after each answer ``next_since: <token>``
goes to stderr, to resume from. ``--follow`` keeps polling: it prints changes as they arrive and
waits ``--interval`` seconds whenever it is caught up, until Ctrl-C (a normal stop, exit 0) or
``--max-polls``. A token outlives the process only when ``server.cursor_secret_env`` (by default
``GATEWAY_CURSOR_SECRET``) is set, as for a server; otherwise it is valid in this run only.
Exit codes: 0; 1 a source failed (``--partial deny``) or every source failed; 2 bad input (a
token of other filters included).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated

import typer

from annotation_gateway.cli._app import (
    DEFAULT_CONFIG,
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
    err_console,
    load_or_exit,
)
from annotation_gateway.cli._inputs import command_errors, open_federation, query_from_options
from annotation_gateway.federation import FederatedQuery
from annotation_gateway.federation.limits import DEFAULT_CHANGES_LIMIT, MAX_CHANGES_LIMIT
from annotation_gateway.records import json_lines
from annotation_gateway.settings import GatewaySettings

__all__ = ["changes_command", "run_changes"]


async def run_changes(
    settings: GatewaySettings,
    query: FederatedQuery,
    *,
    since: str | None,
    limit: int,
    follow: bool,
    interval_s: float,
    max_polls: int | None,
) -> str | None:
    """Print changes as JSON lines until caught up (or, following, until stopped); returns the
    last ``next_since``."""
    polls = 0
    async with open_federation(settings) as federation:
        while max_polls is None or polls < max_polls:
            polls += 1
            page = await federation.changes(query, since=since, limit=limit)
            if page.records:
                sys.stdout.buffer.write(json_lines(page.records))
                sys.stdout.flush()
            since = page.next_since
            failed = [s.source for s in page.sources if s.status == "error"]
            note = f" (failed: {', '.join(failed)})" if failed else ""
            err_console.print(f"next_since: {since}{note}", highlight=False, soft_wrap=True)
            if not page.records:
                if not follow:
                    return since
                await asyncio.sleep(interval_s)
    return since


@app.command("changes")
def changes_command(
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
    since: Annotated[str | None, typer.Option(help="next_since of an earlier answer.")] = None,
    limit: Annotated[
        int, typer.Option(min=1, max=MAX_CHANGES_LIMIT, help="Changes per answer.")
    ] = DEFAULT_CHANGES_LIMIT,
    follow: Annotated[
        bool, typer.Option("--follow", help="Keep polling; print changes as they come.")
    ] = False,
    interval: Annotated[
        float, typer.Option(min=0.0, help="--follow: seconds between polls when caught up.")
    ] = 5.0,
    max_polls: Annotated[int | None, typer.Option(min=1, help="Stop after this many answers.")] = None,
    partial: Annotated[PartialMode, typer.Option(help="deny: fail if any source fails.")] = PartialMode.ALLOW,
) -> None:
    """Annotations created or updated since a watermark, oldest first, as JSON lines (SPEC §10)."""
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
    settings = load_or_exit(config)
    try:
        with command_errors():
            asyncio.run(
                run_changes(
                    settings,
                    query,
                    since=since,
                    limit=limit,
                    follow=follow,
                    interval_s=interval,
                    max_polls=max_polls,
                )
            )
    except KeyboardInterrupt:
        err_console.print("stopped: resume with --since and the last next_since.", highlight=False)
