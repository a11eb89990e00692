"""How a Phoenix source is configured.

Contract: :class:`PhoenixSourceConfig` is one Phoenix project reached over REST; the project is
one URL path segment, so ``/``, ``?`` and ``#`` are refused at load time. The API key is never
in the config: ``api_key_env`` names the environment variable that holds it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, HttpUrl, field_validator

from annotation_gateway.model import SubjectKind
from annotation_gateway.providers.config import BaseSourceConfig

__all__ = ["FORBIDDEN_PROJECT_CHARS", "PHOENIX_SCOPE_KINDS", "PhoenixSourceConfig"]

FORBIDDEN_PROJECT_CHARS = frozenset("/?#")
PHOENIX_SCOPE_KINDS = (SubjectKind.SESSION, SubjectKind.TRACE)
"""What a Phoenix project can enumerate (its sessions and traces listings); spans have no
listing of their own worth scanning, so span annotations are read by span id only."""


class PhoenixSourceConfig(BaseSourceConfig):
    """A Phoenix project reached over REST."""

    provider: Literal["phoenix"] = "phoenix"
    base_url: HttpUrl = Field(description="Phoenix server, e.g. http://127.0.0.1:6006")
    project: str = Field(min_length=1, description="Project name or GlobalID.")
    api_key_env: str | None = Field(
        default=None, description="Environment variable holding the Phoenix API key."
    )
    page_size: int = Field(default=10_000, ge=1, le=10_000, description="Rows per upstream page.")
    scope_subject_kinds: list[SubjectKind] = Field(
        default_factory=lambda: list(PHOENIX_SCOPE_KINDS),
        min_length=1,
        description="What scope=all enumerates in the project: its sessions, its traces or both.",
    )

    @field_validator("scope_subject_kinds")
    @classmethod
    def _listable_kinds(cls, value: list[SubjectKind]) -> list[SubjectKind]:
        outside = sorted(k.value for k in set(value) - set(PHOENIX_SCOPE_KINDS))
        if outside:
            raise ValueError(f"Phoenix lists sessions and traces only, not {', '.join(outside)}")
        return value

    @field_validator("project")
    @classmethod
    def _project_is_a_path_segment(cls, value: str) -> str:
        bad = sorted(FORBIDDEN_PROJECT_CHARS.intersection(value))
        if bad:
            raise ValueError(f"project may not contain {' '.join(bad)} (it is a URL path segment)")
        return value
