"""The Datadog simulator's data: queues, label schemas, interactions, annotations, and their rules.

Contract: :class:`DatadogStore` holds what a Datadog organisation's LLM Observability annotation
queues hold and enforces the rules the OpenAPI fragment documents, whoever calls it (the HTTP
handlers of :mod:`annotation_gateway.simulators.datadog.api` or a seed file). Every invalid input
raises :class:`SimApiError` carrying JSON:API error items (``status``, ``title``, ``detail``,
``source.pointer``/``source.parameter``); nothing is changed by a call that raises.

Rules enforced (from ``llm-obs-annotations.openapi.yaml``):

- label schema: names unique in the queue and matching ``^[a-zA-Z0-9_-]+$``; type one of
  score/categorical/boolean/text; categorical ``values`` at least one, non-empty, unique;
  score ``min <= max``; ``is_assessment`` only on a boolean label with ``has_assessment``;
  ids kept when given, else reused from the label of the same name, else assigned;
- interactions: ``trace``/``experiment_trace``/``session`` need a ``content_id``;
  ``display_block`` needs a non-empty block list and gets ``content_id`` = SHA-256 of the blocks;
  adding the same (type, content id) to a queue again answers ``already_existed: true``;
- annotations: one per (interaction, user); an upsert replaces that user's label values. Each
  value must match its label: score a number within min/max (an integer when ``is_integer``),
  categorical one or several of ``values`` (stored as a list), boolean ``true``/``false``, text a
  non-empty string; ``assessment`` (pass/fail) only where ``has_assessment``, ``reasoning`` only
  where ``has_reasoning``; ``""``/``[]`` mean "unset" and are allowed for labels that are not
  ``is_required``; required labels must be present. The server stamps ``name_when_saved`` and
  ``type`` from the schema at save time (later renames do not change them).

This module is the other side of the wire from ``providers/``: it never imports from there.
"""

from __future__ import annotations

import copy
import hashlib
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

import orjson

__all__ = [
    "ID_NAMESPACE",
    "INTERACTION_TYPES",
    "LABEL_TYPES",
    "ZERO_TIME",
    "Annotation",
    "DatadogStore",
    "Interaction",
    "Queue",
    "SimApiError",
    "error_item",
    "user_id_for_app_key",
    "user_id_for_name",
]

ID_NAMESPACE = uuid.UUID("6f1d3c52-8a4e-4f0b-9b5e-1d2c3b4a5f60")
"""Namespace of the simulator's derived (uuid5) ids, so that seeds and users are reproducible."""

ZERO_TIME = datetime(1, 1, 1, tzinfo=UTC)
"""Go's zero ``time.Time``: what Datadog sends for an unknown timestamp."""

LABEL_TYPES = ("score", "categorical", "boolean", "text")
TRACE_INTERACTION_TYPES = ("trace", "experiment_trace", "session")
INTERACTION_TYPES = (*TRACE_INTERACTION_TYPES, "display_block")
CONTENT_BLOCK_TYPES = ("markdown", "header", "text", "json", "image", "widget", "llmobs_trace", "frontend")
ASSESSMENTS = ("pass", "fail")
LABEL_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9_-]+$")
INT32_MAX = 2_147_483_647

_LABEL_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "description": (str,),
    "has_assessment": (bool,),
    "has_reasoning": (bool,),
    "id": (str,),
    "is_assessment": (bool,),
    "is_integer": (bool,),
    "is_required": (bool,),
    "max": (int, float),
    "min": (int, float),
    "name": (str,),
    "type": (str,),
    "values": (list,),
}


def user_id_for_app_key(app_key: str) -> str:
    """The user an application key belongs to: the same key is always the same user."""
    return str(uuid.uuid5(ID_NAMESPACE, f"app-key:{app_key}"))


def user_id_for_name(name: str) -> str:
    """A seed file's named user (``"user": "alice"``) as a stable user id."""
    return str(uuid.uuid5(ID_NAMESPACE, f"user:{name}"))


def _now() -> datetime:
    return datetime.now(UTC)


def error_item(
    status: int,
    detail: str,
    *,
    parameter: str | None = None,
    pointer: str | None = None,
) -> dict[str, Any]:
    """One JSON:API error object as Datadog sends it."""
    item: dict[str, Any] = {"status": str(status), "title": HTTPStatus(status).phrase, "detail": detail}
    source: dict[str, str] = {}
    if parameter is not None:
        source["parameter"] = parameter
    if pointer is not None:
        source["pointer"] = pointer
    if source:
        item["source"] = source
    return item


