"""Inputs shared by ``compare``, ``export`` and ``migrate``: id lists, maps, the federation.

Contract:
- :func:`read_subject_ids`: one id per line (surrounding whitespace stripped; blank lines and
  lines starting with ``#`` ignored), or a one-column CSV with the header ``subject_id``;
  duplicates kept in first-seen order;
- :func:`collect_subjects`: the ids of ``--subject-id`` and ``--subject-ids-file``, where an id
  may carry its kind as a prefix, the way ``query`` prints it: ``trace:ID``, ``span:ID``,
  ``session:ID``, ``experiment_trace:ID``, ``display_block:ID`` (the
  :class:`~annotation_gateway.model.SubjectKind` values, lower case). The prefix is removed from
  the id and its kind joins the kind filter. The filter is ``--subject-kind`` plus the prefixes'
  kinds when that covers every id (every id has a prefix, or ``--subject-kind`` was given);
  otherwise it stays empty (every kind), so an id without a prefix is still found whatever its
  kind. ``-s trace:T -s session:S`` therefore asks for kinds {trace, session} and ids {T, S}.
  Any other text with a colon (``a:b``, ``urn:x:y``) is an id as it is. :func:`collect_subject_ids`
  (compare, migrate: they cover every kind) keeps only the ids, without their prefixes;
- :func:`read_name_map` (left/source name → right/target name) from TOML (top-level
  ``key = "value"`` pairs, or a ``[name_map]`` table), JSON (an object of strings) or CSV
  (``left,right`` records, an optional header row ``left,right``), chosen by the file's suffix;
- :func:`read_subject_map`: CSV ``left_id,right_id`` records (optional header of those names);
- every problem is an :class:`InputError` naming the file and the line or key, which the commands
  report with exit code 2 (bad arguments);
- :func:`query_from_options`: the one query from a reading command's options (ids, kind
  prefixes, ``--scope``, the filters by the query's own names);
- :func:`command_errors`: the one table from what a command's run raises to how it exits — a
  config error or a refused input (the API's 4xx) exits 2, any other gateway error (a source
  failing under ``--partial deny``, every source failing) prints its problem and exits 1;
- :func:`open_federation`: the configured, enabled sources' providers and a
  :class:`~annotation_gateway.federation.Federation` over them, as the server builds them (the
  CLI needs no server), closed on exit.
"""

from __future__ import annotations

import csv
import enum
import json
import os
import secrets
import tomllib
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import typer

from annotation_gateway.cli._app import EXIT_CONFIG, EXIT_FAILURE, err_console, exit_config
from annotation_gateway.errors import ClientError, GatewayError
from annotation_gateway.federation import FederatedQuery, Federation
from annotation_gateway.federation.query import LIST_FIELDS
from annotation_gateway.model import SubjectKind
from annotation_gateway.providers import AnnotationProvider, build_provider
from annotation_gateway.providers.config import ConfigError
from annotation_gateway.settings import GatewaySettings

__all__ = [
    "InputError",
    "build_query",
    "collect_subject_ids",
    "collect_subjects",
    "command_errors",
    "exit_bad_input",
    "exit_failed",
    "exit_refused",
    "open_federation",
    "query_from_options",
    "read_name_map",
    "read_subject_ids",
    "read_subject_map",
    "split_kind_prefix",
]


class InputError(ValueError):
    """A file given on the command line cannot be used; the message names file and place."""


