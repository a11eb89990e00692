"""Migration into an upsert target (Phoenix) writes the copies oldest original first, so the
copies keep their originals' order of recency (the target dates each copy as it writes it)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from annotation_gateway.migrate.upsert import UpsertWriter
from annotation_gateway.model import Annotation, AnnotationWrite, ProviderKind, SubjectKind
from annotation_gateway.providers import SourceQuery
from annotation_gateway.providers.base import Capabilities, WriteResult
from tests.fakes import make_annotation


@dataclass
class Target:
    """An upsert target that holds nothing yet and records what it is asked to write."""

    name: str = "px"
    written: list[AnnotationWrite] = field(default_factory=list)
    capabilities: Capabilities = field(
        default_factory=lambda: Capabilities(
            subject_kinds=frozenset({SubjectKind.SESSION}),
            pushdown=frozenset({"subject_ids"}),
            needs_subject_ids=True,
            writable_kinds=frozenset({SubjectKind.SESSION}),
        )
    )

    async def fetch(self, query: SourceQuery) -> list[Annotation]:
        return []

    async def write(self, items: Sequence[AnnotationWrite]) -> WriteResult:
        self.written.extend(items)
        return WriteResult(ids=tuple(f"px:{i}" for i in range(len(items))))


async def test_copies_are_written_oldest_original_first() -> None:
    # Read newest first, as every answer is: bob (newer) before alice on the same session.
    originals = [
        make_annotation(
            "dd",
            subject,
            name="resolution",
            label=label,
            updated_at=at,
            native_id=who,
            provider=ProviderKind.DATADOG,
        )
        for subject, label, at, who in (
            ("s1", "escalated", 30, "bob"),
            ("s1", "resolved", 20, "alice"),
            ("s2", "resolved", 25, "carol"),
        )
    ]
    target: Any = Target()
    result = await UpsertWriter("dd", target, {}).apply(originals, dry_run=False)
    assert result.read == 3
    assert [w.label for w in target.written] == ["resolved", "resolved", "escalated"]
    assert [w.subject_id for w in target.written] == ["s1", "s2", "s1"]
