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
clients must resolve names through the label schema), ``latency_ms`` (every API answer leaves
that long after its request arrived: worked out on arrival, then held), ``fail_rate`` and
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

One module per job: :mod:`.config` (settings, switches, the wire's constants), :mod:`.store` (the
organisation's data and Datadog's rules), :mod:`.state` (one simulator's store, switches, rate
window and request log), :mod:`.render` (the wire shapes), :mod:`.api` (the 13 operations),
:mod:`.control` (``/_simulator``) and :mod:`.app` (the ASGI app and how it runs); what the tests,
the demo and the CLI use is re-exported here.

This package never imports from ``providers/``: it is the other side of the wire.
"""

from __future__ import annotations

from annotation_gateway.simulators.datadog.app import (
    RunningSimulator,
    build_app,
    running,
    serve,
    start_in_thread,
)
from annotation_gateway.simulators.datadog.config import (
    API_PREFIX,
    CONTROL_PREFIX,
    DEFAULT_PORT,
    JSONAPI_CONTENT_TYPE,
    RateLimit,
    SimulatorConfig,
    Switches,
    make_config,
)
from annotation_gateway.simulators.datadog.state import RequestRecord, SimulatorState

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
