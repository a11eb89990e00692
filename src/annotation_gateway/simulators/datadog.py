"""A faithful local simulator of Datadog LLM Observability's annotation API (an ASGI app).

Contract: it answers the 13 operations of ``contracts/datadog/llm-obs-annotations.openapi.yaml``
(paths under ``/api/v2/llm-obs/v1/``) with the documented bodies, in ``application/vnd.api+json``,
so that code which works against it works against Datadog. The test suite checks its answers
against the OpenAPI fragment and deserializes them with Datadog's own ``datadog-api-client``.

Datadog behaviour reproduced:

- auth by ``DD-API-KEY`` and ``DD-APPLICATION-KEY``: with keys configured both must match; with
  none configured any non-empty pair is accepted. A wrong or missing key answers
  ``403 {"errors": ["Forbidden"]}``. The application key decides the user: the same key is
  always the same user id (``created_by``/``modified_by``), and an annotation upsert is keyed by
  (interaction, that user).
- the cross-queue read ``GET /api/v2/llm-obs/v1/annotated-interactions?contentIds=a&contentIds=b
  &offset=0&limit=100``: ``contentIds`` repeated (a comma inside a value is part of the id),
  offset/limit paging over interactions (one per queue the content id sits in), ``total_count``
  the full match count, a stable but undocumented order (by interaction id). Missing or empty
  ``contentIds``, non-integer ``offset``/``limit``, ``offset < 0`` or ``limit < 1`` answer 400
  JSON:API errors with ``source.parameter``; body errors carry ``source.pointer``.
- ``label_values`` come back as an array of ``{label_schema_id, name_when_saved, type, value,
  assessment?, reasoning?}`` (what Datadog sends although the spec declares an object), or, with
  the ``label_values="object"`` switch, in the legacy object form ``{label name: value}``.
- unknown paths answer ``404 {"errors": ["Not found"]}``; a known path with another method 405.

Runtime switches (:class:`Switches`; flip them in-process with ``state.configure(...)`` or over
HTTP with ``POST /_simulator/config``): ``label_values`` (array|object), ``zero_time`` (annotation
timestamps sent as ``0001-01-01T00:00:00Z``), ``name_when_saved`` (false: leave it out, so
clients must resolve names through the label schema), ``latency_ms``, ``fail_rate`` and
``fail_status`` (random 5xx), ``fail_next`` (the next N API requests fail: deterministic),
``rate_limit`` (``{"limit": N, "period_s": S}`` or ``"N/S"``: a fixed window answering 429
``{"errors": ["Too many requests"]}``; every API answer then carries ``X-RateLimit-Limit``,
``-Period``, ``-Remaining``, ``-Reset`` (whole seconds until the window resets) and ``-Name``).

Control API (never behind Datadog auth, never failing, under a prefix no Datadog path uses):

    GET    /_simulator/health     {"ok": true}
    GET    /_simulator/config     the switches
    POST   /_simulator/config     change some switches: {"fail_next": 2, "rate_limit": "5/1"}
    POST   /_simulator/reset      {"data": true, "switches": true}: back to the start-up state
    POST   /_simulator/seed       load a seed document (below); answers the ids it made
    GET    /_simulator/requests   the API requests received (method, path, query, status)
    DELETE /_simulator/requests   forget them

Seed document (``--seed FILE``, ``POST /_simulator/seed``, ``state.load_seed(doc)``)::

    {"queues": [{
        "id": "optional; default derived from the name",
        "name": "support-quality",
        "project_id": "support-bot",            # optional
        "description": "",                      # optional
        "label_schemas": [                      # as in the API (LLMObsLabelSchema); ids optional
          {"name": "quality", "type": "score", "min": 0, "max": 5, "is_integer": true,
           "has_reasoning": true},
          {"name": "topic", "type": "categorical", "values": ["billing", "bug", "other"]},
          {"name": "resolved", "type": "boolean", "has_assessment": true},
          {"name": "feedback", "type": "text"}],
        "interactions": [{
          "type": "session",                    # trace | experiment_trace | session | display_block
          "content_id": "sess-001",             # display_block: give "display_block": [...] instead
          "id": "optional", "created_at": "optional RFC 3339",
          "annotations": [{
            "user": "alice",                    # or "app_key": "...", or "created_by": "<user id>"
            "id": "optional", "created_at": "optional", "modified_at": "optional",
            "label_values": {"quality": 4, "topic": ["billing", "bug"], "resolved": true}
            # or [{"label": "quality", "value": 4, "reasoning": "..."},
            #     {"label_schema_id": "...", "value": true, "assessment": "pass"}]
          }]}]}]}

Seeds go through the same validation as API calls; ids not given are derived from names
(uuid5), so one seed always yields the same ids; loading again merges (upsert).

This module never imports from ``providers/``: it is the other side of the wire.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import os
import random
import re
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl

import orjson
import uvicorn
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from annotation_gateway.simulators.datadog_store import (
    ID_NAMESPACE,
    INT32_MAX,
    ZERO_TIME,
    Annotation,
    DatadogStore,
    Interaction,
    Queue,
    SimApiError,
    error_item,
    user_id_for_app_key,
    user_id_for_name,
)

__all__ = [
    "API_PREFIX",
    "CONTROL_PREFIX",
    "DEFAULT_PORT",
    "JSONAPI_CONTENT_TYPE",
    "RateLimit",
    "RequestRecord",
    "RunningSimulator",
    "SimulatorConfig",
    "SimulatorState",
    "Switches",
    "build_app",
    "make_config",
    "running",
    "serve",
    "start_in_thread",
]

API_PREFIX = "/api/v2/llm-obs/v1"
CONTROL_PREFIX = "/_simulator"
DEFAULT_PORT = 8780
JSONAPI_CONTENT_TYPE = "application/vnd.api+json"
RATE_LIMIT_NAME = "llmobs_annotations"
REQUEST_LOG_SIZE = 20_000
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

_PERIOD_UNITS = {"": 1.0, "s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0}
_PERIOD_UNITS |= {"h": 3600.0, "hour": 3600.0}
_RATE_LIMIT_PATTERN = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*([a-z]*)\s*$")
_INTEGER_PATTERN = re.compile(r"^[+-]?\d+$")


# --- configuration and switches ----------------------------------------------------------------


class RateLimit(BaseModel):
    """A fixed window: at most ``limit`` API requests per ``period_s`` seconds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    limit: int = Field(ge=1)
    period_s: float = Field(gt=0, le=86_400)

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        """``"10/60"``, ``"10/60s"``, ``"100/1m"``, ``"5/second"`` → a RateLimit."""
        match = _RATE_LIMIT_PATTERN.match(text.lower())
        if (
            match is None
            or match.group(3) not in _PERIOD_UNITS
            or (not match.group(2) and not match.group(3))
        ):
            raise ValueError(f"rate limit {text!r} is not N/period (e.g. 10/60s, 100/1m, 5/second)")
        amount = float(match.group(2) or 1)
        return cls(limit=int(match.group(1)), period_s=amount * _PERIOD_UNITS[match.group(3)])


