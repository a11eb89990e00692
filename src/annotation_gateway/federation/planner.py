"""The plan of a query: which sources to ask, which to skip and why, what each is asked, and
what the gateway filters itself.

Contract (SPEC §3):
- *Selection* (:func:`select`): the configured sources, narrowed by ``sources`` and
  ``providers`` and by the caller key's ``allowed_sources``. An unknown source name is a
  ``RequestValidationError`` (422: the value is wrong, the resource exists); a source the key
  may not use a ``ForbiddenError`` (403); without ``sources`` a limited key silently asks only
  its own. A selection that leaves no source is a 422.
- *Skips* (:func:`skip_reason`) are decided from each provider's declared
  :class:`~annotation_gateway.providers.base.Capabilities`, never from vendor names: a source
  that needs subject ids and got only identifiers; whose subject kinds are none of those asked;
  whose annotations have no project when ``projects`` is given, or no queue when ``queues``
  is; whose annotator kinds are none of those asked (Datadog declares only ``HUMAN``, so
  ``annotator_kind=LLM`` skips it); for ``scope=all``, a source with no scope, or whose scope
  holds none of the kinds asked. A skipped source is not called; the reason is reported.
- *Push-down* (:func:`pushdown`): ``subject_ids``, ``subject_kinds`` (narrowed to the kinds the
  source has; all of them = no filter, so such queries share one cache entry), ``identifiers``,
  ``names``, ``exclude_names``, ``include_raw``; the provider contract makes that answer exact.
- *Gateway filters* (:func:`gateway_filter`): ``annotator_kinds``, ``projects``, ``queues``
  (a queue's id or name) and the half-open window ``updated_after <= updated_at <
  updated_before``, as one predicate.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from annotation_gateway.errors import ForbiddenError, RequestValidationError
from annotation_gateway.federation.guards import SourceRuntime
from annotation_gateway.federation.query import FederatedQuery
from annotation_gateway.model import SubjectKind
from annotation_gateway.providers.base import SourceQuery
from annotation_gateway.records import Record

__all__ = ["gateway_filter", "pushdown", "select", "skip_reason"]


def select(
    query: FederatedQuery, sources: Mapping[str, SourceRuntime], allowed: frozenset[str] | None
) -> list[SourceRuntime]:
    """The sources ``query`` asks, in configuration order (rules in the module docstring)."""
    if query.sources:
        visible = [n for n in sources if allowed is None or n in allowed]
        unknown = sorted({n for n in query.sources if n not in sources})
        if unknown:
            raise RequestValidationError(
                f"unknown source {', '.join(map(repr, unknown))}; known: {', '.join(visible) or 'none'}",
                errors=[
                    {"loc": ["sources"], "msg": f"unknown source {n!r}", "type": "value_error"}
                    for n in unknown
                ],
            )
        forbidden = sorted({n for n in query.sources if allowed is not None and n not in allowed})
        if forbidden:
            raise ForbiddenError(f"this key may not use source {', '.join(map(repr, forbidden))}")
        wanted = set(query.sources)
        candidates = [s for s in sources.values() if s.name in wanted]
    else:
        candidates = [s for s in sources.values() if allowed is None or s.name in allowed]
    if query.providers:
        kinds = set(query.providers)
        candidates = [s for s in candidates if s.kind in kinds]
    if not candidates:
        raise RequestValidationError(
            "no source matches the source/provider selection"
            + (" among the sources this key may use" if allowed is not None else ""),
            errors=[{"loc": ["providers"], "msg": "selects no source", "type": "value_error"}],
        )
    return candidates


def skip_reason(source: SourceRuntime, query: FederatedQuery) -> str | None:
    """Why ``source`` cannot answer ``query`` (it is then not called), or ``None``."""
    capabilities = source.provider.capabilities
    if query.scope is not None:
        if not capabilities.scope_kinds:
            return "this source has no scope to enumerate; ask it by subject_id"
        if query.subject_kinds and not set(query.subject_kinds) & capabilities.scope_kinds:
            asked = ", ".join(k.value for k in query.subject_kinds)
            has = ", ".join(sorted(k.value for k in capabilities.scope_kinds))
            return f"this source's scope has no subjects of kind {asked} (it enumerates {has})"
    elif capabilities.needs_subject_ids and not query.subject_ids:
        return "this source cannot be queried by identifier alone; give subject_id"
    if query.subject_kinds and not set(query.subject_kinds) & capabilities.subject_kinds:
        asked = ", ".join(k.value for k in query.subject_kinds)
        has = ", ".join(sorted(k.value for k in capabilities.subject_kinds))
        return f"this source has no subjects of kind {asked} (it has {has})"
    if query.projects and not capabilities.has_projects:
        return "this source's annotations belong to no project, so the project filter cannot match"
    if query.queues and not capabilities.has_queues:
        return "this source's annotations belong to no queue, so the queue filter cannot match"
    annotators = capabilities.annotator_kinds
    if query.annotator_kinds and annotators is not None and not set(query.annotator_kinds) & annotators:
        asked = ", ".join(k.value for k in query.annotator_kinds)
        has = ", ".join(sorted(k.value for k in annotators))
        return f"this source has no annotations by {asked} annotators (only {has})"
    return None


def pushdown(source: SourceRuntime, query: FederatedQuery) -> SourceQuery:
    """What ``source`` is asked for ``query`` (its lists are already sorted and unique)."""
    kinds: tuple[SubjectKind, ...] = ()
    if query.subject_kinds:
        available = source.provider.capabilities.subject_kinds
        wanted = frozenset(query.subject_kinds) & available
        if wanted != available:
            kinds = tuple(sorted(wanted))
    return SourceQuery(
        subject_ids=query.subject_ids,
        subject_kinds=kinds,
        identifiers=query.identifiers,
        names=query.names,
        exclude_names=query.exclude_names,
        include_raw=query.include_raw,
    )


def gateway_filter(query: FederatedQuery) -> Callable[[Record], bool] | None:
    """The filters no provider applies, as one predicate; ``None`` when there are none."""
    annotators = frozenset(k.value for k in query.annotator_kinds)
    projects = frozenset(query.projects)
    queues = frozenset(query.queues)
    after, before = query.updated_after, query.updated_before  # aware UTC, as records' times
    if not annotators and not projects and not queues and after is None and before is None:
        return None

    def keep(record: Record) -> bool:
        if annotators and record.annotator_kind not in annotators:
            return False
        if projects and record.project not in projects:
            return False
        if queues and record.queue_id not in queues and record.queue_name not in queues:
            return False
        if after is not None and record.updated_at < after:
            return False
        return before is None or record.updated_at < before

    return keep