def exit_bad_input(message: str) -> typer.Exit:
    """Print ``message`` as a bad-arguments error; return the ``Exit`` (code 2) to raise."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(EXIT_CONFIG)


def exit_refused(exc: ClientError, hint: str = "") -> typer.Exit:
    """Print what the gateway refused (its problem code and the API's words, then ``hint``) as a
    bad-arguments error; return the ``Exit`` (code 2) to raise."""
    return exit_bad_input(f"{exc.code.value}: {exc.detail}{hint}")


def exit_failed(exc: GatewayError, note: str | None = None) -> typer.Exit:
    """Print a failed run's problem (code, status, detail; then ``note``); return the ``Exit``
    (code 1) to raise."""
    err_console.print(f"[bold red]{exc.code.value}[/] ({exc.status}): {exc.detail}", highlight=False)
    if note:
        err_console.print(f"[dim]{note}[/]", highlight=False)
    return typer.Exit(EXIT_FAILURE)


@contextmanager
def command_errors(*, failed_note: str | None = None) -> Iterator[None]:
    """How a command exits when its run raises, one table for every reading command: a
    :class:`ConfigError` (a source that cannot be built) exits 2 as a config error; a
    :class:`ClientError` — the input the API would answer 4xx (an unknown source, too many ids,
    a bad filter) — exits 2 with the API's code and words; any other :class:`GatewayError` (a
    source failing under ``--partial deny``, every source failing) prints its problem and
    ``failed_note`` and exits 1."""
    try:
        yield
    except ConfigError as exc:
        raise exit_config(exc) from None
    except ClientError as exc:
        raise exit_refused(exc) from None
    except GatewayError as exc:
        raise exit_failed(exc, failed_note) from None


def build_query(**fields: Any) -> FederatedQuery:
    """The one query type, built from the command's options: what it refuses (no subject id or
    identifier, a limit, a window that ends before it starts) exits 2 with the query's own
    message, the same rule and words as the API's 422."""
    with command_errors():
        return FederatedQuery(**fields)


def query_from_options(
    *,
    subject_id: Sequence[str] | None = None,
    subject_ids_file: Path | None = None,
    subject_kind: Sequence[SubjectKind] | None = None,
    scope: enum.Enum | None = None,
    partial: enum.Enum | None = None,
    **filters: Any,
) -> FederatedQuery:
    """The one query from a command's options, as every reading command takes them: the ids of
    ``-s`` and ``--subject-ids-file`` with their kind prefixes (:func:`collect_subjects`),
    ``--scope``, and the query's own fields by name (a list option not given is no filter).
    Bad input exits 2, with the query's own message."""
    try:
        ids, kinds = collect_subjects(subject_id, subject_ids_file, subject_kind)
    except InputError as exc:
        raise exit_bad_input(str(exc)) from None
    # A list option not given (None) is no filter: an empty tuple.
    fields = {name: tuple(value or ()) if name in LIST_FIELDS else value for name, value in filters.items()}
    if partial is not None:
        fields["partial"] = partial.value
    return build_query(
        subject_ids=tuple(ids),
        subject_kinds=kinds,
        scope=None if scope is None else scope.value,
        **fields,
    )


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise InputError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None


def read_subject_ids(path: Path) -> list[str]:
    """Subject ids from ``path`` (see the module docstring)."""
    ids: list[str] = []
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        value = line.strip()
        if not value or value.startswith("#"):
            continue
        if number == 1 and value == "subject_id":
            continue
        if "," in value:
            raise InputError(f"{path}:{number}: one subject id per line (found a comma)")
        ids.append(value)
    if not ids:
        raise InputError(f"{path}: no subject ids in it")
    return list(dict.fromkeys(ids))