class Switches(BaseModel):
    """What the simulator does differently at run time; every one can be flipped live."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    label_values: Literal["array", "object"] = "array"
    """``array``: what Datadog sends today; ``object``: the legacy ``{label name: value}`` form."""
    zero_time: bool = False
    """Send annotation ``created_at``/``modified_at`` as ``0001-01-01T00:00:00Z``."""
    name_when_saved: bool = True
    """False: leave ``name_when_saved`` out of label values (older data has none)."""
    latency_ms: float = Field(default=0.0, ge=0, le=60_000)
    fail_rate: float = Field(default=0.0, ge=0, le=1)
    """Probability that an API request answers ``fail_status`` (seeded RNG: reproducible)."""
    fail_status: int = Field(default=500, ge=500, le=599)
    fail_next: int = Field(default=0, ge=0)
    """The next N API requests answer ``fail_status``; counts down."""
    rate_limit: RateLimit | None = None

    @field_validator("rate_limit", mode="before")
    @classmethod
    def _parse_rate_limit(cls, value: Any) -> Any:
        return RateLimit.parse(value) if isinstance(value, str) else value


class SimulatorConfig(BaseModel):
    """How a simulator starts. ``reset`` returns to exactly this."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    api_key: str | None = None
    """Accepted ``DD-API-KEY``; None accepts any non-empty key."""
    app_key: str | None = None
    """Accepted ``DD-APPLICATION-KEY``; None accepts any non-empty key."""
    seed_file: Path | None = None
    seed: dict[str, Any] | None = None
    """An inline seed document, loaded after ``seed_file``."""
    random_seed: int = 0
    """Seeds the RNG behind ``fail_rate``, so a failure pattern is reproducible."""
    switches: Switches = Field(default_factory=Switches)


