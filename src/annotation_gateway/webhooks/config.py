"""The ``[[webhooks]]`` settings: where to POST which changes, and how hard to try.

Contract:
- a webhook has a ``name`` (unique; it appears in ``GET /v1/webhooks``, metric labels and the
  state file's default name, so it is a short identifier), a ``url`` (http or https; only
  scheme, host, port and path are ever shown), ``secret_env`` (the environment variable holding
  the signing secret — never the secret itself) and ``filters``: the filters of
  ``GET /v1/annotations`` with plural names (``scope = "all"`` or ``subject_ids``, ``names``,
  ``sources``...), validated at load time by building the one
  :class:`~annotation_gateway.federation.FederatedQuery` from them (an error names the key);
- ``filters.partial`` defaults to ``"deny"`` here (``"allow"`` in the API): a batch read while a
  source fails would move the feed's watermark past that source's changes, which could then be
  missed for good; with ``"deny"`` the webhook waits (and says so in its status) until every
  selected source answers. ``"allow"`` delivers what the healthy sources have, with
  ``"partial": true`` in the body;
- delivery knobs: ``batch_size`` (annotations per message, 1..1000, default 100), ``interval_s``
  (poll period when caught up), ``timeout_s`` (one POST), ``initial_backoff_s`` /
  ``max_backoff_s`` (retry delays double from the first to the cap, with jitter),
  ``max_attempts`` (``None``: retry until delivered; N: after N failed attempts the webhook is
  suspended — its message kept on disk, never dropped — until the gateway restarts), and
  ``state_path`` (the SQLite file; default ``data/webhooks/<name>.sqlite3`` under the working
  directory);
- :func:`parse_secret` reads a Standard Webhooks secret: ``whsec_`` then the base64 of 24 to 64
  random bytes (what receivers' libraries expect); the HMAC key is the decoded bytes.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from annotation_gateway.model import AnnotatorKind, ProviderKind, SubjectKind
from annotation_gateway.providers.config import ConfigError

if TYPE_CHECKING:
    from annotation_gateway.federation.query import FederatedQuery

__all__ = [
    "DEFAULT_STATE_DIR",
    "SECRET_PREFIX",
    "WebhookConfig",
    "WebhookFilters",
    "parse_secret",
    "public_url",
]

DEFAULT_STATE_DIR = Path("data/webhooks")
SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64
MAX_BATCH_SIZE = 1000
"""``federation.limits.MAX_CHANGES_LIMIT``, checked against it in :meth:`WebhookConfig._query`
(not imported here: the federation imports the settings, which import this module)."""

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class WebhookFilters(BaseModel):
    """Which changes a webhook receives: ``GET /v1/annotations``'s filters, plural names."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scope: Literal["all"] | None = None
    subject_ids: list[str] = Field(default_factory=list)
    subject_kinds: list[SubjectKind] = Field(default_factory=list)
    identifiers: list[str] = Field(default_factory=list)
    names: list[str] = Field(default_factory=list)
    exclude_names: list[str] = Field(default_factory=list)
    sources: list[str] = Field(default_factory=list)
    providers: list[ProviderKind] = Field(default_factory=list)
    annotator_kinds: list[AnnotatorKind] = Field(default_factory=list)
    projects: list[str] = Field(default_factory=list)
    queues: list[str] = Field(default_factory=list)
    updated_after: datetime | None = None
    updated_before: datetime | None = None
    include: list[Literal["raw"]] = Field(default_factory=list)
    partial: Literal["allow", "deny"] = "deny"

    @model_validator(mode="after")
    def _builds_a_query(self) -> WebhookFilters:
        self.query()  # the one validation there is: FederatedQuery's own
        return self

    def query(self) -> FederatedQuery:
        """The :class:`FederatedQuery` these filters select (the feed reads it fresh)."""
        # Imported here: the federation package imports the settings, which import this module.
        from annotation_gateway.errors import GatewayError
        from annotation_gateway.federation.query import FederatedQuery

        try:
            # The filters' names are FederatedQuery's own (lists become its tuples): built from
            # them generically, so a filter added to the query is one field here, not two.
            fields: dict[str, Any] = {
                name: tuple(value) if isinstance(value, list) else value
                for name, value in self.model_dump(exclude={"include"}).items()
            }
            return FederatedQuery(**fields, include_raw="raw" in self.include, use_cache=False)
        except GatewayError as exc:
            where = ", ".join(".".join(str(p) for p in e.get("loc", ())) for e in exc.errors or ())
            # A custom error: its message reads "filters: <field>: ..." without "Value error, ".
            raise PydanticCustomError(
                "invalid_filters", "{detail}", {"detail": f"{where}: {exc.detail}" if where else exc.detail}
            ) from None


