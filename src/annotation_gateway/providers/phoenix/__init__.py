"""Arize Phoenix provider: session, trace and span annotations over Phoenix's REST API.

Contract: this package is one vendor adapter (:mod:`annotation_gateway.providers.base` states
the provider contract), in four parts with one job each —

- :mod:`.config` — :class:`PhoenixSourceConfig`;
- :mod:`.wire` — Phoenix's JSON shapes (validated TypedDicts), its per-kind vocabulary, and how
  its error answers read;
- :mod:`.mapping` — Phoenix rows → canonical annotations, canonical writes → Phoenix bodies
  (pure functions);
- :mod:`.plan` and :mod:`.client` — the I/O: what is pushed down into URLs, chunking, paging,
  pre-flight, batched writes, health (:class:`PhoenixProvider`), all through the provider
  toolkit (:mod:`annotation_gateway.providers.http`).

The names below are the package's public surface; import them from here.
"""

from __future__ import annotations

from annotation_gateway.providers.phoenix.client import (
    MAX_IDS_PER_REQUEST,
    MAX_URL_BYTES,
    WRITE_BATCH_SIZE,
    PhoenixProvider,
)
from annotation_gateway.providers.phoenix.config import PhoenixSourceConfig
from annotation_gateway.providers.phoenix.mapping import RESERVED_NAMES

__all__ = [
    "MAX_IDS_PER_REQUEST",
    "MAX_URL_BYTES",
    "RESERVED_NAMES",
    "WRITE_BATCH_SIZE",
    "PhoenixProvider",
    "PhoenixSourceConfig",
]