def make_config(
    *,
    api_key: str | None = None,
    app_key: str | None = None,
    seed: str | Path | None = None,
    label_values: Literal["array", "object"] = "array",
    zero_time: bool = False,
    latency_ms: float = 0.0,
    fail_rate: float = 0.0,
    rate_limit: str | RateLimit | None = None,
    environ: Mapping[str, str] | None = None,
) -> SimulatorConfig:
    """A config from command-line style switches; keys not given come from DD_API_KEY/DD_APP_KEY."""
    env = os.environ if environ is None else environ
    return SimulatorConfig(
        api_key=api_key if api_key is not None else (env.get("DD_API_KEY") or None),
        app_key=app_key if app_key is not None else (env.get("DD_APP_KEY") or None),
        seed_file=Path(seed) if seed is not None else None,
        switches=Switches(
            label_values=label_values,
            zero_time=zero_time,
            latency_ms=latency_ms,
            fail_rate=fail_rate,
            rate_limit=RateLimit.parse(rate_limit) if isinstance(rate_limit, str) else rate_limit,
        ),
    )


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One API request as received, for tests to check what a client put on the wire."""

    method: str
    path: str
    query: tuple[tuple[str, str], ...]
    raw_query: str
    status: int
    at: float


class SimulatorState:
    """The live state of one simulator: data, switches, rate window and request log.

    Thread-safe: tests drive it from the main thread while uvicorn serves from another.
    """

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.store = DatadogStore()
        self._lock = threading.Lock()
        self._switches = config.switches
        self._rng = random.Random(config.random_seed)
        self._window_start: float | None = None
        self._window_count = 0
        self._in_flight = 0
        self.max_in_flight = 0
        """The most API requests ever being answered at once (tests check client concurrency)."""
        self._requests: deque[RequestRecord] = deque(maxlen=REQUEST_LOG_SIZE)
        self._load_initial_seed()

    # --- switches ---

    @property
    def switches(self) -> Switches:
        return self._switches

    def configure(self, **changes: Any) -> Switches:
        """Change some switches (validated); the others keep their values."""
        with self._lock:
            merged = {**self._switches.model_dump(), **changes}
            self._switches = Switches.model_validate(merged)
            if "rate_limit" in changes:
                self._window_start = None
            return self._switches

    def reset(self, *, data: bool = True, switches: bool = True) -> None:
        """Back to the start-up state: switches, data (the initial seed reloaded), logs."""
        with self._lock:
            if switches:
                self._switches = self.config.switches
                self._rng = random.Random(self.config.random_seed)
                self._window_start = None
            self._requests.clear()
            self.max_in_flight = 0
        if data:
            self.store.clear()
            self._load_initial_seed()

    # --- data ---

    @property
    def default_user(self) -> str:
        """Who seeded data belongs to when the seed names nobody."""
        if self.config.app_key:
            return user_id_for_app_key(self.config.app_key)
        return user_id_for_name("seed")

    def load_seed(self, doc: Any) -> dict[str, Any]:
        """Load a seed document; raises ``SimApiError`` (nothing loaded) when it is invalid."""
        return self.store.load_seed(doc, default_user=self.default_user)

    def _load_initial_seed(self) -> None:
        """Load the configured seeds; a bad seed is a ValueError naming the file and the entry."""
        seeds: list[tuple[str, Callable[[], Any]]] = []
        if self.config.seed_file is not None:
            path = self.config.seed_file
            seeds.append((str(path), lambda: orjson.loads(path.read_bytes())))
        if self.config.seed is not None:
            inline = self.config.seed
            seeds.append(("the inline seed", lambda: inline))
        for name, read in seeds:
            try:
                self.load_seed(read())
            except SimApiError as exc:
                first = exc.errors[0]
                where = first.get("source", {}).get("pointer", "")
                raise ValueError(f"seed {name}: {first['detail']} at {where or '/'}") from None
            except (OSError, ValueError) as exc:
                raise ValueError(f"seed {name}: {exc}") from None

    # --- request log ---

    @property
    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()
            self.max_in_flight = 0

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self._requests.append(record)

    def _enter(self) -> None:
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    # --- faults ---

    def _should_fail(self) -> int | None:
        with self._lock:
            sw = self._switches
            if sw.fail_next > 0:
                self._switches = sw.model_copy(update={"fail_next": sw.fail_next - 1})
                return sw.fail_status
            if sw.fail_rate > 0 and self._rng.random() < sw.fail_rate:
                return sw.fail_status
            return None

    def _take_rate_limit(self) -> tuple[bool, dict[str, str]]:
        """Count one request against the window: (allowed, X-RateLimit-* headers)."""
        with self._lock:
            limit = self._switches.rate_limit
            if limit is None:
                return True, {}
            now = time.monotonic()
            if self._window_start is None or now - self._window_start >= limit.period_s:
                self._window_start, self._window_count = now, 0
            allowed = self._window_count < limit.limit
            if allowed:
                self._window_count += 1
            reset = max(1, math.ceil(self._window_start + limit.period_s - now))
            period = limit.period_s
            headers = {
                "X-RateLimit-Limit": str(limit.limit),
                "X-RateLimit-Period": str(int(period)) if period == int(period) else str(period),
                "X-RateLimit-Remaining": str(limit.limit - self._window_count),
                "X-RateLimit-Reset": str(reset),
                "X-RateLimit-Name": RATE_LIMIT_NAME,
            }
            return allowed, headers


# --- wire rendering ---------------------------------------------------------------------------


def format_time(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _vnd_json(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, headers=headers, media_type=JSONAPI_CONTENT_TYPE)


def _error_response(exc: SimApiError, headers: Mapping[str, str] | None = None) -> Response:
    return _vnd_json({"errors": exc.errors}, exc.status, headers)


def _bare_errors(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    """Datadog's other error shape: an array of strings (403, 404, 429)."""
    return _vnd_json({"errors": [message]}, status, headers)


