"""The ``annotation-gateway`` command line (typer).

Contract: :data:`app` is the typer application and :func:`main` the console-script entry point.
Each command lives in its own module and registers itself on :data:`app` when imported; adding a
command is a new module plus one name in :data:`COMMAND_MODULES`. Every command that reads a
config takes ``--config FILE`` (TOML, secrets from the environment) and reports a wrong config as
one readable line naming the key, with exit code 2. No command prints a secret.
"""

from __future__ import annotations

import importlib

from annotation_gateway.cli._app import app

__all__ = ["COMMAND_MODULES", "app", "main"]

COMMAND_MODULES = (
    "serve",
    "check",
    "query",
    "compare",
    "export",
    "aggregates",
    "changes",
    "migrate",
    "keys",
    "simulate",
    "demo",
)
"""Command modules under ``annotation_gateway.cli``, imported (and so registered) in this order."""

for _module in COMMAND_MODULES:
    importlib.import_module(f"{__name__}.{_module}")


def main() -> None:
    """Console-script entry point."""
    app()