class SimApiError(Exception):
    """A request the simulated Datadog refuses; ``errors`` are JSON:API error objects."""

    def __init__(self, status: int, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"HTTP {status}: {errors}")
        self.status = status
        self.errors = errors

    @classmethod
    def bad_request(
        cls, detail: str, *, pointer: str | None = None, parameter: str | None = None
    ) -> SimApiError:
        return cls(400, [error_item(400, detail, pointer=pointer, parameter=parameter)])

    @classmethod
    def not_found(cls, detail: str) -> SimApiError:
        return cls(404, [error_item(404, detail)])


@dataclass
class Queue:
    id: str
    name: str
    project_id: str
    description: str
    created_by: str
    created_at: datetime
    modified_by: str
    modified_at: datetime
    owned_by: str
    restrict_to_reviewers: bool = False
    restrict_to_assignees: bool = False
    reviewer_emails: list[str] = field(default_factory=list)
    label_schemas: list[dict[str, Any]] = field(default_factory=list)

    def label_by_id(self, label_schema_id: str) -> dict[str, Any] | None:
        return next((s for s in self.label_schemas if s["id"] == label_schema_id), None)

    def label_by_name(self, name: str) -> dict[str, Any] | None:
        return next((s for s in self.label_schemas if s["name"] == name), None)


@dataclass
class Interaction:
    id: str
    queue_id: str
    type: str
    content_id: str
    created_at: datetime
    modified_at: datetime
    display_block: list[Any] | None = None


@dataclass
class Annotation:
    id: str
    interaction_id: str
    created_by: str
    created_at: datetime
    modified_by: str
    modified_at: datetime
    label_values: list[dict[str, Any]]
    """Stored entries: label_schema_id, value, name_when_saved, type, and assessment/reasoning."""


IdFactory = Callable[[str], str]
"""Makes an id from a hint (``queue:<name>``...); uuid4 for API calls, uuid5 for seeds."""


def random_ids(_hint: str) -> str:
    return str(uuid.uuid4())


def derived_ids(hint: str) -> str:
    return str(uuid.uuid5(ID_NAMESPACE, hint))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_unset(value: Any) -> bool:
    return isinstance(value, str | list) and len(value) == 0


def content_id_for_blocks(blocks: Sequence[Any]) -> str:
    """Datadog derives a display block's content id deterministically from its block list."""
    return hashlib.sha256(orjson.dumps(list(blocks), option=orjson.OPT_SORT_KEYS)).hexdigest()


def validate_label_schemas(
    raw: Any,
    *,
    pointer: str,
    previous: Sequence[Mapping[str, Any]] = (),
    make_id: Callable[[str], str] = random_ids,
) -> list[dict[str, Any]]:
    """Check a ``label_schemas`` list and return it as stored (every label with an ``id``)."""
    if not isinstance(raw, list):
        raise SimApiError.bad_request("label_schemas must be an array", pointer=pointer)
    previous_ids = {str(s["name"]): str(s["id"]) for s in previous}
    names: set[str] = set()
    ids: set[str] = set()
    stored: list[dict[str, Any]] = []
    for index, item in enumerate(raw):
        where = f"{pointer}/{index}"
        if not isinstance(item, dict):
            raise SimApiError.bad_request("a label schema must be an object", pointer=where)
        label: dict[str, Any] = {}
        for key, allowed in _LABEL_FIELD_TYPES.items():
            if key not in item or item[key] is None:
                continue
            value = item[key]
            if not isinstance(value, allowed) or (bool not in allowed and isinstance(value, bool)):
                raise SimApiError.bad_request(f"{key} has the wrong type", pointer=f"{where}/{key}")
            label[key] = value
        name = label.get("name")
        if not isinstance(name, str) or not LABEL_NAME_PATTERN.match(name):
            raise SimApiError.bad_request(
                "name is required and must match ^[a-zA-Z0-9_-]+$", pointer=f"{where}/name"
            )
        if name in names:
            raise SimApiError.bad_request(f"label name {name!r} is not unique", pointer=f"{where}/name")
        names.add(name)
        kind = label.get("type")
        if kind not in LABEL_TYPES:
            raise SimApiError.bad_request(
                f"type must be one of {', '.join(LABEL_TYPES)}", pointer=f"{where}/type"
            )
        if kind == "categorical":
            values = label.get("values")
            if (
                not isinstance(values, list)
                or not values
                or not all(isinstance(v, str) and v for v in values)
                or len(set(values)) != len(values)
            ):
                raise SimApiError.bad_request(
                    "values must contain at least one non-empty, unique value", pointer=f"{where}/values"
                )
        elif "values" in label:
            raise SimApiError.bad_request(
                "values apply to categorical labels only", pointer=f"{where}/values"
            )
        if kind == "score":
            low, high = label.get("min"), label.get("max")
            if low is not None and high is not None and low > high:
                raise SimApiError.bad_request("min must not exceed max", pointer=f"{where}/min")
        if label.get("is_assessment") and (kind != "boolean" or not label.get("has_assessment")):
            raise SimApiError.bad_request(
                "is_assessment requires a boolean label with has_assessment", pointer=f"{where}/is_assessment"
            )
        label_id = label.get("id") or previous_ids.get(name) or make_id(f"label:{name}")
        if label_id in ids:
            raise SimApiError.bad_request(f"label id {label_id!r} is not unique", pointer=f"{where}/id")
        ids.add(label_id)
        label["id"] = label_id
        stored.append(label)
    return stored