def _render_label_values(annotation: Annotation, queue: Queue | None, sw: Switches) -> Any:
    if sw.label_values == "object":
        # The legacy form is keyed by label name; an entry whose label is gone keeps its id.
        named: dict[str, Any] = {}
        for entry in annotation.label_values:
            name = entry.get("name_when_saved") or entry["label_schema_id"]
            named[name] = entry["value"]
        return named
    rendered: list[dict[str, Any]] = []
    for entry in annotation.label_values:
        item: dict[str, Any] = {"label_schema_id": entry["label_schema_id"]}
        if sw.name_when_saved and "name_when_saved" in entry:
            item["name_when_saved"] = entry["name_when_saved"]
        item["type"] = entry["type"]
        item["value"] = entry["value"]
        for optional in ("assessment", "reasoning"):
            if optional in entry:
                item[optional] = entry[optional]
        rendered.append(item)
    return rendered


def _render_annotation(
    annotation: Annotation, queue: Queue | None, sw: Switches, *, read: bool
) -> dict[str, Any]:
    zero = read and sw.zero_time
    return {
        "id": annotation.id,
        "interaction_id": annotation.interaction_id,
        # Upsert answers are declared (and sent) as arrays; only reads have the legacy switch.
        "label_values": _render_label_values(
            annotation, queue, sw if read else sw.model_copy(update={"label_values": "array"})
        ),
        "created_by": annotation.created_by,
        "created_at": format_time(ZERO_TIME if zero else annotation.created_at),
        "modified_by": annotation.modified_by,
        "modified_at": format_time(ZERO_TIME if zero else annotation.modified_at),
    }


def _render_interaction(
    state: SimulatorState, interaction: Interaction, *, with_queue: bool, sw: Switches
) -> dict[str, Any]:
    queue = state.store.queues.get(interaction.queue_id)
    item: dict[str, Any] = {
        "id": interaction.id,
        "type": interaction.type,
        "content_id": interaction.content_id,
    }
    if with_queue:
        item["queue_id"] = interaction.queue_id
        item["queue_name"] = queue.name if queue else ""
    item["can_annotate"] = True
    # The per-queue display_block item declares no timestamps; the cross-queue item requires them.
    if with_queue or interaction.type != "display_block":
        item["created_at"] = format_time(interaction.created_at)
        item["modified_at"] = format_time(interaction.modified_at)
    if interaction.display_block is not None:
        item["display_block"] = interaction.display_block
    item["annotations"] = [
        _render_annotation(a, queue, sw, read=True) for a in state.store.annotations_of(interaction.id)
    ]
    return item


def _render_queue(queue: Queue) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "name": queue.name,
        "project_id": queue.project_id,
        "description": queue.description,
        "created_by": queue.created_by,
        "created_at": format_time(queue.created_at),
        "modified_by": queue.modified_by,
        "modified_at": format_time(queue.modified_at),
        "owned_by": queue.owned_by,
        "restrict_to_reviewers": queue.restrict_to_reviewers,
        "restrict_to_assignees": queue.restrict_to_assignees,
        "can_manage_access": True,
        "reviewer_emails": list(queue.reviewer_emails),
    }
    if queue.label_schemas:
        attributes["annotation_schema"] = {"label_schemas": [dict(s) for s in queue.label_schemas]}
    return {"id": queue.id, "type": "queues", "attributes": attributes}


