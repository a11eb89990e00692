"""What the federation answers: one page of a query, each source's status, a source's info.

Contract: plain data; the API layer encodes them (JSON on the wire is the API's job).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from annotation_gateway.model import Annotation, ProviderKind
from annotation_gateway.providers.base import Capabilities, HealthReport
from annotation_gateway.records import Record, decode

__all__ = ["PageJson", "QueryPage", "SourceInfo", "SourceState", "SourceStatus"]

SourceState = Literal["ok", "error", "skipped"]


@dataclass(slots=True)
class SourceStatus:
    """How one source fared in one query (``sources[]`` of the answer)."""

    source: str
    provider: ProviderKind
    status: SourceState
    count: int = 0
    """This source's matches for the whole query (all pages), after the gateway's filters."""
    cached: bool = False
    """Served without any upstream call made or awaited for this request."""
    stale: bool = False
    elapsed_ms: float = 0.0
    """Time spent on this source in this request (for ``Server-Timing``)."""
    error: dict[str, Any] | None = None
    """The problem object (RFC 9457) when ``status`` is ``error``; the reason when ``skipped``."""
    scanned_subjects: int | None = None
    """Scope answers only (SPEC §7): the subjects of this source read for this answer. ``count``
    is then the matches among them, not in the whole scope."""


@dataclass(slots=True, eq=False)
class PageJson:
    """A page's records' JSON, kept with a cached result so that a polled page is not written
    again: ``items`` (the records, comma-separated) and the last answer the API layer wrote
    around them (``body``, which ends with ``tail``: the cursor, ``partial`` and ``sources``).
    Once a body is written, ``items`` is a view into it (the page's JSON held once)."""

    items: bytes | memoryview
    tail: bytes = b""
    body: bytes = b""


@dataclass(slots=True)
class QueryPage:
    """One page: its records in answer order, the cursor to the next page, and each source's
    status. ``data`` decodes the records into canonical models, for the consumers that want
    them (compare, the CLI's tables); the API writes ``records``' JSON as it is."""

    records: list[Record]
    next_cursor: str | None
    partial: bool
    sources: list[SourceStatus]
    records_json: PageJson | None = field(default=None, repr=False, compare=False)
    """``records``' JSON when the federation has it at hand (a cached query's page is kept with
    its result, and so is the answer last written for it); ``None``: write ``records``."""

    @property
    def data(self) -> list[Annotation]:
        return decode(self.records)


@dataclass(slots=True)
class SourceInfo:
    """What ``GET /v1/sources`` shows for a source."""

    name: str
    provider: ProviderKind
    capabilities: Capabilities
    circuit_state: Literal["closed", "open", "half_open"]
    last_health: HealthReport | None = None
    last_checked_at: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    """``consecutive_failures``, ``retry_in_s`` (open circuit), ``in_flight`` upstream calls."""
