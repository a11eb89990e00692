"""Vendor adapters. Each vendor package (``phoenix``, ``datadog``) owns one vendor, built on the
provider toolkit (``http``); this package exposes only the registry.

Contract: ``SourceConfig`` is the discriminated union of every provider's config (by ``provider``), and
:func:`build_provider` turns a config into a live :class:`AnnotationProvider`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

import httpx
from pydantic import Field

from annotation_gateway.providers.base import (
    AnnotationProvider,
    Capabilities,
    HealthReport,
    SourceQuery,
    WriteResult,
)
from annotation_gateway.providers.datadog import DatadogSourceConfig
from annotation_gateway.providers.http.budget import RequestBudget
from annotation_gateway.providers.phoenix import PhoenixSourceConfig

__all__ = [
    "AnnotationProvider",
    "Capabilities",
    "HealthReport",
    "SourceConfig",
    "SourceQuery",
    "WriteResult",
    "build_provider",
]

SourceConfig = Annotated[PhoenixSourceConfig | DatadogSourceConfig, Field(discriminator="provider")]


def build_provider(
    config: PhoenixSourceConfig | DatadogSourceConfig,
    *,
    environ: Mapping[str, str] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    budget: RequestBudget | None = None,
) -> AnnotationProvider:
    """A live provider for ``config``; secrets are read from ``environ`` (default os.environ);
    ``budget`` is the source's rate budget (:mod:`annotation_gateway.ratelimit`), if any."""
    if isinstance(config, PhoenixSourceConfig):
        from annotation_gateway.providers.phoenix import PhoenixProvider

        return PhoenixProvider.from_config(config, environ=environ, transport=transport, budget=budget)
    from annotation_gateway.providers.datadog import DatadogProvider

    return DatadogProvider.from_config(config, environ=environ, transport=transport, budget=budget)