def _render_label_schema(queue: Queue) -> dict[str, Any]:
    return {
        "data": {
            "id": queue.id,
            "type": "queues",
            "attributes": {"annotation_schema": {"label_schemas": [dict(s) for s in queue.label_schemas]}},
        }
    }


# --- request helpers --------------------------------------------------------------------------


@dataclass(slots=True)
class Call:
    """One authenticated API request being answered."""

    request: Request
    state: SimulatorState
    user_id: str
    params: dict[str, str]
    switches: Switches


async def _read_attributes(call: Call, expected_type: str) -> dict[str, Any]:
    """The ``data.attributes`` of a JSON:API request body, checked for shape and ``data.type``."""
    ctype = call.request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype not in ("application/json", JSONAPI_CONTENT_TYPE):
        raise SimApiError(415, [error_item(415, "Content-Type must be application/json")])
    raw = await call.request.body()
    if not raw:
        raise SimApiError.bad_request("a request body is required", pointer="")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise SimApiError.bad_request(f"malformed JSON: {exc}", pointer="") from exc
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, dict):
        raise SimApiError.bad_request("data is required", pointer="/data")
    if data.get("type") != expected_type:
        raise SimApiError.bad_request(f"data.type must be {expected_type!r}", pointer="/data/type")
    attributes = data.get("attributes")
    if not isinstance(attributes, dict):
        raise SimApiError.bad_request("data.attributes is required", pointer="/data/attributes")
    return attributes


def _int_param(call: Call, name: str, *, default: int, minimum: int, maximum: int = INT32_MAX) -> int:
    values = call.request.query_params.getlist(name)
    if not values:
        return default
    text = values[-1].strip()
    if not _INTEGER_PATTERN.match(text):
        raise SimApiError.bad_request(f"{name} must be an integer", parameter=name)
    value = int(text)
    if value < minimum:
        relation = ">= 0" if minimum == 0 else f"> {minimum - 1}"
        raise SimApiError.bad_request(f"{name} must be {relation}", parameter=name)
    if value > maximum:
        raise SimApiError.bad_request(f"{name} must be <= {maximum}", parameter=name)
    return value


# --- operations -------------------------------------------------------------------------------


async def get_annotated_interactions_by_content(call: Call) -> Response:
    """GetLLMObsAnnotatedInteractionsByTraceIDs: the cross-queue read."""
    raw_ids = call.request.query_params.getlist("contentIds")
    if not raw_ids:
        raise SimApiError.bad_request("contentIds is required", parameter="contentIds")
    content_ids = list(dict.fromkeys(i for i in raw_ids if i.strip()))
    if not content_ids:
        raise SimApiError.bad_request("contentIds must not be empty", parameter="contentIds")
    offset = _int_param(call, "offset", default=0, minimum=0)
    limit = _int_param(call, "limit", default=100, minimum=1)
    matches = call.state.store.interactions_for_contents(content_ids)
    page = matches[offset : offset + limit]
    body = {
        "data": {
            "id": str(uuid.uuid5(ID_NAMESPACE, "\n".join(sorted(content_ids)))),
            "type": "annotated_interactions_by_trace",
            "attributes": {
                "annotated_interactions": [
                    _render_interaction(call.state, i, with_queue=True, sw=call.switches) for i in page
                ],
                "total_count": len(matches),
            },
        }
    }
    return _vnd_json(body)


async def list_queues(call: Call) -> Response:
    """ListLLMObsAnnotationQueues."""
    project_id = call.request.query_params.get("projectId")
    raw_ids = call.request.query_params.getlist("queueIds")
    # The spec text says comma-separated, the official client repeats the key: accept both.
    queue_ids = [part for value in raw_ids for part in value.split(",") if part]
    if project_id is not None and raw_ids:
        raise SimApiError.bad_request("projectId and queueIds are mutually exclusive", parameter="queueIds")
    queues = call.state.store.list_queues(project_id=project_id, queue_ids=queue_ids)
    return _vnd_json({"data": [_render_queue(q) for q in queues]})


async def create_queue(call: Call) -> Response:
    """CreateLLMObsAnnotationQueue."""
    attributes = await _read_attributes(call, "queues")
    queue = call.state.store.create_queue(attributes, user_id=call.user_id)
    return _vnd_json({"data": _render_queue(queue)}, 201)


async def update_queue(call: Call) -> Response:
    """UpdateLLMObsAnnotationQueue."""
    attributes = await _read_attributes(call, "queues")
    queue = call.state.store.update_queue(call.params["queue_id"], attributes, user_id=call.user_id)
    return _vnd_json({"data": _render_queue(queue)})