def validate_label_value(
    label: Mapping[str, Any], entry: Mapping[str, Any], *, pointer: str
) -> dict[str, Any]:
    """Check one submitted label value against its label schema; return the stored entry."""
    kind = label["type"]
    value = entry["value"]
    if _is_unset(value):
        if label.get("is_required"):
            raise SimApiError.bad_request(f"label {label['name']!r} is required", pointer=f"{pointer}/value")
    elif kind == "score":
        if not _is_number(value):
            raise SimApiError.bad_request("a score value must be a number", pointer=f"{pointer}/value")
        if label.get("is_integer") and float(value) != int(value):
            raise SimApiError.bad_request("this score must be an integer", pointer=f"{pointer}/value")
        low, high = label.get("min"), label.get("max")
        if (low is not None and value < low) or (high is not None and value > high):
            raise SimApiError.bad_request(
                f"score {value} is outside [{low}, {high}]", pointer=f"{pointer}/value"
            )
    elif kind == "categorical":
        chosen = [value] if isinstance(value, str) else value
        if not isinstance(chosen, list) or not all(isinstance(v, str) for v in chosen):
            raise SimApiError.bad_request(
                "a categorical value must be a string or an array of strings", pointer=f"{pointer}/value"
            )
        unknown = [v for v in chosen if v not in label.get("values", [])]
        if unknown:
            raise SimApiError.bad_request(
                f"{unknown[0]!r} is not one of the label's values", pointer=f"{pointer}/value"
            )
        if len(set(chosen)) != len(chosen):
            raise SimApiError.bad_request("categorical values must be unique", pointer=f"{pointer}/value")
        # Datadog answers categorical values as lists, whichever form was sent.
        value = list(chosen)
    elif kind == "boolean":
        if not isinstance(value, bool):
            raise SimApiError.bad_request("a boolean value must be true or false", pointer=f"{pointer}/value")
    elif not isinstance(value, str):
        raise SimApiError.bad_request("a text value must be a non-empty string", pointer=f"{pointer}/value")
    stored: dict[str, Any] = {
        "label_schema_id": label["id"],
        "name_when_saved": label["name"],
        "type": kind,
        "value": value,
    }
    assessment = entry.get("assessment")
    if assessment is not None:
        if not label.get("has_assessment"):
            raise SimApiError.bad_request("this label has no assessment", pointer=f"{pointer}/assessment")
        if assessment not in ASSESSMENTS:
            raise SimApiError.bad_request("assessment must be pass or fail", pointer=f"{pointer}/assessment")
        stored["assessment"] = assessment
    reasoning = entry.get("reasoning")
    if reasoning is not None:
        if not label.get("has_reasoning"):
            raise SimApiError.bad_request("this label has no reasoning", pointer=f"{pointer}/reasoning")
        if not isinstance(reasoning, str):
            raise SimApiError.bad_request("reasoning must be a string", pointer=f"{pointer}/reasoning")
        stored["reasoning"] = reasoning
    return stored


