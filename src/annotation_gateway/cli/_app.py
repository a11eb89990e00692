"""The shared typer app, console and helpers the command modules register on and use.

Contract: :data:`app` is the one ``typer.Typer``; :data:`ConfigOption` is the ``--config``
option every command that needs settings declares; the other ``*Option`` aliases are the
options several commands share, declared once so their flags and help stay alike; :func:`load_or_exit` turns a
:class:`~annotation_gateway.settings.ConfigError` into one red line and exit code
:data:`EXIT_CONFIG`; :func:`setup_logging` configures rich logging once.

:data:`console` (stdout) never breaks a value to fit the screen: tables are
:class:`~annotation_gateway.reports.FittedTable` (words whole, columns left out rather than cut)
and nothing is cropped at the terminal's edge (soft wrap). When stdout is not a terminal (a pipe,
a file) and ``COLUMNS`` is not set, it has no width limit - one line per table row, for grep and
friends - instead of rich's default of 80 columns.
"""

from __future__ import annotations

import enum
import logging
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console, ConsoleDimensions
from rich.logging import RichHandler

from annotation_gateway.model import AnnotatorKind, ProviderKind, SubjectKind
from annotation_gateway.settings import DEFAULT_CONFIG_PATH, ConfigError, GatewaySettings, load_settings

__all__ = [
    "EXIT_CONFIG",
    "EXIT_FAILURE",
    "AnnotatorKindOption",
    "ConfigOption",
    "ExcludeNameOption",
    "IdentifierOption",
    "NameOption",
    "PartialMode",
    "ProviderOption",
    "QueueOption",
    "ScopeChoice",
    "ScopeOption",
    "SourceOption",
    "SubjectIdOption",
    "SubjectIdsFileOption",
    "SubjectKindOption",
    "app",
    "console",
    "err_console",
    "load_or_exit",
    "setup_logging",
]

EXIT_FAILURE = 1
"""A check or query failed (a source unreachable, an error answer)."""
EXIT_CONFIG = 2
"""The configuration is wrong (missing file, bad key, unset secret variable)."""

app = typer.Typer(
    name="annotation-gateway",
    help="One federated REST API over Arize Phoenix and Datadog LLM Observability annotations.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals can hold secrets
)
PIPE_WIDTH = 1000
"""The width of :data:`console` when stdout is not a terminal and ``COLUMNS`` is not set."""


class _StdoutConsole(Console):
    """Rich's console, but as wide as the content when writing to a pipe or a file."""

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        if not self.is_terminal and not os.environ.get("COLUMNS", "").isdigit():
            return ConsoleDimensions(PIPE_WIDTH, size.height)
        return size

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]


console: Console = _StdoutConsole(soft_wrap=True)
err_console = Console(stderr=True)

ConfigOption = Annotated[
    Path,
    typer.Option(
        "--config",
        "-c",
        help="Gateway config (TOML). Secrets come from the environment variables it names.",
        envvar="GATEWAY_CONFIG",
    ),
]
DEFAULT_CONFIG = DEFAULT_CONFIG_PATH


class PartialMode(enum.StrEnum):
    """``--partial``: ``deny`` fails the command when any source fails."""

    ALLOW = "allow"
    DENY = "deny"


class ScopeChoice(enum.StrEnum):
    """``--scope``: ``all`` reads each source's whole scope instead of given ids (SPEC §7)."""

    ALL = "all"


SubjectIdOption = Annotated[
    list[str] | None,
    typer.Option(
        "--subject-id",
        "-s",
        help="Subject id (repeatable). A kind prefix as the tables print it (trace:ID, span:ID, "
        "session:ID, ...) also asks for that kind.",
    ),
]
SubjectIdsFileOption = Annotated[
    Path | None,
    typer.Option(help="File of subject ids, one per line ('#' comments; kind prefixes as for -s)."),
]
# The annotation filters of the commands that read through the federation (query, export).
IdentifierOption = Annotated[list[str] | None, typer.Option(help="Phoenix upsert identifier (repeatable).")]
NameOption = Annotated[list[str] | None, typer.Option("--name", "-n", help="Annotation name (repeatable).")]
ExcludeNameOption = Annotated[list[str] | None, typer.Option(help="Leave out this name (repeatable).")]
SourceOption = Annotated[list[str] | None, typer.Option(help="Only this source (repeatable).")]
ProviderOption = Annotated[list[ProviderKind] | None, typer.Option(help="Only this vendor (repeatable).")]
ScopeOption = Annotated[
    ScopeChoice | None,
    typer.Option(
        "--scope",
        help="all: every subject each source can enumerate (Phoenix: the project's sessions and "
        "traces; Datadog: its annotation queues) instead of subject ids.",
    ),
]
QueueOption = Annotated[
    list[str] | None, typer.Option("--queue", help="Only this annotation queue, by id or name (repeatable).")
]
SubjectKindOption = Annotated[list[SubjectKind] | None, typer.Option(help="Only this kind (repeatable).")]
AnnotatorKindOption = Annotated[
    list[AnnotatorKind] | None, typer.Option(help="Only this annotator kind (repeatable).")
]


def exit_config(exc: ConfigError) -> typer.Exit:
    """Print a configuration error; the exit (:data:`EXIT_CONFIG`) to raise."""
    # soft_wrap: a path or key name cut across lines is hard to copy.
    err_console.print(f"[bold red]config error:[/] {exc}", highlight=False, soft_wrap=True)
    return typer.Exit(EXIT_CONFIG)


def load_or_exit(path: Path, **overrides: Any) -> GatewaySettings:
    """The settings at ``path``, or exit with :data:`EXIT_CONFIG` and a readable message."""
    try:
        return load_settings(path, **overrides)
    except ConfigError as exc:
        raise exit_config(exc) from None


def setup_logging(level: str = "INFO") -> None:
    """Rich log lines on stderr (idempotent)."""
    root = logging.getLogger()
    if any(isinstance(h, RichHandler) for h in root.handlers):
        return
    handler = RichHandler(console=err_console, show_path=False, rich_tracebacks=False)
    logging.basicConfig(level=level.upper(), format="%(message)s", handlers=[handler])