async def delete_queue(call: Call) -> Response:
    """DeleteLLMObsAnnotationQueue."""
    call.state.store.delete_queue(call.params["queue_id"])
    return Response(status_code=204)


async def get_queue_interactions(call: Call) -> Response:
    """GetLLMObsAnnotatedInteractions: every interaction of one queue."""
    queue_id = call.params["queue_id"]
    interactions = call.state.store.queue_interactions(queue_id)
    items = [_render_interaction(call.state, i, with_queue=False, sw=call.switches) for i in interactions]
    return _vnd_json(
        {
            "data": {
                "id": queue_id,
                "type": "annotated_interactions",
                "attributes": {"annotated_interactions": items},
            }
        }
    )


async def get_queue_interaction(call: Call) -> Response:
    """GetLLMObsAnnotatedInteraction: one interaction and a page of its events (none here)."""
    _int_param(call, "limit", default=10, minimum=1, maximum=1000)
    interaction = call.state.store.get_interaction(call.params["queue_id"], call.params["interaction_id"])
    item = _render_interaction(call.state, interaction, with_queue=False, sw=call.switches)
    # The single-interaction item requires timestamps whatever its type.
    item.setdefault("created_at", format_time(interaction.created_at))
    item.setdefault("modified_at", format_time(interaction.modified_at))
    attributes = {"annotated_interaction": item, "interaction_type": interaction.type, "events": []}
    return _vnd_json(
        {"data": {"id": interaction.id, "type": "annotated_interactions", "attributes": attributes}}
    )


async def upsert_annotations(call: Call) -> Response:
    """UpsertLLMObsAnnotations: one annotation per (interaction, requesting user)."""
    queue_id = call.params["queue_id"]
    attributes = await _read_attributes(call, "annotations")
    written, errors = call.state.store.upsert_annotations(
        queue_id, attributes.get("annotations"), user_id=call.user_id
    )
    queue = call.state.store.queues.get(queue_id)
    body_attributes: dict[str, Any] = {
        "annotations": [_render_annotation(a, queue, call.switches, read=False) for a in written]
    }
    if errors:
        body_attributes["errors"] = errors
    return _vnd_json({"data": {"id": queue_id, "type": "annotations", "attributes": body_attributes}})


async def delete_annotations(call: Call) -> Response:
    """DeleteLLMObsAnnotations."""
    queue_id = call.params["queue_id"]
    attributes = await _read_attributes(call, "annotations")
    deleted, errors = call.state.store.delete_annotations(queue_id, attributes.get("annotation_ids"))
    return _vnd_json(
        {
            "data": {
                "id": queue_id,
                "type": "annotations",
                "attributes": {"annotation_ids": deleted, "errors": errors},
            }
        }
    )


async def add_interactions(call: Call) -> Response:
    """CreateLLMObsAnnotationQueueInteractions."""
    queue_id = call.params["queue_id"]
    attributes = await _read_attributes(call, "interactions")
    results = call.state.store.add_interactions(queue_id, attributes.get("interactions"))
    items: list[dict[str, Any]] = []
    for interaction, existed in results:
        item: dict[str, Any] = {
            "id": interaction.id,
            "type": interaction.type,
            "content_id": interaction.content_id,
            "already_existed": existed,
        }
        if interaction.display_block is not None:
            item["display_block"] = interaction.display_block
        else:
            item["created_at"] = format_time(interaction.created_at)
            item["modified_at"] = format_time(interaction.modified_at)
        items.append(item)
    return _vnd_json(
        {"data": {"id": queue_id, "type": "interactions", "attributes": {"interactions": items}}}, 201
    )


async def delete_interactions(call: Call) -> Response:
    """DeleteLLMObsAnnotationQueueInteractions."""
    attributes = await _read_attributes(call, "interactions")
    call.state.store.delete_interactions(call.params["queue_id"], attributes.get("interaction_ids"))
    return Response(status_code=204)


async def get_label_schema(call: Call) -> Response:
    """GetLLMObsAnnotationQueueLabelSchema."""
    return _vnd_json(_render_label_schema(call.state.store.get_queue(call.params["queue_id"])))


async def replace_label_schema(call: Call) -> Response:
    """UpdateLLMObsAnnotationQueueLabelSchema: create or replace the whole label schema."""
    attributes = await _read_attributes(call, "queues")
    schema = attributes.get("annotation_schema")
    if not isinstance(schema, dict) or "label_schemas" not in schema:
        raise SimApiError.bad_request(
            "annotation_schema.label_schemas is required", pointer="/data/attributes/annotation_schema"
        )
    queue = call.state.store.replace_label_schema(
        call.params["queue_id"], schema["label_schemas"], user_id=call.user_id
    )
    return _vnd_json(_render_label_schema(queue))


