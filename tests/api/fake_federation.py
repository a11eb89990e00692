"""A stand-in Federation for API tests that need full control of what the federation answers.

It serves canned annotations per source (all on one page, in SPEC order), raises the configured
error for ``query``, enforces ``allowed_sources`` like the real one (403 for a named source
outside it), and records every query it got, so a test can check what the API passed on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from annotation_gateway.errors import ForbiddenError, GatewayError, InvalidCursorError, RequestValidationError
from annotation_gateway.federation import FederatedQuery, Federation, QueryPage, SourceInfo, SourceStatus
from annotation_gateway.model import Annotation, AnnotationWrite, ProviderKind, SubjectKind
from annotation_gateway.providers.base import Capabilities, HealthReport, WriteResult
from annotation_gateway.records import record_of
from annotation_gateway.settings import GatewaySettings, hash_key, load_settings


@dataclass
class FakeSource:
    name: str
    provider: ProviderKind
    annotations: list[Annotation] = field(default_factory=list)
    healthy: bool = True


class FakeFederation(Federation):
    def __init__(self, sources: Sequence[FakeSource]) -> None:  # no super(): the real one builds caches
        self._sources = {s.name: s for s in sources}
        self.queries: list[tuple[FederatedQuery, frozenset[str] | None]] = []
        self.raise_on_query: GatewayError | Exception | None = None
        self.writes: list[tuple[str, list[AnnotationWrite]]] = []

    @property
    def source_names(self) -> list[str]:
        return list(self._sources)

    async def query(
        self,
        query: FederatedQuery,
        *,
        allowed_sources: frozenset[str] | None = None,
        audience: str | None = None,
    ) -> QueryPage:
        self.queries.append((query, allowed_sources))
        if self.raise_on_query is not None:
            raise self.raise_on_query
        for name in query.sources:
            if name not in self._sources:
                # As the real federation: the route exists, the value is wrong (422).
                raise RequestValidationError(
                    f"unknown source {name!r}",
                    errors=[{"loc": ["sources"], "msg": f"unknown source {name!r}", "type": "value_error"}],
                )
            if allowed_sources is not None and name not in allowed_sources:
                raise ForbiddenError(f"this key may not use source {name!r}")
        if query.cursor is not None:
            raise InvalidCursorError("the cursor does not belong to this query")
        names = [
            n
            for n in self._sources
            if (not query.sources or n in query.sources) and (allowed_sources is None or n in allowed_sources)
        ]
        data: list[Annotation] = []
        statuses: list[SourceStatus] = []
        for name in names:
            rows = [a for a in self._sources[name].annotations if a.subject.id in query.subject_ids]
            data.extend(rows)
            statuses.append(
                SourceStatus(
                    source=name,
                    provider=self._sources[name].provider,
                    status="ok",
                    count=len(rows),
                    elapsed_ms=1.5,
                )
            )
        data.sort(key=lambda a: (-a.updated_at.timestamp(), a.id))
        records = [record_of(a) for a in data[: query.limit]]
        return QueryPage(records=records, next_cursor=None, partial=False, sources=statuses)

    def pages(
        self,
        query: FederatedQuery,
        *,
        allowed_sources: frozenset[str] | None = None,
        audience: str | None = None,
    ) -> AsyncIterator[QueryPage]:
        raise NotImplementedError

    async def write(
        self, source: str, items: Sequence[AnnotationWrite], *, allowed_sources: frozenset[str] | None = None
    ) -> WriteResult:
        self.writes.append((source, list(items)))
        return WriteResult(ids=tuple(f"{source}:{i}" for i in range(len(items))))

    async def sources_info(self, *, refresh: bool = False) -> list[SourceInfo]:
        return [
            SourceInfo(
                name=s.name,
                provider=s.provider,
                capabilities=Capabilities(
                    subject_kinds=frozenset({SubjectKind.SESSION}),
                    pushdown=frozenset({"subject_ids"}),
                    needs_subject_ids=s.provider is ProviderKind.DATADOG,
                ),
                circuit_state="closed",
                last_health=HealthReport(ok=s.healthy, latency_ms=2.0),
                last_checked_at=datetime.now(UTC),
            )
            for s in self._sources.values()
        ]

    async def cache_status(self) -> dict[str, object] | None:
        return None  # the memory backend: /readyz shows no cache tier

    async def ready(self) -> dict[str, HealthReport]:
        return {
            s.name: HealthReport(
                ok=s.healthy, latency_ms=2.0, detail=None if s.healthy else "connection refused"
            )
            for s in self._sources.values()
        }

    async def aclose(self) -> None:
        return None


LIMITED_KEY_RATE = "2/hour"
"""The ``rate_limit`` of the ``limited`` key of :func:`fake_settings`."""


def fake_settings(
    directory: Path, *, admin_key: str, phx_only_key: str, limited_key: str | None = None
) -> GatewaySettings:
    """Settings of a gateway in front of the stand-in: sources ``phx`` (Phoenix) and ``dd``
    (Datadog) that are never called, an admin key and a key limited to ``phx`` (and, given
    ``limited_key``, a key named ``limited`` allowed :data:`LIMITED_KEY_RATE` requests), loaded
    through a real TOML file as the server would."""
    limited = (
        f'[[auth.keys]]\nname = "limited"\nsha256 = "{hash_key(limited_key)}"\n'
        f'rate_limit = "{LIMITED_KEY_RATE}"'
        if limited_key is not None
        else ""
    )
    config = directory / "gateway.toml"
    config.write_text(
        f"""
[auth]
enabled = true
[[auth.keys]]
name = "admin"
sha256 = "{hash_key(admin_key)}"
[[auth.keys]]
name = "phx-only"
sha256 = "{hash_key(phx_only_key)}"
sources = ["phx"]
{limited}

[[sources]]
name = "phx"
provider = "phoenix"
base_url = "http://127.0.0.1:9"
project = "p"

[[sources]]
name = "dd"
provider = "datadog"
base_url = "http://127.0.0.1:9"
api_key_env = "UNUSED_DD_API_KEY"
app_key_env = "UNUSED_DD_APP_KEY"
"""
    )
    return load_settings(config)
