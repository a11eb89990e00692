"""The simulator's wire shapes.

Contract: the store's objects as Datadog writes them on the wire (interactions, annotations and
their label values in either form, queues, label schemas) and the JSON:API answers.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.responses import Response

from annotation_gateway.simulators.datadog.config import JSONAPI_CONTENT_TYPE, Switches
from annotation_gateway.simulators.datadog.state import SimulatorState
from annotation_gateway.simulators.datadog.store import (
    ZERO_TIME,
    Annotation,
    Interaction,
    Queue,
    SimApiError,
)


def format_time(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def vnd_json(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, headers=headers, media_type=JSONAPI_CONTENT_TYPE)


def error_response(exc: SimApiError, headers: Mapping[str, str] | None = None) -> Response:
    return vnd_json({"errors": exc.errors}, exc.status, headers)


def bare_errors(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    """Datadog's other error shape: an array of strings (403, 404, 429)."""
    return vnd_json({"errors": [message]}, status, headers)


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


def render_annotation(
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


def render_interaction(
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
        render_annotation(a, queue, sw, read=True) for a in state.store.annotations_of(interaction.id)
    ]
    return item


def render_queue(queue: Queue) -> dict[str, Any]:
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


def render_label_schema(queue: Queue) -> dict[str, Any]:
    return {
        "data": {
            "id": queue.id,
            "type": "queues",
            "attributes": {"annotation_schema": {"label_schemas": [dict(s) for s in queue.label_schemas]}},
        }
    }