Operation = Callable[[Call], Awaitable[Response]]
_Q = rf"{re.escape(API_PREFIX)}/annotation-queues/(?P<queue_id>[^/]+)"
ROUTES: list[tuple[re.Pattern[str], dict[str, Operation]]] = [
    (
        re.compile(rf"^{re.escape(API_PREFIX)}/annotated-interactions$"),
        {"GET": get_annotated_interactions_by_content},
    ),
    (re.compile(rf"^{re.escape(API_PREFIX)}/annotation-queues$"), {"GET": list_queues, "POST": create_queue}),
    (re.compile(rf"^{_Q}$"), {"PATCH": update_queue, "DELETE": delete_queue}),
    (re.compile(rf"^{_Q}/annotated-interactions$"), {"GET": get_queue_interactions}),
    (re.compile(rf"^{_Q}/annotated-interactions/(?P<interaction_id>[^/]+)$"), {"GET": get_queue_interaction}),
    (re.compile(rf"^{_Q}/annotations$"), {"POST": upsert_annotations}),
    (re.compile(rf"^{_Q}/annotations/delete$"), {"POST": delete_annotations}),
    (re.compile(rf"^{_Q}/interactions$"), {"POST": add_interactions}),
    (re.compile(rf"^{_Q}/interactions/delete$"), {"POST": delete_interactions}),
    (re.compile(rf"^{_Q}/label-schema$"), {"GET": get_label_schema, "PUT": replace_label_schema}),
]


def _authenticate(state: SimulatorState, request: Request) -> str | None:
    """The user id of the request's application key, or None when the keys are refused."""
    api_key = request.headers.get("dd-api-key", "")
    app_key = request.headers.get("dd-application-key", "")
    if not api_key.strip() or not app_key.strip():
        return None
    if state.config.api_key is not None and api_key != state.config.api_key:
        return None
    if state.config.app_key is not None and app_key != state.config.app_key:
        return None
    return user_id_for_app_key(app_key)


async def _api(request: Request) -> Response:
    """Every non-control request: faults, routing, auth, rate limit, then the operation."""
    state: SimulatorState = request.app.state.simulator
    state._enter()
    status = 500
    try:
        response = await _answer(state, request)
        status = response.status_code
        return response
    finally:
        state._leave()
        state._record(
            RequestRecord(
                method=request.method,
                path=request.url.path,
                query=tuple(parse_qsl(request.url.query, keep_blank_values=True)),
                raw_query=request.url.query,
                status=status,
                at=time.time(),
            )
        )


async def _answer(state: SimulatorState, request: Request) -> Response:
    sw = state.switches
    if sw.latency_ms:
        await asyncio.sleep(sw.latency_ms / 1000)
    failure = state._should_fail()
    if failure is not None:
        return _vnd_json({"errors": [error_item(failure, "simulated failure")]}, failure)
    path = request.url.path
    for pattern, methods in ROUTES:
        match = pattern.match(path)
        if match is None:
            continue
        operation = methods.get(request.method)
        if operation is None:
            return _bare_errors(405, "Method Not Allowed", {"Allow": ", ".join(sorted(methods))})
        user_id = _authenticate(state, request)
        if user_id is None:
            return _bare_errors(403, "Forbidden")
        allowed, limit_headers = state._take_rate_limit()
        if not allowed:
            return _bare_errors(429, "Too many requests", limit_headers)
        call = Call(request=request, state=state, user_id=user_id, params=match.groupdict(), switches=sw)
        try:
            response = await operation(call)
        except SimApiError as exc:
            response = _error_response(exc)
        response.headers.update(limit_headers)
        return response
    return _bare_errors(404, "Not found")


# --- control API ------------------------------------------------------------------------------


def _control_json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


async def _control_body(request: Request) -> Any:
    raw = await request.body()
    return orjson.loads(raw) if raw.strip() else {}


async def _control_health(request: Request) -> Response:
    return _control_json({"ok": True})


async def _control_config(request: Request) -> Response:
    state: SimulatorState = request.app.state.simulator
    if request.method == "POST":
        try:
            changes = await _control_body(request)
            if not isinstance(changes, dict):
                raise ValueError("the body must be an object of switches")
            state.configure(**changes)
        except ValueError as exc:  # pydantic's ValidationError and orjson's errors are ValueErrors
            return _control_json({"detail": str(exc)}, 400)
    return _control_json(state.switches.model_dump(mode="json"))


