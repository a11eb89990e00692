"""What a migrated copy is keyed and labelled by.

Contract: what a copy is keyed and labelled by — the derived Phoenix identifier
(:func:`derive_identifier`), the provenance written into Phoenix metadata (:func:`provenance`) and the
name of the Datadog queue a copy lands in (:func:`migration_queue_name`).
"""

from __future__ import annotations

from typing import Any

from annotation_gateway.model import Annotation


def derive_identifier(annotation: Annotation) -> str:
    """The target identifier of a source annotation: stable across runs, unique per source value.

    Datadog: ``dd:{annotation_id}:{label_schema_id}`` (one user's annotation of one interaction,
    one label of it). Otherwise ``{provider}:{native id}``. The source *name* is left out on
    purpose: renaming a source in the config must not duplicate everything.
    """
    datadog = annotation.extensions.get("datadog") or {}
    annotation_id, label_id = datadog.get("annotation_id"), datadog.get("label_schema_id")
    if isinstance(annotation_id, str) and isinstance(label_id, str) and annotation_id and label_id:
        return f"dd:{annotation_id}:{label_id}"
    prefix = f"{annotation.source}:"
    native = annotation.id[len(prefix) :] if annotation.id.startswith(prefix) else annotation.id
    return f"{annotation.provider.value}:{native}"


def provenance(annotation: Annotation) -> dict[str, Any]:
    """What the target cannot hold in its own fields: ``{"migrated_from": {...}}``.

    Deterministic (no timestamps), so an unchanged source annotation compares equal next time.
    """
    found: dict[str, Any] = {
        "source": annotation.source,
        "provider": annotation.provider.value,
        "id": annotation.id,
        "annotator": annotation.annotator.id,
        "annotator_kind": annotation.annotator.kind.value,
    }
    if annotation.identifier:
        found["identifier"] = annotation.identifier
    if annotation.queue is not None:
        found["queue"] = {"id": annotation.queue.id, "name": annotation.queue.name}
    datadog = annotation.extensions.get("datadog")
    if datadog:
        for key in ("label_type", "assessment", "values", "interaction_id"):
            if datadog.get(key) is not None:
                found[key] = datadog[key]
    return {"migrated_from": found}


def migration_queue_name(source: str, identifier: str = "") -> str:
    """The Datadog queue that holds ``source``'s annotations with ``identifier``."""
    base = f"migrated-from-{source}"
    return base if not identifier else f"{base}:{identifier}"
