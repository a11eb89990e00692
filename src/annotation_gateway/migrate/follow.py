"""``migrate --follow`` (SPEC §10): keep a target in step with a source during a migration period.

Contract:
- each **round** reads the source's change feed (:meth:`~annotation_gateway.federation.Federation.changes`
  over the source alone, ids or its whole scope, ``partial=deny``) from the state's ``since``,
  and migrates the subjects that changed with :func:`~annotation_gateway.migrate.migrate` (it
  reads those subjects' annotations and makes the target hold the same: idempotent, never copies
  a copy back). Only when that batch migrated with no failure is ``since`` advanced and the
  state saved; a failure (of the source, of the target, or of items) keeps ``since``, so the
  next round tries the same changes again. A round that finds nothing waits ``interval_s``;
- the **state** (a JSON file, written atomically like migrate's checkpoint) holds the source, target,
  name map and query it belongs to, the feed's ``since`` and the key its tokens are signed with
  (a random key made once per state file, so a token outlives the process without a configured
  secret). A state file of another follow (other source, target, map or query) is refused;
- without a state file the feed starts at the beginning every run (everything is re-read; the
  writes are upserts, so nothing is duplicated);
- ``rounds`` bounds the loop (``None``: until cancelled). Cancelling (Ctrl-C) stops after the
  state of the last completed round was saved.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from annotation_gateway.errors import GatewayError
from annotation_gateway.federation import FederatedQuery, Federation
from annotation_gateway.federation.query import fingerprint
from annotation_gateway.migrate.checkpoint import load_state, save_state
from annotation_gateway.migrate.report import MigrationReport
from annotation_gateway.migrate.run import migrate
from annotation_gateway.providers.base import AnnotationProvider
from annotation_gateway.settings import CacheConfig

__all__ = ["FOLLOW_BATCH", "FollowRound", "FollowState", "follow"]

FOLLOW_BATCH = 1000
"""Changes read per round (the feed's largest page)."""
_STATE_VERSION = 1


class FollowState(BaseModel):
    """What a follow remembers between rounds and runs."""

    model_config = ConfigDict(extra="forbid")

    version: int = _STATE_VERSION
    source: str
    target: str
    name_map: dict[str, str]
    query_sha256: str
    secret: str
    """Hex of the key the feed's tokens are signed with (local to this state file)."""
    since: str | None = None
    rounds: int = 0
    changed: int = 0
    """Annotations written or updated in the target over every round so far."""


@dataclass(slots=True)
class FollowRound:
    """What one round did (for the progress lines)."""

    number: int
    changes: int
    subjects: int
    report: MigrationReport | None = None
    error: str | None = None
    advanced: bool = False
    extra: dict[str, int] = field(default_factory=dict)


def _query_digest(query: FederatedQuery) -> str:
    return hashlib.sha256(fingerprint(query, list(query.sources))).hexdigest()


def _load(path: Path | None, fresh: FollowState) -> FollowState:
    if path is None:
        return fresh
    return load_state(
        path,
        fresh,
        ("version", "source", "target", "name_map", "query_sha256"),
        kind="follow state file",
        differs="follow (source, target, name map or query differ)",
    )


async def follow(
    source: AnnotationProvider,
    target: AnnotationProvider,
    query: FederatedQuery,
    *,
    state_path: Path | None,
    name_map: Mapping[str, str] | None = None,
    interval_s: float = 10.0,
    rounds: int | None = None,
    queue_project_id: str | None = None,
    on_round: Callable[[FollowRound], None] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> FollowState:
    """Follow ``source`` into ``target`` (module docstring); returns the final state."""
    query = FederatedQuery(
        subject_ids=query.subject_ids,
        subject_kinds=query.subject_kinds,
        names=query.names,
        scope=query.scope,
        sources=(source.name,),
        partial="deny",
    )
    names = dict(name_map or {})
    state = _load(
        state_path,
        FollowState(
            source=source.name,
            target=target.name,
            name_map=names,
            query_sha256=_query_digest(query),
            secret=secrets.token_hex(32),
        ),
    )
    # The source alone, no cache: the feed reads fresh anyway, and nothing else reads here.
    federation = Federation([source], CacheConfig(enabled=False), cursor_secret=bytes.fromhex(state.secret))
    done = 0
    try:
        while rounds is None or done < rounds:
            done += 1
            state.rounds += 1
            current = FollowRound(number=state.rounds, changes=0, subjects=0)
            try:
                page = await federation.changes(query, since=state.since, limit=FOLLOW_BATCH)
                subjects = list(dict.fromkeys(r.subject_id for r in page.records))
                current.changes, current.subjects = len(page.records), len(subjects)
                if subjects:
                    current.report = await migrate(
                        source, target, subjects, name_map=names, queue_project_id=queue_project_id
                    )
                if current.report is None or current.report.failed == 0:
                    state.since = page.next_since
                    state.changed += current.report.changed if current.report is not None else 0
                    current.advanced = True
                    if state_path is not None:
                        save_state(state_path, state)
            except GatewayError as exc:
                current.error = f"{exc.code.value}: {exc.detail}"
            if on_round is not None:
                on_round(current)
            idle = (
                current.error is not None
                or not current.changes
                or (current.report is not None and current.report.failed)
            )
            if idle and (rounds is None or done < rounds):
                await sleep(interval_s)
    finally:
        await federation.aclose()
    return state