async def _control_reset(request: Request) -> Response:
    state: SimulatorState = request.app.state.simulator
    try:
        body = await _control_body(request)
    except ValueError as exc:
        return _control_json({"detail": str(exc)}, 400)
    state.reset(data=bool(body.get("data", True)), switches=bool(body.get("switches", True)))
    return _control_json({"ok": True})


async def _control_seed(request: Request) -> Response:
    state: SimulatorState = request.app.state.simulator
    try:
        doc = await _control_body(request)
        return _control_json(state.load_seed(doc))
    except SimApiError as exc:
        return _control_json({"errors": exc.errors}, exc.status)
    except ValueError as exc:
        return _control_json({"detail": str(exc)}, 400)


async def _control_requests(request: Request) -> Response:
    state: SimulatorState = request.app.state.simulator
    if request.method == "DELETE":
        state.clear_requests()
        return Response(status_code=204)
    return _control_json(
        {
            "max_in_flight": state.max_in_flight,
            "requests": [
                {"method": r.method, "path": r.path, "query": r.raw_query, "status": r.status}
                for r in state.requests
            ],
        }
    )


def build_app(config: SimulatorConfig | None = None) -> Starlette:
    """The simulator as an ASGI app; its :class:`SimulatorState` is ``app.state.simulator``."""
    state = SimulatorState(config or SimulatorConfig())
    routes = [
        Route(f"{CONTROL_PREFIX}/health", _control_health, methods=["GET"]),
        Route(f"{CONTROL_PREFIX}/config", _control_config, methods=["GET", "POST"]),
        Route(f"{CONTROL_PREFIX}/reset", _control_reset, methods=["POST"]),
        Route(f"{CONTROL_PREFIX}/seed", _control_seed, methods=["POST"]),
        Route(f"{CONTROL_PREFIX}/requests", _control_requests, methods=["GET", "DELETE"]),
        Route("/{path:path}", _api, methods=ALL_METHODS),
    ]
    app = Starlette(routes=routes)
    app.state.simulator = state
    return app


# --- running it -------------------------------------------------------------------------------


def _require_loopback(host: str) -> None:
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"the simulator listens on loopback only, not {host!r}")


def serve(
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    config: SimulatorConfig | None = None,
    *,
    api_key: str | None = None,
    app_key: str | None = None,
    seed: str | Path | None = None,
    label_values: Literal["array", "object"] = "array",
    zero_time: bool = False,
    latency_ms: float = 0.0,
    fail_rate: float = 0.0,
    rate_limit: str | RateLimit | None = None,
    log_level: str = "info",
    environ: Mapping[str, str] | None = None,
) -> None:
    """Run the simulator until interrupted (blocking): ``annotation-gateway simulate-datadog``.

    Either pass ``config`` or the command-line switches (then keys not given are read from
    ``DD_API_KEY`` / ``DD_APP_KEY``). Listens on a loopback address only.
    """
    _require_loopback(host)
    if config is None:
        config = make_config(
            api_key=api_key,
            app_key=app_key,
            seed=seed,
            label_values=label_values,
            zero_time=zero_time,
            latency_ms=latency_ms,
            fail_rate=fail_rate,
            rate_limit=rate_limit,
            environ=environ,
        )
    # The access log costs 40-50 % CPU per request (SPEC §4); the request log is in the state.
    uvicorn.run(build_app(config), host=host, port=port, log_level=log_level, access_log=False)


@dataclass
class RunningSimulator:
    """A simulator served over real HTTP from a background thread."""

    base_url: str
    app: Starlette
    server: uvicorn.Server
    thread: threading.Thread

    @property
    def state(self) -> SimulatorState:
        state: SimulatorState = self.app.state.simulator
        return state

    def stop(self, timeout_s: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout_s)


def start_in_thread(
    config: SimulatorConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    startup_timeout_s: float = 10.0,
) -> RunningSimulator:
    """Serve a new simulator from a daemon thread; ``port=0`` picks a free port."""
    _require_loopback(host)
    app = build_app(config)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="datadog-simulator", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("the Datadog simulator did not start")
        time.sleep(0.01)
    url_host = f"[{host}]" if ":" in host else host
    return RunningSimulator(base_url=f"http://{url_host}:{bound_port}", app=app, server=server, thread=thread)


@contextmanager
def running(
    config: SimulatorConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> Iterator[RunningSimulator]:
    """``with running(config) as sim:`` — a simulator for the duration of the block."""
    sim = start_in_thread(config, host=host, port=port)
    try:
        yield sim
    finally:
        sim.stop()
