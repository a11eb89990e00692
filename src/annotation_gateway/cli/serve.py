"""``annotation-gateway serve``: run the gateway with uvicorn.

Contract: loads the config (``--host``/``--port`` override ``[server]``, and go through the same
validation, so auth switched off on a non-loopback host is refused with exit code 2 before
anything listens); uvicorn's access log stays off unless ``server.access_log`` or ``--access-log``
(it costs 40-50 % CPU per request). Ctrl-C / SIGTERM stop it gracefully (lifespan closes the
upstream connection pools).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
import uvicorn

from annotation_gateway.api.app import create_app
from annotation_gateway.cli._app import (
    DEFAULT_CONFIG,
    ConfigOption,
    app,
    console,
    load_or_exit,
    setup_logging,
)

__all__ = ["serve"]


@app.command()
def serve(
    config: ConfigOption = DEFAULT_CONFIG,
    host: Annotated[str | None, typer.Option(help="Listen address (overrides server.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (overrides server.port).")] = None,
    access_log: Annotated[
        bool | None, typer.Option("--access-log/--no-access-log", help="uvicorn access log (costly).")
    ] = None,
    log_level: Annotated[str, typer.Option(help="Log level.")] = "info",
) -> None:
    """Serve the REST API."""
    server: dict[str, Any] = {}
    if host is not None:
        server["host"] = host
    if port is not None:
        server["port"] = port
    if access_log is not None:
        server["access_log"] = access_log
    settings = load_or_exit(config, **({"server": server} if server else {}))
    setup_logging(log_level)
    listen = settings.server
    console.print(
        f"annotation-gateway on http://{listen.host}:{listen.port} "
        f"(sources: {', '.join(s.name for s in settings.sources if s.enabled) or 'none'}; "
        f"auth {'on' if settings.auth.enabled else 'OFF (loopback only)'})"
    )
    uvicorn.run(
        create_app(settings),
        host=listen.host,
        port=listen.port,
        access_log=listen.access_log,
        log_level=log_level.lower(),
        log_config=None,  # keep our rich handler rather than uvicorn's own logging config
        server_header=False,
    )
