"""Datadog's annotation-queue write API, as its own class: what ``migrate`` (and the demo) write
through, reached as ``DatadogProvider.queues``.

Contract: :class:`DatadogQueues` follows the OpenAPI fragment's paths and bodies
(``tests/fixtures/contracts/datadog``), one method per operation:

- :meth:`~DatadogQueues.list_queues` (``ListLLMObsAnnotationQueues``), retried;
- :meth:`~DatadogQueues.read_queue` (``GetLLMObsAnnotatedInteractions``): a queue whole, what
  scope discovery reads, retried;
- :meth:`~DatadogQueues.create_queue` (``CreateLLMObsAnnotationQueue``), not retried: a retry
  could create a second queue;
- :meth:`~DatadogQueues.delete_queue` (``DeleteLLMObsAnnotationQueue``), not retried;
- :meth:`~DatadogQueues.get_label_schema` (``GetLLMObsAnnotationQueueLabelSchema``), retried;
- :meth:`~DatadogQueues.replace_label_schema` (``UpdateLLMObsAnnotationQueueLabelSchema``): the
  whole schema, idempotent, so retried;
- :meth:`~DatadogQueues.add_interactions` (``CreateLLMObsAnnotationQueueInteractions``): retried,
  a repeat answers ``already_existed``;
- :meth:`~DatadogQueues.upsert_annotations` (``UpsertLLMObsAnnotations``): keyed by interaction
  and the key's user, so retried; per-item failures come back in ``UpsertResult.errors``.

Every answer is validated against :mod:`.wire`; failures are the toolkit's ``SourceError``s. A
label schema read or written here becomes the provider's cached copy for that queue (the read
path names label values by it), and deleting a queue drops that copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from annotation_gateway.providers.datadog.api import QUEUES_PATH, DatadogApi, segment
from annotation_gateway.providers.datadog.mapping import QueueLabels
from annotation_gateway.providers.datadog.wire import (
    INTERACTIONS_RESPONSE,
    LABEL_SCHEMA_RESPONSE,
    QUEUE_CONTENTS,
    QUEUE_LIST,
    QUEUE_RESPONSE,
    UPSERT_RESPONSE,
    AnnotationUpsert,
    DatadogQueue,
    LabelSchema,
    QueueInteraction,
    UpsertResult,
    WireQueueItem,
    dump_label,
    queue_of,
)

__all__ = ["DatadogQueues"]


class DatadogQueues:
    """One Datadog organisation's annotation queues (module docstring)."""

    def __init__(self, api: DatadogApi, labels: dict[str, QueueLabels]) -> None:
        self._api = api
        self._labels = labels
        """The provider's label-schema cache, by queue id (shared, not copied)."""

    @property
    def name(self) -> str:
        """The source these queues belong to."""
        return self._api.source

    async def list_queues(
        self, *, project_id: str | None = None, queue_ids: Sequence[str] = ()
    ) -> list[DatadogQueue]:
        """``ListLLMObsAnnotationQueues``; ``project_id`` and ``queue_ids`` are exclusive."""
        params: list[tuple[str, str]] = [("queueIds", q) for q in queue_ids]
        if project_id is not None:
            params.append(("projectId", project_id))
        body = await self._api.call("GET", QUEUES_PATH, params=params, retry=True)
        parsed = self._api.validate(QUEUE_LIST, body, where=f"GET {QUEUES_PATH}")
        return [queue_of(q, raw) for q, raw in zip(parsed.data, body["data"], strict=True)]

    async def read_queue(self, queue_id: str) -> list[WireQueueItem]:
        """``GetLLMObsAnnotatedInteractions``: every interaction of the queue (no paging)."""
        path = f"{QUEUES_PATH}/{segment(queue_id)}/annotated-interactions"
        body = await self._api.call("GET", path, retry=True)
        return list(
            self._api.validate(
                QUEUE_CONTENTS, body, where=f"GET {path}"
            ).data.attributes.annotated_interactions
        )

    async def create_queue(
        self,
        name: str,
        *,
        project_id: str,
        description: str | None = None,
        label_schemas: Sequence[LabelSchema] = (),
    ) -> DatadogQueue:
        """``CreateLLMObsAnnotationQueue`` (not retried: a retry could create a second queue)."""
        attributes: dict[str, Any] = {"name": name, "project_id": project_id}
        if description is not None:
            attributes["description"] = description
        if label_schemas:
            attributes["annotation_schema"] = {"label_schemas": [dump_label(s) for s in label_schemas]}
        body = await self._api.call(
            "POST",
            QUEUES_PATH,
            json={"data": {"type": "queues", "attributes": attributes}},
            expect=201,
            retry=False,
        )
        parsed = self._api.validate(QUEUE_RESPONSE, body, where=f"POST {QUEUES_PATH}")
        return queue_of(parsed.data, body["data"])

    async def delete_queue(self, queue_id: str) -> None:
        """``DeleteLLMObsAnnotationQueue``."""
        await self._api.call("DELETE", f"{QUEUES_PATH}/{segment(queue_id)}", expect=204, retry=False)
        self._labels.pop(queue_id, None)

    async def get_label_schema(self, queue_id: str) -> tuple[LabelSchema, ...]:
        """``GetLLMObsAnnotationQueueLabelSchema``; refreshes the provider's cached copy."""
        path = f"{QUEUES_PATH}/{segment(queue_id)}/label-schema"
        body = await self._api.call("GET", path, retry=True)
        return self._keep_labels(queue_id, body, where=f"GET {path}")

    async def replace_label_schema(
        self, queue_id: str, label_schemas: Sequence[LabelSchema]
    ) -> tuple[LabelSchema, ...]:
        """``UpdateLLMObsAnnotationQueueLabelSchema``: the whole schema (idempotent, so retried)."""
        path = f"{QUEUES_PATH}/{segment(queue_id)}/label-schema"
        payload = {
            "data": {
                "type": "queues",
                "attributes": {
                    "annotation_schema": {"label_schemas": [dump_label(s) for s in label_schemas]}
                },
            }
        }
        body = await self._api.call("PUT", path, json=payload, retry=True)
        return self._keep_labels(queue_id, body, where=f"PUT {path}")

    def _keep_labels(self, queue_id: str, body: Any, *, where: str) -> tuple[LabelSchema, ...]:
        """The labels of a label-schema answer, kept as the provider's cached copy for the queue."""
        parsed = self._api.validate(LABEL_SCHEMA_RESPONSE, body, where=where)
        labels = tuple(parsed.data.attributes.annotation_schema.label_schemas)
        self._labels[queue_id] = QueueLabels.of(labels)
        return labels

    async def add_interactions(
        self, queue_id: str, interactions: Sequence[tuple[str, str]]
    ) -> list[QueueInteraction]:
        """``CreateLLMObsAnnotationQueueInteractions`` for (type, content id) pairs.

        Retried like a read: adding an interaction twice answers ``already_existed``.
        """
        path = f"{QUEUES_PATH}/{segment(queue_id)}/interactions"
        items = [{"type": kind, "content_id": content_id} for kind, content_id in interactions]
        payload = {"data": {"type": "interactions", "attributes": {"interactions": items}}}
        body = await self._api.call("POST", path, json=payload, expect=201, retry=True)
        return list(
            self._api.validate(INTERACTIONS_RESPONSE, body, where=f"POST {path}").data.attributes.interactions
        )

    async def upsert_annotations(
        self, queue_id: str, annotations: Sequence[AnnotationUpsert]
    ) -> UpsertResult:
        """``UpsertLLMObsAnnotations``: the key's user's annotation per interaction.

        Retried like a read: an upsert keyed by (interaction, user) is idempotent. Per-item
        failures (unknown interaction, access denied) come back in ``errors``.
        """
        path = f"{QUEUES_PATH}/{segment(queue_id)}/annotations"
        items = [a.model_dump(mode="json", exclude_none=True) for a in annotations]
        payload = {"data": {"type": "annotations", "attributes": {"annotations": items}}}
        body = await self._api.call("POST", path, json=payload, retry=True)
        return self._api.validate(UPSERT_RESPONSE, body, where=f"POST {path}").data.attributes
