"""``-s kind:id``: the kind prefixes the query table prints, read back by the command line.

Issue 15: ``query -s trace:<id>`` found nothing because ``trace:<id>`` was taken as the id.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from annotation_gateway.cli._inputs import collect_subject_ids, collect_subjects, split_kind_prefix
from annotation_gateway.model import SubjectKind

T = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize("kind", list(SubjectKind))
def test_every_subject_kind_is_a_prefix(kind: SubjectKind) -> None:
    assert split_kind_prefix(f"{kind.value}:{T}") == (kind, T)


@pytest.mark.parametrize(
    "value",
    ["support-07", "urn:support:07", "a:b", "Trace:abc", "trace:", "trace: ", ":abc", "traces:abc"],
)
def test_other_text_with_a_colon_is_an_id_as_it_is(value: str) -> None:
    assert split_kind_prefix(value) == (None, value)


def test_the_prefix_is_removed_and_only_its_first_colon_counts() -> None:
    assert split_kind_prefix("session:tenant:42") == (SubjectKind.SESSION, "tenant:42")


def test_every_id_prefixed_the_kinds_are_their_union() -> None:
    ids, kinds = collect_subjects([f"trace:{T}", "session:support-07", f"trace:{T}"], None)
    assert ids == [T, "support-07"]
    assert kinds == (SubjectKind.TRACE, SubjectKind.SESSION)


def test_an_id_without_a_prefix_keeps_every_kind() -> None:
    # the unprefixed id must still be found whatever its kind: no kind filter
    assert collect_subjects([f"trace:{T}", "support-07"], None) == ([T, "support-07"], ())


def test_subject_kind_option_and_prefixes_add_up() -> None:
    ids, kinds = collect_subjects(["support-07", f"trace:{T}"], None, [SubjectKind.SESSION])
    assert ids == ["support-07", T]
    assert kinds == (SubjectKind.SESSION, SubjectKind.TRACE)
    assert collect_subjects(["support-07"], None, [SubjectKind.SESSION]) == (
        ["support-07"],
        (SubjectKind.SESSION,),
    )
    assert collect_subjects(None, None, [SubjectKind.SPAN]) == ([], (SubjectKind.SPAN,))


def test_the_ids_file_takes_prefixes_too(tmp_path: Path) -> None:
    file = tmp_path / "ids.txt"
    file.write_text(f"# sessions and a trace\nsupport-01\ntrace:{T}\nurn:x:1\n", encoding="utf-8")
    assert collect_subjects(["support-02"], file) == (["support-02", "support-01", T, "urn:x:1"], ())
    # compare and migrate cover every kind: they get the ids without their prefixes
    assert collect_subject_ids(None, file) == ["support-01", T, "urn:x:1"]
