"""``annotation-gateway simulate-datadog``: run the local Datadog LLM Observability simulator.

Contract: a thin wrapper over :func:`annotation_gateway.simulators.datadog.serve` (blocking until
Ctrl-C); loopback addresses only; keys not given come from ``DD_API_KEY``/``DD_APP_KEY`` (none:
any non-empty key is accepted). The switches are the simulator's start-up switches; all can also
be flipped live through its control API (``POST /_simulator/config``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from annotation_gateway.cli._app import EXIT_CONFIG, app, err_console
from annotation_gateway.settings import is_loopback

__all__ = ["simulate_datadog"]


@app.command("simulate-datadog")
def simulate_datadog(
    host: Annotated[str, typer.Option(help="Listen address (loopback only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Listen port.")] = 8780,
    seed: Annotated[Path | None, typer.Option(help="Seed document (JSON) to load at start.")] = None,
    label_values: Annotated[str, typer.Option(help="array (today's shape) or object (legacy).")] = "array",
    zero_time: Annotated[bool, typer.Option(help="Send annotation times as 0001-01-01T00:00:00Z.")] = False,
    latency_ms: Annotated[
        float, typer.Option(min=0, help="Each API answer leaves this many ms after its request arrived.")
    ] = 0.0,
    fail_rate: Annotated[
        float, typer.Option(min=0, max=1, help="Share of API requests answering 500.")
    ] = 0.0,
    rate_limit: Annotated[str | None, typer.Option(help="Fixed window, e.g. 10/60s; 429 beyond it.")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve the Datadog LLM Observability simulator (for local development and the demo)."""
    from annotation_gateway.simulators.datadog import make_config, serve

    if not is_loopback(host):
        err_console.print(f"[red]the simulator listens on loopback only, not {host}[/]")
        raise typer.Exit(EXIT_CONFIG)
    if label_values not in ("array", "object"):
        err_console.print("[red]--label-values is array or object[/]")
        raise typer.Exit(EXIT_CONFIG)
    shape: Literal["array", "object"] = "array" if label_values == "array" else "object"
    try:
        config = make_config(
            seed=seed,
            label_values=shape,
            zero_time=zero_time,
            latency_ms=latency_ms,
            fail_rate=fail_rate,
            rate_limit=rate_limit,
        )
        serve(host=host, port=port, config=config, log_level=log_level)
    except ValueError as exc:
        err_console.print(f"[red]{exc}[/]")
        raise typer.Exit(EXIT_CONFIG) from None
