"""How a Datadog source is configured.

Contract: :class:`DatadogSourceConfig` is one Datadog organisation's LLM Observability
annotations, reached by ``site`` (one of :data:`DATADOG_SITES`) or an explicit ``base_url`` (a
local simulator), which wins. The keys are never in the config: ``api_key_env`` and
``app_key_env`` name the environment variables that hold ``DD-API-KEY`` and
``DD-APPLICATION-KEY``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, HttpUrl, model_validator

from annotation_gateway.model import SubjectKind
from annotation_gateway.providers.config import BaseSourceConfig

__all__ = ["DATADOG_SITES", "DatadogSourceConfig"]

DATADOG_SITES: dict[str, str] = {
    site: f"https://api.{site}"
    for site in (
        "datadoghq.com",
        "us3.datadoghq.com",
        "us5.datadoghq.com",
        "ap1.datadoghq.com",
        "ap2.datadoghq.com",
        "uk1.datadoghq.com",
        "datadoghq.eu",
        "ddog-gov.com",
        "us2.ddog-gov.com",
    )
}


_DATADOG_KINDS = frozenset(
    {SubjectKind.TRACE, SubjectKind.EXPERIMENT_TRACE, SubjectKind.SESSION, SubjectKind.DISPLAY_BLOCK}
)


class DatadogSourceConfig(BaseSourceConfig):
    """A Datadog organisation's LLM Observability annotations, by site or explicit base URL."""

    provider: Literal["datadog"] = "datadog"
    site: str | None = Field(default=None, description="Datadog site, e.g. datadoghq.com")
    base_url: HttpUrl | None = Field(
        default=None, description="Explicit API base URL (a local simulator); overrides site."
    )
    api_key_env: str = Field(description="Environment variable holding DD-API-KEY.")
    app_key_env: str = Field(description="Environment variable holding DD-APPLICATION-KEY.")
    page_size: int = Field(default=100, ge=1, le=1000, description="Interactions per page.")
    scope_queue_ids: list[str] = Field(
        default_factory=list,
        description="scope=all reads only these annotation queues (default: every queue the keys see).",
    )
    scope_project_ids: list[str] = Field(
        default_factory=list,
        description="scope=all reads only the queues of these Datadog projects (not with scope_queue_ids).",
    )
    scope_subject_kinds: list[SubjectKind] = Field(
        default_factory=list,
        description="Interaction types scope=all keeps (default: every type).",
    )

    @model_validator(mode="after")
    def _site_or_base_url(self) -> DatadogSourceConfig:
        if self.base_url is None and self.site is None:
            raise ValueError("give either site or base_url")
        if self.site is not None and self.site not in DATADOG_SITES:
            raise ValueError(f"unknown site {self.site!r}; one of {', '.join(DATADOG_SITES)}")
        outside = sorted(k.value for k in set(self.scope_subject_kinds) - _DATADOG_KINDS)
        if outside:
            raise ValueError(f"scope_subject_kinds: Datadog has no {', '.join(outside)} interactions")
        if self.scope_queue_ids and self.scope_project_ids:
            # Datadog's queue listing takes one or the other, and a queue belongs to one project.
            raise ValueError("give scope_queue_ids or scope_project_ids, not both")
        return self

    @property
    def api_base_url(self) -> str:
        if self.base_url is not None:
            return str(self.base_url).rstrip("/")
        assert self.site is not None
        return DATADOG_SITES[self.site]