class WebhookConfig(BaseModel):
    """One ``[[webhooks]]`` table (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Unique short identifier: letters, digits, '_', '.', '-'.")
    url: str = Field(description="Where batches are POSTed (http or https).")
    secret_env: str = Field(
        min_length=1,
        description="The environment variable holding the signing secret, whsec_<base64 of 24-64 bytes>.",
    )
    filters: WebhookFilters
    enabled: bool = True
    batch_size: int = Field(default=100, ge=1, le=MAX_BATCH_SIZE)
    interval_s: float = Field(default=10.0, gt=0, le=86_400, description="Poll period when caught up.")
    timeout_s: float = Field(default=10.0, gt=0, le=300, description="One POST, connect to last byte.")
    initial_backoff_s: float = Field(default=1.0, gt=0, le=3600)
    max_backoff_s: float = Field(default=300.0, gt=0, le=86_400)
    max_attempts: int | None = Field(
        default=None,
        ge=1,
        description="Failed attempts before the webhook is suspended (its message kept); none: no limit.",
    )
    state_path: Path | None = Field(
        default=None, description="The SQLite delivery state; default data/webhooks/<name>.sqlite3."
    )

    @field_validator("name")
    @classmethod
    def _name_ok(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit")
        return value

    @field_validator("url")
    @classmethod
    def _url_ok(cls, value: str) -> str:
        try:
            url = httpx.URL(value)
        except (httpx.InvalidURL, TypeError) as exc:
            raise ValueError("is not a valid URL") from exc
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("must be an http:// or https:// URL with a host")
        return value

    @model_validator(mode="after")
    def _backoff_ok(self) -> WebhookConfig:
        if self.max_backoff_s < self.initial_backoff_s:
            raise ValueError("max_backoff_s must be at least initial_backoff_s")
        return self

    @property
    def state_file(self) -> Path:
        return self.state_path if self.state_path is not None else DEFAULT_STATE_DIR / f"{self.name}.sqlite3"

    @property
    def public_url(self) -> str:
        return public_url(self.url)


def public_url(url: str) -> str:
    """``url`` as it may be shown: scheme, host, port and path — no user, password, query or
    fragment, where receivers put tokens."""
    parsed = httpx.URL(url)
    port = f":{parsed.port}" if parsed.port is not None else ""
    host = f"[{parsed.host}]" if ":" in parsed.host else parsed.host
    return f"{parsed.scheme}://{host}{port}{parsed.path}"


def parse_secret(value: str, *, key: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret ``whsec_<base64>``; ``ConfigError`` naming
    ``key`` (never the value) when it is not one."""
    text = value.strip()
    if not text.startswith(SECRET_PREFIX):
        raise ConfigError(
            f"{key}: the secret must look like {SECRET_PREFIX}<base64 of {MIN_SECRET_BYTES}-"
            f"{MAX_SECRET_BYTES} random bytes> (the Standard Webhooks form receivers' libraries read)"
        )
    encoded = text[len(SECRET_PREFIX) :]
    try:
        raw = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError(f"{key}: the part after {SECRET_PREFIX} is not valid base64") from exc
    if not MIN_SECRET_BYTES <= len(raw) <= MAX_SECRET_BYTES:
        raise ConfigError(
            f"{key}: the secret decodes to {len(raw)} bytes; Standard Webhooks secrets are "
            f"{MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes"
        )
    return raw