def validate_label_values(queue: Queue, raw: Any, *, pointer: str) -> list[dict[str, Any]]:
    """Check an upsert's ``label_values`` array against the queue's label schema."""
    if not isinstance(raw, list) or not raw:
        raise SimApiError.bad_request("label_values must be a non-empty array", pointer=pointer)
    stored: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, entry in enumerate(raw):
        where = f"{pointer}/{index}"
        if not isinstance(entry, dict):
            raise SimApiError.bad_request("a label value must be an object", pointer=where)
        label_id = entry.get("label_schema_id")
        if not isinstance(label_id, str) or not label_id:
            raise SimApiError.bad_request("label_schema_id is required", pointer=f"{where}/label_schema_id")
        if "value" not in entry or entry["value"] is None:
            raise SimApiError.bad_request("value is required", pointer=f"{where}/value")
        label = queue.label_by_id(label_id)
        if label is None:
            raise SimApiError.bad_request(
                f"unknown label_schema_id {label_id!r} for this queue", pointer=f"{where}/label_schema_id"
            )
        if label_id in seen:
            raise SimApiError.bad_request(
                f"label_schema_id {label_id!r} given twice", pointer=f"{where}/label_schema_id"
            )
        seen.add(label_id)
        stored.append(validate_label_value(label, entry, pointer=where))
    missing = [s["name"] for s in queue.label_schemas if s.get("is_required") and s["id"] not in seen]
    if missing:
        raise SimApiError.bad_request(f"required label {missing[0]!r} is missing", pointer=pointer)
    return stored


