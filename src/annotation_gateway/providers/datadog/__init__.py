"""Datadog LLM Observability provider: annotated interactions over Datadog's REST API.

Contract: this package is one vendor adapter (:mod:`annotation_gateway.providers.base` states
the provider contract), in parts with one job each —

- :mod:`.config` — :class:`DatadogSourceConfig` and the sites;
- :mod:`.wire` — Datadog's JSON:API shapes (strict pydantic models), the request bodies of the
  queue operations, and how its error answers read;
- :mod:`.mapping` — interactions → canonical annotations (pure functions;
  :func:`map_label_value` is the value table);
- :mod:`.api`, :mod:`.client`, :mod:`.queues` — the I/O: one JSON:API exchange, the reads
  (chunking, paging, label schemas, health: :class:`DatadogProvider`) and the annotation-queue
  write API (:class:`DatadogQueues`, reached as ``DatadogProvider.queues``), all through the
  provider toolkit (:mod:`annotation_gateway.providers.http`).

The names below are the package's public surface; import them from here.
"""

from __future__ import annotations

from annotation_gateway.providers.datadog.client import MAX_URL_BYTES, DatadogProvider
from annotation_gateway.providers.datadog.config import DATADOG_SITES, DatadogSourceConfig
from annotation_gateway.providers.datadog.mapping import map_label_value
from annotation_gateway.providers.datadog.queues import DatadogQueues
from annotation_gateway.providers.datadog.wire import (
    AnnotationUpsert,
    DatadogQueue,
    LabelSchema,
    LabelValueInput,
    QueueInteraction,
    UpsertedAnnotation,
    UpsertError,
    UpsertResult,
)

__all__ = [
    "DATADOG_SITES",
    "MAX_URL_BYTES",
    "AnnotationUpsert",
    "DatadogProvider",
    "DatadogQueue",
    "DatadogQueues",
    "DatadogSourceConfig",
    "LabelSchema",
    "LabelValueInput",
    "QueueInteraction",
    "UpsertError",
    "UpsertResult",
    "UpsertedAnnotation",
    "map_label_value",
]
