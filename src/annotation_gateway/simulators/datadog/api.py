"""The simulator's Datadog API.

Contract: the 13 Datadog operations (package docstring): each request's parameters and body read
and checked as Datadog does, the store called, the answer rendered; authentication, latency,
faults and the rate limit applied to every API request.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.requests import Request
from starlette.responses import Response

from annotation_gateway.simulators.datadog.config import API_PREFIX, JSONAPI_CONTENT_TYPE, Switches
from annotation_gateway.simulators.datadog.render import (
    bare_errors,
    error_response,
    format_time,
    render_annotation,
    render_interaction,
    render_label_schema,
    render_queue,
    vnd_json,
)
from annotation_gateway.simulators.datadog.state import RequestRecord, SimulatorState
from annotation_gateway.simulators.datadog.store import (
    ID_NAMESPACE,
    INT32_MAX,
    SimApiError,
    error_item,
    user_id_for_app_key,
)

_INTEGER_PATTERN = re.compile(r"^[+-]?\d+$")


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
                    render_interaction(call.state, i, with_queue=True, sw=call.switches) for i in page
                ],
                "total_count": len(matches),
            },
        }
    }
    return vnd_json(body)


async def list_queues(call: Call) -> Response:
    """ListLLMObsAnnotationQueues."""
    project_id = call.request.query_params.get("projectId")
    raw_ids = call.request.query_params.getlist("queueIds")
    # The spec text says comma-separated, the official client repeats the key: accept both.
    queue_ids = [part for value in raw_ids for part in value.split(",") if part]
    if project_id is not None and raw_ids:
        raise SimApiError.bad_request("projectId and queueIds are mutually exclusive", parameter="queueIds")
    queues = call.state.store.list_queues(project_id=project_id, queue_ids=queue_ids)
    return vnd_json({"data": [render_queue(q) for q in queues]})


async def create_queue(call: Call) -> Response:
    """CreateLLMObsAnnotationQueue."""
    attributes = await _read_attributes(call, "queues")
    queue = call.state.store.create_queue(attributes, user_id=call.user_id)
    return vnd_json({"data": render_queue(queue)}, 201)


async def update_queue(call: Call) -> Response:
    """UpdateLLMObsAnnotationQueue."""
    attributes = await _read_attributes(call, "queues")
    queue = call.state.store.update_queue(call.params["queue_id"], attributes, user_id=call.user_id)
    return vnd_json({"data": render_queue(queue)})


async def delete_queue(call: Call) -> Response:
    """DeleteLLMObsAnnotationQueue."""
    call.state.store.delete_queue(call.params["queue_id"])
    return Response(status_code=204)


async def get_queue_interactions(call: Call) -> Response:
    """GetLLMObsAnnotatedInteractions: every interaction of one queue."""
    queue_id = call.params["queue_id"]
    interactions = call.state.store.queue_interactions(queue_id)
    items = [render_interaction(call.state, i, with_queue=False, sw=call.switches) for i in interactions]
    return vnd_json(
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
    item = render_interaction(call.state, interaction, with_queue=False, sw=call.switches)
    # The single-interaction item requires timestamps whatever its type.
    item.setdefault("created_at", format_time(interaction.created_at))
    item.setdefault("modified_at", format_time(interaction.modified_at))
    attributes = {"annotated_interaction": item, "interaction_type": interaction.type, "events": []}
    return vnd_json(
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
        "annotations": [render_annotation(a, queue, call.switches, read=False) for a in written]
    }
    if errors:
        body_attributes["errors"] = errors
    return vnd_json({"data": {"id": queue_id, "type": "annotations", "attributes": body_attributes}})


async def delete_annotations(call: Call) -> Response:
    """DeleteLLMObsAnnotations."""
    queue_id = call.params["queue_id"]
    attributes = await _read_attributes(call, "annotations")
    deleted, errors = call.state.store.delete_annotations(queue_id, attributes.get("annotation_ids"))
    return vnd_json(
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
    return vnd_json(
        {"data": {"id": queue_id, "type": "interactions", "attributes": {"interactions": items}}}, 201
    )


async def delete_interactions(call: Call) -> Response:
    """DeleteLLMObsAnnotationQueueInteractions."""
    attributes = await _read_attributes(call, "interactions")
    call.state.store.delete_interactions(call.params["queue_id"], attributes.get("interaction_ids"))
    return Response(status_code=204)


async def get_label_schema(call: Call) -> Response:
    """GetLLMObsAnnotationQueueLabelSchema."""
    return vnd_json(render_label_schema(call.state.store.get_queue(call.params["queue_id"])))


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
    return vnd_json(render_label_schema(queue))


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


async def handle_api(request: Request) -> Response:
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
    """The answer, sent ``latency_ms`` after the request arrived (as from a server elsewhere).

    The answer is worked out first and held until then. Sleeping first and working after added
    the simulator's own queue to the latency: 16 requests arriving together (16 clients of a
    gateway in step) were worked through one after another once their sleeps ended, ~0.3 ms each
    here, so "100 ms" answered in 104 ms at the median (wrk, 16 connections, straight at it) where
    one client got 101. The arrival is taken before any of them is worked on (each request's
    first step only notes it and yields)."""
    sw = state.switches
    if not sw.latency_ms:
        return await _operate(state, request, sw)
    due = time.monotonic() + sw.latency_ms / 1000
    await asyncio.sleep(0)
    response = await _operate(state, request, sw)
    delay = due - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
    return response


async def _operate(state: SimulatorState, request: Request, sw: Switches) -> Response:
    failure = state._should_fail()
    if failure is not None:
        return vnd_json({"errors": [error_item(failure, "simulated failure")]}, failure)
    path = request.url.path
    for pattern, methods in ROUTES:
        match = pattern.match(path)
        if match is None:
            continue
        operation = methods.get(request.method)
        if operation is None:
            return bare_errors(405, "Method Not Allowed", {"Allow": ", ".join(sorted(methods))})
        user_id = _authenticate(state, request)
        if user_id is None:
            return bare_errors(403, "Forbidden")
        allowed, limit_headers = state._take_rate_limit()
        if not allowed:
            return bare_errors(429, "Too many requests", limit_headers)
        call = Call(request=request, state=state, user_id=user_id, params=match.groupdict(), switches=sw)
        try:
            response = await operation(call)
        except SimApiError as exc:
            response = error_response(exc)
        response.headers.update(limit_headers)
        return response
    return bare_errors(404, "Not found")