def _parse_time(value: Any, *, pointer: str) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str):
        raise SimApiError.bad_request("a timestamp must be an RFC 3339 string", pointer=pointer)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise SimApiError.bad_request(f"invalid timestamp {value!r}", pointer=pointer) from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class DatadogStore:
    """One simulated organisation's annotation queues. Thread-safe; every call is atomic."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.queues: dict[str, Queue] = {}
        self.interactions: dict[str, Interaction] = {}
        self.annotations: dict[str, dict[str, Annotation]] = {}
        """By interaction id, then user id: Datadog keeps one annotation per (interaction, user)."""

    # --- queues ---------------------------------------------------------------------------

    def clear(self) -> None:
        with self._lock:
            self.queues.clear()
            self.interactions.clear()
            self.annotations.clear()

    def list_queues(self, *, project_id: str | None = None, queue_ids: Sequence[str] = ()) -> list[Queue]:
        with self._lock:
            queues = list(self.queues.values())
        if project_id is not None:
            queues = [q for q in queues if q.project_id == project_id]
        if queue_ids:
            wanted = set(queue_ids)
            queues = [q for q in queues if q.id in wanted]
        return queues

    def get_queue(self, queue_id: str) -> Queue:
        with self._lock:
            queue = self.queues.get(queue_id)
        if queue is None:
            raise SimApiError.not_found(f"annotation queue {queue_id} not found")
        return queue

    def create_queue(
        self,
        attributes: Mapping[str, Any],
        *,
        user_id: str,
        pointer: str = "/data/attributes",
        make_id: IdFactory = random_ids,
        queue_id: str | None = None,
    ) -> Queue:
        name = attributes.get("name")
        if not isinstance(name, str) or not name.strip():
            raise SimApiError.bad_request("name is required", pointer=f"{pointer}/name")
        project_id = attributes.get("project_id")
        if not isinstance(project_id, str) or not project_id:
            raise SimApiError.bad_request("project_id is required", pointer=f"{pointer}/project_id")
        now = _now()
        new_id = queue_id or make_id(f"queue:{name}")
        queue = Queue(
            id=new_id,
            name=name,
            project_id=project_id,
            description="",
            created_by=user_id,
            created_at=now,
            modified_by=user_id,
            modified_at=now,
            owned_by=user_id,
        )
        self._apply_queue_attributes(queue, attributes, pointer=pointer, make_id=_scoped(make_id, new_id))
        with self._lock:
            if new_id in self.queues:
                raise SimApiError(409, [error_item(409, f"annotation queue {new_id} already exists")])
            self.queues[new_id] = queue
        return queue

    def update_queue(
        self,
        queue_id: str,
        attributes: Mapping[str, Any],
        *,
        user_id: str,
        make_id: IdFactory = random_ids,
    ) -> Queue:
        with self._lock:
            queue = self.get_queue(queue_id)
            name = attributes.get("name", queue.name)
            if not isinstance(name, str) or not name.strip():
                raise SimApiError.bad_request(
                    "name must be a non-empty string", pointer="/data/attributes/name"
                )
            updated = Queue(**{**queue.__dict__, "reviewer_emails": list(queue.reviewer_emails)})
            updated.name = name
            self._apply_queue_attributes(
                updated, attributes, pointer="/data/attributes", make_id=_scoped(make_id, queue_id)
            )
            updated.modified_by = user_id
            updated.modified_at = _now()
            self.queues[queue_id] = updated
            return updated

    @staticmethod
    def _apply_queue_attributes(
        queue: Queue, attributes: Mapping[str, Any], *, pointer: str, make_id: Callable[[str], str]
    ) -> None:
        description = attributes.get("description")
        if description is not None:
            if not isinstance(description, str):
                raise SimApiError.bad_request(
                    "description must be a string", pointer=f"{pointer}/description"
                )
            queue.description = description
        for key in ("restrict_to_reviewers", "restrict_to_assignees"):
            flag = attributes.get(key)
            if flag is not None:
                if not isinstance(flag, bool):
                    raise SimApiError.bad_request(f"{key} must be a boolean", pointer=f"{pointer}/{key}")
                setattr(queue, key, flag)
        emails = attributes.get("reviewer_emails")
        if emails is not None:
            if not isinstance(emails, list) or not all(isinstance(e, str) for e in emails):
                raise SimApiError.bad_request(
                    "reviewer_emails must be an array of strings", pointer=f"{pointer}/reviewer_emails"
                )
            queue.reviewer_emails = list(emails)
        schema = attributes.get("annotation_schema")
        if schema is not None:
            if not isinstance(schema, dict) or "label_schemas" not in schema:
                raise SimApiError.bad_request(
                    "annotation_schema.label_schemas is required", pointer=f"{pointer}/annotation_schema"
                )
            queue.label_schemas = validate_label_schemas(
                schema["label_schemas"],
                pointer=f"{pointer}/annotation_schema/label_schemas",
                previous=queue.label_schemas,
                make_id=make_id,
            )

    def delete_queue(self, queue_id: str) -> None:
        with self._lock:
            self.get_queue(queue_id)
            del self.queues[queue_id]
            gone = {i.id for i in self.interactions.values() if i.queue_id == queue_id}
            self._forget_interactions(gone)

    def replace_label_schema(
        self, queue_id: str, label_schemas: Any, *, user_id: str, make_id: IdFactory = random_ids
    ) -> Queue:
        with self._lock:
            queue = self.get_queue(queue_id)
            queue.label_schemas = validate_label_schemas(
                label_schemas,
                pointer="/data/attributes/annotation_schema/label_schemas",
                previous=queue.label_schemas,
                make_id=_scoped(make_id, queue_id),
            )
            queue.modified_by = user_id
            queue.modified_at = _now()
            return queue

    # --- interactions ---------------------------------------------------------------------

    def add_interactions(
        self,
        queue_id: str,
        items: Any,
        *,
        pointer: str = "/data/attributes/interactions",
        make_id: IdFactory = random_ids,
        created_at: Sequence[datetime | None] | None = None,
        item_pointer: str | None = None,
    ) -> list[tuple[Interaction, bool]]:
        """Add interactions; returns each with ``already_existed``. All-or-nothing on errors.

        ``item_pointer`` names a single item in errors (a seed entry) instead of ``pointer/i``.
        """
        if not isinstance(items, list) or not items:
            raise SimApiError.bad_request("interactions must contain at least one item", pointer=pointer)
        with self._lock:
            self.get_queue(queue_id)
            planned: list[tuple[str, str, list[Any] | None]] = []
            for index, item in enumerate(items):
                planned.append(_check_interaction(item, pointer=item_pointer or f"{pointer}/{index}"))
            existing = {
                (i.type, i.content_id): i for i in self.interactions.values() if i.queue_id == queue_id
            }
            results: list[tuple[Interaction, bool]] = []
            for index, (kind, content_id, blocks) in enumerate(planned):
                found = existing.get((kind, content_id))
                if found is not None:
                    results.append((found, True))
                    continue
                stamp = (created_at[index] if created_at else None) or _now()
                interaction = Interaction(
                    id=make_id(f"interaction:{queue_id}:{kind}:{content_id}"),
                    queue_id=queue_id,
                    type=kind,
                    content_id=content_id,
                    created_at=stamp,
                    modified_at=stamp,
                    display_block=blocks,
                )
                self.interactions[interaction.id] = interaction
                existing[(kind, content_id)] = interaction
                results.append((interaction, False))
            return results

    def delete_interactions(self, queue_id: str, interaction_ids: Any) -> None:
        pointer = "/data/attributes/interaction_ids"
        if (
            not isinstance(interaction_ids, list)
            or not interaction_ids
            or not all(isinstance(i, str) for i in interaction_ids)
        ):
            raise SimApiError.bad_request("interaction_ids must contain at least one id", pointer=pointer)
        with self._lock:
            self.get_queue(queue_id)
            gone = {
                i
                for i in interaction_ids
                if i in self.interactions and self.interactions[i].queue_id == queue_id
            }
            self._forget_interactions(gone)

    def _forget_interactions(self, gone: set[str]) -> None:
        for interaction_id in gone:
            self.interactions.pop(interaction_id, None)
            self.annotations.pop(interaction_id, None)

    def queue_interactions(self, queue_id: str) -> list[Interaction]:
        with self._lock:
            self.get_queue(queue_id)
            return [i for i in self.interactions.values() if i.queue_id == queue_id]

    def get_interaction(self, queue_id: str, interaction_id: str) -> Interaction:
        with self._lock:
            self.get_queue(queue_id)
            interaction = self.interactions.get(interaction_id)
        if interaction is None or interaction.queue_id != queue_id:
            raise SimApiError.not_found(f"interaction {interaction_id} not found in queue {queue_id}")
        return interaction

    def interactions_for_contents(self, content_ids: Iterable[str]) -> list[Interaction]:
        """Every interaction, in every queue, whose content id is one of ``content_ids``.

        Ordered by interaction id: stable across calls (so offset paging is consistent) but not
        the order of insertion or of the request, since Datadog documents no order.
        """
        wanted = set(content_ids)
        with self._lock:
            found = [i for i in self.interactions.values() if i.content_id in wanted]
        return sorted(found, key=lambda i: i.id)

    def annotations_of(self, interaction_id: str) -> list[Annotation]:
        with self._lock:
            found = list(self.annotations.get(interaction_id, {}).values())
        return sorted(found, key=lambda a: (a.created_at, a.id))

    # --- annotations ----------------------------------------------------------------------

    def upsert_annotations(
        self,
        queue_id: str,
        items: Any,
        *,
        user_id: str,
        pointer: str = "/data/attributes/annotations",
        make_id: IdFactory = random_ids,
        timestamps: Sequence[tuple[datetime | None, datetime | None]] | None = None,
        item_pointer: str | None = None,
    ) -> tuple[list[Annotation], list[dict[str, Any]]]:
        """Create or replace ``user_id``'s annotation on each interaction.

        Returns the written annotations and per-item errors (unknown interaction); an invalid
        value anywhere rejects the whole batch (400) before anything is written.
        """
        if not isinstance(items, list) or not items:
            raise SimApiError.bad_request("annotations must contain at least one item", pointer=pointer)
        with self._lock:
            queue = self.get_queue(queue_id)
            planned: list[tuple[str, list[dict[str, Any]]] | None] = []
            errors: list[dict[str, Any]] = []
            for index, item in enumerate(items):
                where = item_pointer or f"{pointer}/{index}"
                if not isinstance(item, dict):
                    raise SimApiError.bad_request("an annotation must be an object", pointer=where)
                interaction_id = item.get("interaction_id")
                if not isinstance(interaction_id, str) or not interaction_id:
                    raise SimApiError.bad_request(
                        "interaction_id is required", pointer=f"{where}/interaction_id"
                    )
                values = validate_label_values(
                    queue, item.get("label_values"), pointer=f"{where}/label_values"
                )
                interaction = self.interactions.get(interaction_id)
                if interaction is None or interaction.queue_id != queue_id:
                    errors.append({"interaction_id": interaction_id, "error": "interaction not found"})
                    planned.append(None)
                    continue
                planned.append((interaction_id, values))
            written: list[Annotation] = []
            for index, plan in enumerate(planned):
                if plan is None:
                    continue
                interaction_id, values = plan
                created, modified = timestamps[index] if timestamps else (None, None)
                now = _now()
                per_user = self.annotations.setdefault(interaction_id, {})
                previous = per_user.get(user_id)
                annotation = Annotation(
                    id=previous.id if previous else make_id(f"annotation:{interaction_id}:{user_id}"),
                    interaction_id=interaction_id,
                    created_by=previous.created_by if previous else user_id,
                    created_at=created or (previous.created_at if previous else now),
                    modified_by=user_id,
                    modified_at=modified or created or now,
                    label_values=values,
                )
                per_user[user_id] = annotation
                written.append(annotation)
            return written, errors

    def delete_annotations(
        self, queue_id: str, annotation_ids: Any
    ) -> tuple[list[str], list[dict[str, Any]]]:
        pointer = "/data/attributes/annotation_ids"
        if (
            not isinstance(annotation_ids, list)
            or not annotation_ids
            or not all(isinstance(i, str) for i in annotation_ids)
        ):
            raise SimApiError.bad_request("annotation_ids must contain at least one id", pointer=pointer)
        with self._lock:
            self.get_queue(queue_id)
            by_id = {
                a.id: (interaction_id, user_id)
                for interaction_id, per_user in self.annotations.items()
                if self.interactions[interaction_id].queue_id == queue_id
                for user_id, a in per_user.items()
            }
            deleted: list[str] = []
            errors: list[dict[str, Any]] = []
            for annotation_id in annotation_ids:
                key = by_id.pop(annotation_id, None)
                if key is None:
                    errors.append({"annotation_id": annotation_id, "error": "annotation not found"})
                    continue
                del self.annotations[key[0]][key[1]]
                deleted.append(annotation_id)
            return deleted, errors

    # --- seed files -----------------------------------------------------------------------

    def load_seed(self, doc: Any, *, default_user: str) -> dict[str, Any]:
        """Load a seed document (see the simulator's module docstring); returns what was made.

        Ids not given in the seed are derived (uuid5) from names, so the same seed always
        produces the same ids. Re-loading merges: existing queues get the new label schema (if
        given), new interactions are added and annotations upserted.
        """
        if not isinstance(doc, dict) or not isinstance(doc.get("queues"), list):
            raise SimApiError.bad_request('a seed is an object with a "queues" array', pointer="/queues")
        with self._lock:
            # A seed loads whole or not at all: a bad entry deep in a file must not leave half of it.
            snapshot = copy.deepcopy((self.queues, self.interactions, self.annotations))
            try:
                return self._load_seed(doc["queues"], default_user=default_user)
            except BaseException:
                self.queues, self.interactions, self.annotations = snapshot
                raise

    def _load_seed(self, queues: list[Any], *, default_user: str) -> dict[str, Any]:
        summary: list[dict[str, Any]] = []
        counts = {"queues": 0, "interactions": 0, "annotations": 0}
        for qi, raw_queue in enumerate(queues):
            where = f"/queues/{qi}"
            if not isinstance(raw_queue, dict):
                raise SimApiError.bad_request("a queue must be an object", pointer=where)
            queue = self._seed_queue(raw_queue, where=where, default_user=default_user)
            counts["queues"] += 1
            raw_interactions = raw_queue.get("interactions", [])
            if not isinstance(raw_interactions, list):
                raise SimApiError.bad_request(
                    "interactions must be an array", pointer=f"{where}/interactions"
                )
            for ii, raw_interaction in enumerate(raw_interactions):
                iwhere = f"{where}/interactions/{ii}"
                if not isinstance(raw_interaction, dict):
                    raise SimApiError.bad_request("an interaction must be an object", pointer=iwhere)
                self._seed_interaction(queue, raw_interaction, where=iwhere, default_user=default_user)
                counts["interactions"] += 1
                counts["annotations"] += len(raw_interaction.get("annotations") or [])
            summary.append(
                {
                    "id": queue.id,
                    "name": queue.name,
                    "label_schemas": {s["name"]: s["id"] for s in queue.label_schemas},
                }
            )
        return {"queues": summary, "counts": counts}

    def _seed_queue(self, raw: Mapping[str, Any], *, where: str, default_user: str) -> Queue:
        queue_id = raw.get("id")
        if queue_id is not None and not isinstance(queue_id, str):
            raise SimApiError.bad_request("id must be a string", pointer=f"{where}/id")
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            raise SimApiError.bad_request("name is required", pointer=f"{where}/name")
        queue_id = queue_id or derived_ids(f"queue:{name}")
        attributes: dict[str, Any] = {
            "name": name,
            "project_id": raw.get("project_id", "default-project"),
            "description": raw.get("description", ""),
        }
        if "label_schemas" in raw:
            attributes["annotation_schema"] = {"label_schemas": raw["label_schemas"]}
        if queue_id in self.queues:
            return self.update_queue(queue_id, attributes, user_id=default_user, make_id=derived_ids)
        return self.create_queue(
            attributes, user_id=default_user, pointer=where, make_id=derived_ids, queue_id=queue_id
        )

    def _seed_interaction(
        self, queue: Queue, raw: Mapping[str, Any], *, where: str, default_user: str
    ) -> None:
        item = {k: raw[k] for k in ("type", "content_id", "display_block") if k in raw}
        stamp = _parse_time(raw["created_at"], pointer=f"{where}/created_at") if "created_at" in raw else None
        make_id = _fixed_id(str(raw["id"])) if "id" in raw else derived_ids
        # add_interactions wants a list; a seed entry is one interaction.
        [(interaction, _)] = self.add_interactions(
            queue.id, [item], item_pointer=where, make_id=make_id, created_at=[stamp]
        )
        annotations = raw.get("annotations") or []
        if not isinstance(annotations, list):
            raise SimApiError.bad_request("annotations must be an array", pointer=f"{where}/annotations")
        for ai, raw_annotation in enumerate(annotations):
            self._seed_annotation(
                queue,
                interaction,
                raw_annotation,
                where=f"{where}/annotations/{ai}",
                default_user=default_user,
            )

    def _seed_annotation(
        self, queue: Queue, interaction: Interaction, raw: Any, *, where: str, default_user: str
    ) -> None:
        if not isinstance(raw, dict):
            raise SimApiError.bad_request("an annotation must be an object", pointer=where)
        if "created_by" in raw:
            user = str(raw["created_by"])
        elif "app_key" in raw:
            user = user_id_for_app_key(str(raw["app_key"]))
        elif "user" in raw:
            user = user_id_for_name(str(raw["user"]))
        else:
            user = default_user
        entries = _seed_label_values(queue, raw.get("label_values"), where=f"{where}/label_values")
        created = (
            _parse_time(raw["created_at"], pointer=f"{where}/created_at") if "created_at" in raw else None
        )
        modified = (
            _parse_time(raw["modified_at"], pointer=f"{where}/modified_at") if "modified_at" in raw else None
        )
        make_id = _fixed_id(str(raw["id"])) if "id" in raw else derived_ids
        _, errors = self.upsert_annotations(
            queue.id,
            [{"interaction_id": interaction.id, "label_values": entries}],
            user_id=user,
            item_pointer=where,
            make_id=make_id,
            timestamps=[(created, modified)],
        )
        assert not errors, errors  # the interaction was just added to this queue


def _fixed_id(value: str) -> IdFactory:
    return lambda _hint: value


def _scoped(make_id: IdFactory, queue_id: str) -> IdFactory:
    """Label ids derived per queue, so two queues' ``quality`` labels get different ids."""
    return lambda hint: make_id(f"{queue_id}:{hint}")


def _seed_label_values(queue: Queue, raw: Any, *, where: str) -> list[dict[str, Any]]:
    """A seed's label values, by name (``{"quality": 4}``) or as entries, as upsert entries."""
    if isinstance(raw, dict):
        raw = [{"label": name, "value": value} for name, value in raw.items()]
    if not isinstance(raw, list):
        raise SimApiError.bad_request("label_values must be an object or an array", pointer=where)
    entries: list[dict[str, Any]] = []
    for index, entry in enumerate(raw):
        if not isinstance(entry, dict):
            raise SimApiError.bad_request("a label value must be an object", pointer=f"{where}/{index}")
        entry = dict(entry)
        if "label" in entry:
            label = queue.label_by_name(str(entry.pop("label")))
            if label is None:
                raise SimApiError.bad_request(
                    "no label of that name in the queue's schema", pointer=f"{where}/{index}/label"
                )
            entry["label_schema_id"] = label["id"]
        entries.append(entry)
    return entries


def _check_interaction(item: Any, *, pointer: str) -> tuple[str, str, list[Any] | None]:
    if not isinstance(item, dict):
        raise SimApiError.bad_request("an interaction must be an object", pointer=pointer)
    kind = item.get("type")
    if kind not in INTERACTION_TYPES:
        raise SimApiError.bad_request(
            f"type must be one of {', '.join(INTERACTION_TYPES)}", pointer=f"{pointer}/type"
        )
    if kind == "display_block":
        if "content_id" in item:
            raise SimApiError.bad_request(
                "omit content_id for a display_block: the server derives it", pointer=f"{pointer}/content_id"
            )
        blocks = item.get("display_block")
        if not isinstance(blocks, list) or not blocks:
            raise SimApiError.bad_request(
                "display_block must contain at least one block", pointer=f"{pointer}/display_block"
            )
        for index, block in enumerate(blocks):
            if not isinstance(block, dict) or block.get("type") not in CONTENT_BLOCK_TYPES:
                raise SimApiError.bad_request(
                    "each block needs a valid type", pointer=f"{pointer}/display_block/{index}/type"
                )
            if block["type"] == "frontend" and not (isinstance(block.get("code"), str) and block["code"]):
                raise SimApiError.bad_request(
                    "a frontend block needs code", pointer=f"{pointer}/display_block/{index}/code"
                )
        return kind, content_id_for_blocks(blocks), list(blocks)
    content_id = item.get("content_id")
    if not isinstance(content_id, str) or not content_id:
        raise SimApiError.bad_request("content_id is required", pointer=f"{pointer}/content_id")
    return kind, content_id, None