def _pairs_csv(path: Path, header: tuple[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    reader = csv.reader(_read_text(path).splitlines())
    for number, record in enumerate(reader, start=1):
        cells = [cell.strip() for cell in record]
        if not cells or all(not cell for cell in cells) or cells[0].startswith("#"):
            continue
        if number == 1 and tuple(cells) == header:
            continue
        if len(cells) != 2 or not cells[0] or not cells[1]:
            raise InputError(f"{path}:{number}: expected two non-empty cells {header[0]},{header[1]}")
        if cells[0] in out and out[cells[0]] != cells[1]:
            raise InputError(f"{path}:{number}: {cells[0]!r} is mapped twice")
        out[cells[0]] = cells[1]
    return out


def _string_map(value: object, path: Path) -> dict[str, str]:
    if not isinstance(value, dict):
        raise InputError(f"{path}: expected a table/object of name = name pairs")
    out: dict[str, str] = {}
    for key, target in value.items():
        if not isinstance(target, str) or not target or not key:
            raise InputError(f"{path}: {key!r} must map to a non-empty string")
        out[str(key)] = target
    return out


def read_name_map(path: Path) -> dict[str, str]:
    """A name map (left → right) from a TOML, JSON or CSV file."""
    suffix = path.suffix.lower()
    text = _read_text(path)
    if suffix == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise InputError(f"{path}: not valid TOML ({exc})") from None
        table = data.get("name_map", data) if isinstance(data.get("name_map"), dict) else data
        return _string_map(table, path)
    if suffix == ".json":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise InputError(f"{path}: not valid JSON ({exc})") from None
        return _string_map(data, path)
    if suffix == ".csv":
        return _pairs_csv(path, ("left", "right"))
    raise InputError(f"{path}: a name map is a .toml, .json or .csv file")


def read_subject_map(path: Path) -> dict[str, str]:
    """A subject map (left id → right id) from a CSV file."""
    return _pairs_csv(path, ("left_id", "right_id"))


_KIND_PREFIXES = {f"{kind.value}:": kind for kind in SubjectKind}


def split_kind_prefix(value: str) -> tuple[SubjectKind | None, str]:
    """``"trace:abc"`` → ``(TRACE, "abc")``; an id without a known kind prefix → ``(None, value)``."""
    head, colon, rest = value.partition(":")
    kind = _KIND_PREFIXES.get(head + colon)
    if kind is None or not rest.strip():
        return None, value
    return kind, rest.strip()


def collect_subjects(
    subject_ids: Sequence[str] | None,
    subject_ids_file: Path | None,
    subject_kinds: Sequence[SubjectKind] | None = None,
) -> tuple[list[str], tuple[SubjectKind, ...]]:
    """The subject ids (``--subject-id`` values, then the file's; kind prefixes removed;
    de-duplicated) and the subject-kind filter (see the module docstring)."""
    values = [s for s in (subject_ids or ()) if s.strip()]
    if subject_ids_file is not None:
        values += read_subject_ids(subject_ids_file)
    ids: list[str] = []
    kinds = list(subject_kinds or ())
    every_id_has_a_kind = bool(kinds)
    prefixed = True
    for value in values:
        kind, subject_id = split_kind_prefix(value)
        ids.append(subject_id)
        if kind is None:
            prefixed = False
        else:
            kinds.append(kind)
    if not (every_id_has_a_kind or prefixed):
        kinds = []
    return list(dict.fromkeys(ids)), tuple(dict.fromkeys(kinds))


def collect_subject_ids(subject_ids: Sequence[str] | None, subject_ids_file: Path | None) -> list[str]:
    """``--subject-id`` values then the ids of ``--subject-ids-file``, de-duplicated, without
    kind prefixes (for the commands that cover every subject kind: compare, migrate)."""
    return collect_subjects(subject_ids, subject_ids_file)[0]


@asynccontextmanager
async def open_federation(settings: GatewaySettings) -> AsyncIterator[Federation]:
    """A federation over the configured, enabled sources; providers closed on exit."""
    providers: list[AnnotationProvider] = []
    try:
        for config in settings.sources:
            if config.enabled:
                providers.append(build_provider(config))
        # The configured secret when set (a change feed's since token then outlives the
        # process, like a server's), else a random one.
        configured = os.environ.get(settings.server.cursor_secret_env, "").strip()
        secret = configured.encode() if configured else secrets.token_bytes(32)
        federation = Federation.from_settings(providers, settings, cursor_secret=secret)
    except BaseException:
        for provider in providers:
            await provider.aclose()
        raise
    try:
        yield federation
    finally:
        await federation.aclose()
