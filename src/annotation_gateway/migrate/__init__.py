"""Copy annotations from one vendor to the other, safely and repeatably (issue 6, item 3).

Contract
--------
One module per job: :mod:`.run` (:func:`migrate`), :mod:`.upsert` and :mod:`.queues` (the two
ways a target is written), :mod:`.derive` (identifiers, provenance, queue names),
:mod:`.checkpoint`, :mod:`.verify`, :mod:`.report` (the outcome and report models) and
:mod:`.follow` (``migrate --follow``: rounds over the source's change feed); what the CLI uses is
re-exported here.

:func:`migrate` reads the *source*'s canonical annotations for ``subject_ids`` in batches of
``batch_size`` subjects (at most ``concurrency`` batches in flight), renames them through
``name_map`` (source name → target name) and makes the *target* hold the same judgements. It
returns a :class:`MigrationReport`; it never deletes anything in the target. A whole scope
(``--scope all``, SPEC §7) is migrated by discovering its subject ids first
(:func:`scope_subject_ids`) and keying the checkpoint by ``SCOPE_CHECKPOINT_KEY`` rather than the
id list, so a resumed run also takes subjects that appeared meanwhile.

How the target is written is chosen from what the target can do, not from its class:

* a target whose ``capabilities.writable_kinds`` is non-empty (Phoenix) gets ordinary upserts
  through :meth:`AnnotationProvider.write` (:class:`~.upsert.UpsertWriter`);
* a read-only target that offers annotation-queue operations (:class:`QueueTarget`: Datadog)
  is written through annotation queues (:class:`~.queues.QueueWriter`);
* anything else raises :class:`~annotation_gateway.errors.UnsupportedError` before any I/O.

Each source annotation gets exactly one outcome, counted in the report:

``written``    the target did not have it;
``updated``    the target had it (same upsert key) with other values;
``unchanged``  the target already had exactly these values: nothing is sent. The target is read
               *before* writing, so a second run over the same data writes nothing;
``failed``     with a reason (a kind the target cannot hold, a subject the target does not know,
               a value the target refuses, a Datadog label of another type...);
``skipped``    counted in ``skipped_copies``: the annotation is itself a copy an earlier
               migration made *from the target* (see below). Not written, not a failure.

So ``annotations_read`` = written + updated + unchanged + failed + skipped_copies.

Copies never go back where they came from
    When migrating S → T, a source annotation whose provenance
    (:func:`annotation_gateway.provenance.origin`: ``metadata.migrated_from`` in Phoenix, the
    ``migrated_from: {json}`` reasoning line in Datadog) names T as its source is skipped and
    counted in ``skipped_copies`` — in a dry run too. A copy is not an independent judgement:
    migrating S → T and later T → S would otherwise write T's annotations into T a second time
    (new ``migrated-from-S`` queues in Datadog, new identifiers in Phoenix), where they would
    count as T agreeing with itself. Only copies of the target are skipped: a copy that came
    from a third source is migrated like any other annotation.

Upsert into Phoenix (Datadog → Phoenix)
    Every canonical annotation becomes a Phoenix session or trace annotation of the same subject
    (other kinds fail, with why). ``identifier`` is derived from the source annotation, so a
    re-run updates the same Phoenix row instead of adding one (Phoenix upserts by (name,
    subject, identifier)): ``dd:{annotation_id}:{label_schema_id}`` for a Datadog annotation —
    one Datadog annotation is one user's review of one interaction (queue + content id), and
    one label of it is one canonical annotation — otherwise ``{provider}:{native id}``
    (:func:`derive_identifier`). ``annotator_kind`` is kept (``UNKNOWN``, which Phoenix refuses,
    becomes ``HUMAN``); everything else Phoenix has no field for goes into
    ``metadata["migrated_from"]``: source, provider, canonical id, annotator id (the Datadog
    user), annotator kind, queue, and the Datadog label type/assessment/values
    (:func:`provenance`; :mod:`annotation_gateway.provenance` reads it back). Subjects Phoenix
    does not know are **reported** in ``missing_subjects`` and their annotations fail; the
    batch is retried without them so the rest still lands (Phoenix writes are all-or-nothing).

Annotation queues (Phoenix → Datadog)
    Datadog keeps one annotation per (interaction, user), an interaction being a content id in a
    queue, and each annotation holds one value per label of the queue's label schema. Phoenix
    keeps one annotation per (name, subject, identifier). So:

    * queue ↔ identifier: annotations with identifier ``""`` go to the queue
      ``migrated-from-{source}``, identifier ``x`` to ``migrated-from-{source}:x`` (created on
      first use in ``queue_project_id``, reused after). Datadog's cross-queue read returns every
      queue, so several reviewers of one (subject, name) stay several annotations;
    * subject ↔ interaction: the subject id is the content id, type ``session`` or ``trace``
      (spans fail: Datadog queues take no spans);
    * name ↔ label: the label schema is derived from the data and extended as new values appear:
      a name with labels becomes a ``categorical`` label (its observed values; a score of the
      same annotation goes to a ``score`` label ``{name}_score``), a name with only scores a
      ``score`` label, a name with only explanations a ``text`` label. Every migrated label has
      ``has_reasoning``. A name whose type conflicts with the existing label fails, with why;
      names Datadog refuses (``^[a-zA-Z0-9_-]+$``) fail too — map them with ``name_map``.

    **What Datadog cannot keep**: annotations belong to the owner of the API/application key
    that writes them, so the original annotator, the Phoenix identifier and the Phoenix id are
    written into ``reasoning`` after the explanation, as one line
    ``migrated_from: {json}`` (:data:`PROVENANCE_MARKER`, formatted and read by
    :mod:`annotation_gateway.provenance`); annotator kind, metadata and
    timestamps have no place in Datadog except that line. The migrating key's user is learnt
    from the queue's creator and from upsert answers; only that user's annotations count as
    "already there". Values of that user's annotation that this run does not touch are sent
    back unchanged (an upsert replaces the whole annotation), so nothing is deleted.

Batches, concurrency and the checkpoint
    Subjects are de-duplicated (first occurrence kept) and cut into batches. With
    ``checkpoint``, a JSON file is rewritten atomically (temporary file + ``os.replace``) after
    every completed batch: the subjects done so far and the running totals. A later run with the
    same file, source, target, name map and subject list skips those subjects and reports totals
    over the whole migration; because every write is an upsert keyed deterministically, a batch
    that was in flight when the run died is simply written again, and the resumed run ends in
    the same state as one clean run. A checkpoint of a finished run starts a fresh run; one made
    for another source/target/name map/subject list raises :class:`CheckpointMismatchError`.
    ``dry_run`` reads and classifies but writes nothing (no queues, no labels, no checkpoint);
    it cannot see subjects missing in Phoenix (Phoenix checks them only when writing).

    A vendor failure (after the providers' own retries) stops the run with that error: resume
    from the checkpoint. ``progress`` is called after each batch (from the event loop, with a
    :class:`MigrationProgress`); an exception it raises stops the run the same way.

Checking the result
    :func:`verify` compares the migrated subjects between source and target with
    :func:`~annotation_gateway.compare.compare`, on what was copied: on the source side only
    the kinds the target can hold, without the ``skipped_copies`` (copies of the target's own
    annotations); on the target side only what migrate wrote (Phoenix rows whose
    ``metadata.migrated_from.source`` is the source; Datadog annotations in the
    ``migrated-from-{source}`` queues, with ``{name}_score`` folded back into ``{name}``).
    Since the target side consists of copies of the source, verify asks compare to include
    copies (``include_copies=True``), which a user's compare leaves out by default.
    Compare pairs by (subject, name) on label and score; explanations are never compared
    (Datadog's carries the provenance line), nor are annotator, identifier or timestamps, which
    cannot survive the trip. Each copy is given its original's timestamps first (found through
    its provenance), because compare breaks a tie between reviewers' labels by recency and a
    copy's own timestamp is the time of the migration.
"""

from __future__ import annotations

from annotation_gateway.migrate.checkpoint import CHECKPOINT_VERSION, load_state, save_state
from annotation_gateway.migrate.derive import derive_identifier, migration_queue_name, provenance
from annotation_gateway.migrate.queues import QueueTarget
from annotation_gateway.migrate.report import (
    CheckpointMismatchError,
    MigrationFailure,
    MigrationProgress,
    MigrationReport,
    Outcome,
)
from annotation_gateway.migrate.run import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CONCURRENCY,
    SCOPE_CHECKPOINT_KEY,
    migrate,
    scope_subject_ids,
)
from annotation_gateway.migrate.verify import verify
from annotation_gateway.provenance import PROVENANCE_MARKER

__all__ = [
    "CHECKPOINT_VERSION",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_CONCURRENCY",
    "PROVENANCE_MARKER",
    "SCOPE_CHECKPOINT_KEY",
    "CheckpointMismatchError",
    "MigrationFailure",
    "MigrationProgress",
    "MigrationReport",
    "Outcome",
    "QueueTarget",
    "derive_identifier",
    "load_state",
    "migrate",
    "migration_queue_name",
    "provenance",
    "save_state",
    "scope_subject_ids",
    "verify",
]
