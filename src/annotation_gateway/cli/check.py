"""``annotation-gateway check``: validate the config and reach every source.

Contract: exit 0 when the config is valid and every enabled source answers its health probe;
exit :data:`~annotation_gateway.cli._app.EXIT_CONFIG` (2) for an invalid config, exit
:data:`~annotation_gateway.cli._app.EXIT_FAILURE` (1) when a source cannot be built (e.g. its
secret variable is unset) or does not answer. The report is a rich table: source, provider,
where it points (base URL or site — never a key), outcome, latency, vendor version, detail.
Probes run concurrently, each bounded by the source's own timeout.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import typer
from rich.table import Table

from annotation_gateway.cli._app import DEFAULT_CONFIG, EXIT_FAILURE, ConfigOption, app, console, load_or_exit
from annotation_gateway.providers import build_provider
from annotation_gateway.providers.config import ConfigError
from annotation_gateway.providers.datadog import DatadogSourceConfig
from annotation_gateway.providers.phoenix import PhoenixSourceConfig
from annotation_gateway.settings import GatewaySettings

__all__ = ["SourceCheck", "check", "check_sources"]


@dataclass(slots=True)
class SourceCheck:
    name: str
    provider: str
    target: str
    ok: bool
    latency_ms: float | None = None
    version: str | None = None
    detail: str | None = None


def _target(config: PhoenixSourceConfig | DatadogSourceConfig) -> str:
    if isinstance(config, PhoenixSourceConfig):
        return f"{str(config.base_url).rstrip('/')} project={config.project}"
    return config.api_base_url


async def _check_one(config: PhoenixSourceConfig | DatadogSourceConfig) -> SourceCheck:
    result = SourceCheck(name=config.name, provider=config.provider, target=_target(config), ok=False)
    if not config.enabled:
        result.ok = True
        result.detail = "disabled"
        return result
    try:
        provider = build_provider(config)
    except ConfigError as exc:
        result.detail = str(exc)
        return result
    try:
        # health() never raises by contract; the timeout is a belt for a hung connect.
        report = await asyncio.wait_for(provider.health(), timeout=config.timeout_s * 2 + 1)
        result.ok = report.ok
        result.latency_ms = report.latency_ms
        result.version = report.version
        result.detail = report.detail
    except TimeoutError:
        result.detail = f"no answer within {config.timeout_s * 2 + 1:.0f}s"
    finally:
        await provider.aclose()
    return result


async def check_sources(settings: GatewaySettings) -> list[SourceCheck]:
    """Probe every configured source concurrently."""
    return list(await asyncio.gather(*(_check_one(c) for c in settings.sources)))


@app.command()
def check(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Validate the config and reach every source (exit 1 if one fails)."""
    settings = load_or_exit(config)
    console.print(f"[green]✓[/] config {config} is valid")
    auth = settings.auth
    if auth.enabled:
        limited = [k.name for k in auth.keys if k.sources is not None]
        console.print(
            f"[green]✓[/] auth on: {len(auth.keys)} key(s)"
            + (f", limited to some sources: {', '.join(limited)}" if limited else "")
        )
    else:
        console.print(f"[yellow]![/] auth off (allowed because {settings.server.host} is loopback)")
    if not settings.sources:
        console.print("[red]✗[/] no sources configured")
        raise typer.Exit(EXIT_FAILURE)
    results = asyncio.run(check_sources(settings))
    table = Table(title="sources", show_lines=False)
    for column in ("source", "provider", "target", "status", "latency", "version", "detail"):
        table.add_column(column, overflow="fold")
    for r in results:
        status = "[green]ok[/]" if r.ok else "[red]FAILED[/]"
        if r.detail == "disabled":
            status = "[dim]disabled[/]"
        table.add_row(
            r.name,
            r.provider,
            r.target,
            status,
            f"{r.latency_ms:.0f} ms" if r.latency_ms is not None else "",
            r.version or "",
            "" if r.detail == "disabled" else (r.detail or ""),
        )
    console.print(table)
    failed = [r.name for r in results if not r.ok]
    if failed:
        console.print(f"[red]✗[/] unreachable or misconfigured: {', '.join(failed)}")
        raise typer.Exit(EXIT_FAILURE)
    console.print("[green]✓[/] every source answered")
