"""Serve an ASGI app with the gateway's server configuration (benchmarks only).

One uvicorn worker, uvloop, httptools, access log off, log level warning: the configuration the
gateway's ``serve`` command uses, so that a bench app (the FastAPI hello, the reference fan-out)
is compared with the gateway on equal terms.

Run: ``python -m bench.serve bench.hello_app:app --host 127.0.0.1 --port 8201``, or
``python -m bench.serve --gateway-config F --port 8202`` to serve ``create_app(load_settings(F))``
the same way (used only when the ``annotation-gateway serve`` command is not available).
"""

from __future__ import annotations

import argparse
from typing import Any

import uvicorn

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve an ASGI app like the gateway does.")
    parser.add_argument("app", nargs="?", help="module:attribute of the ASGI app")
    parser.add_argument("--gateway-config", help="serve the gateway built from this TOML file")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    if args.host not in LOOPBACK:
        parser.error("bench servers listen on loopback only")
    app: Any = args.app
    if args.gateway_config:
        from annotation_gateway.api.app import create_app
        from annotation_gateway.settings import load_settings

        app = create_app(load_settings(args.gateway_config))
    elif not app:
        parser.error("give an app or --gateway-config")
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        workers=1,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
