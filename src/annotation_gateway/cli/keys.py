"""``annotation-gateway hash-key``: the SHA-256 of a gateway key, for ``[[auth.keys]]``.

Contract: the key is read from stdin when stdin is not a terminal (``echo -n KEY | ... hash-key``;
one trailing newline is dropped), otherwise prompted for without echo, twice. Only the hex
digest is printed; the key itself never is. An empty key is refused (exit 2).
"""

from __future__ import annotations

import sys

import typer

from annotation_gateway.cli._app import EXIT_CONFIG, app, err_console
from annotation_gateway.settings import hash_key

__all__ = ["hash_key_command"]


@app.command("hash-key")
def hash_key_command() -> None:
    """Print the SHA-256 of a gateway key (read from stdin or a hidden prompt)."""
    if sys.stdin.isatty():
        key = typer.prompt("gateway key", hide_input=True, confirmation_prompt=True)
    else:
        key = sys.stdin.read()
        if key.endswith("\n"):
            key = key[:-1]
            if key.endswith("\r"):
                key = key[:-1]
    if not key.strip():
        err_console.print("[red]the key is empty[/]")
        raise typer.Exit(EXIT_CONFIG)
    # Plain print: the digest is meant to be piped or pasted into the config.
    typer.echo(hash_key(key.strip()))
