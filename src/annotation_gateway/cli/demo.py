"""``annotation-gateway demo`` (what ``make run`` runs): see :mod:`annotation_gateway.demo`.

Contract: starts Phoenix, the Datadog simulator and the gateway on 127.0.0.1 (the given ports when
free, else free ones), seeds both vendors, prints curl lines, and stops everything on Ctrl-C or
SIGTERM. Exit code 1 with a readable message when Phoenix is not installed or fails to start.
"""

from __future__ import annotations

import contextlib
from typing import Annotated

import typer

from annotation_gateway.cli._app import EXIT_FAILURE, app, err_console, setup_logging

__all__ = ["demo"]


@app.command()
def demo(
    port: Annotated[int, typer.Option(help="Gateway port (a free one if taken).")] = 8080,
    phoenix_port: Annotated[int, typer.Option(help="Phoenix port (a free one if taken).")] = 6006,
    simulator_port: Annotated[int, typer.Option(help="Datadog simulator port (a free one if taken).")] = 8780,
) -> None:
    """Start Phoenix + the Datadog simulator + the gateway with sample data (Ctrl-C stops)."""
    from annotation_gateway.demo import run_demo
    from annotation_gateway.devservers.phoenix import PhoenixStartError

    setup_logging("WARNING")
    try:
        with contextlib.suppress(KeyboardInterrupt):
            run_demo(gateway_port=port, phoenix_port=phoenix_port, simulator_port=simulator_port)
    except PhoenixStartError as exc:
        err_console.print(f"[bold red]Phoenix did not start:[/] {exc}")
        err_console.print("Install it with [bold]make phoenix[/] (or run [bold]make run[/]).")
        raise typer.Exit(EXIT_FAILURE) from None
