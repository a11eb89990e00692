"""The migration-team commands end to end: ``compare``, ``export`` and ``migrate`` on the command
line, against a real Phoenix and the Datadog simulator (typer's runner in-process; a real
subprocess for Ctrl-C). Each test seeds its own Phoenix project and a wiped simulator, so writes
never touch another test's data. Expectations come from what the test seeded.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from annotation_gateway.cli import app as cli_app
from annotation_gateway.devservers.phoenix import PhoenixSeeder, PhoenixServer
from tests.plugins.datadog import API_KEY_ENV, APP_KEY_ENV, DatadogSimulator
from tests.plugins.phoenix import seed_sessions

pytestmark = pytest.mark.phoenix

runner = CliRunner()
PX = "phoenix-cli"
DD = "datadog-cli"
N_SESSIONS = 10
DD_SESSIONS = range(0, 8)
"""Sessions alice reviewed in Datadog (bob too on 0-1)."""
PX_SESSIONS = range(4, 10)
"""Sessions with Phoenix annotations."""
LABELS = ("resolved", "unresolved", "escalated")
INTERRUPT_TIMEOUT_S = 60.0


@dataclass
class World:
    config: Path
    sessions: list[str]
    ids_file: Path
    project: str
    phoenix: PhoenixServer
    sim: DatadogSimulator

    @property
    def dd_annotations(self) -> int:
        # alice: resolution + helpfulness per session; bob: resolution on sessions 0-1.
        return 2 * len(DD_SESSIONS) + 2

    @property
    def px_annotations(self) -> int:
        return 2 * len(PX_SESSIONS)


def _datadog_seed(sessions: list[str]) -> dict[str, Any]:
    interactions = []
    for i in DD_SESSIONS:
        annotations: list[dict[str, Any]] = [
            {"user": "alice", "label_values": {"resolution": [LABELS[i % 3]], "helpfulness": i / 10}}
        ]
        if i < 2:
            annotations.append({"user": "bob", "label_values": {"resolution": ["escalated"]}})
        interactions.append({"type": "session", "content_id": sessions[i], "annotations": annotations})
    return {
        "queues": [
            {
                "name": f"cli-{uuid.uuid4().hex[:6]}",
                "label_schemas": [
                    {"name": "resolution", "type": "categorical", "values": list(LABELS)},
                    {"name": "helpfulness", "type": "score", "min": 0, "max": 1},
                ],
                "interactions": interactions,
            }
        ]
    }


def _phoenix_rows(sessions: list[str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for i in PX_SESSIONS:
        # Sessions 4-5 agree with Datadog's alice; 6-7 differ; 8-9 are Phoenix-only.
        label = LABELS[i % 3] if i < 6 or i >= 8 else LABELS[(i + 1) % 3]
        rows.append(
            {
                "session_id": sessions[i],
                "name": "resolution",
                "annotator_kind": "HUMAN",
                "result": {"label": label},
                "identifier": "",
                "metadata": {},
            }
        )
        rows.append(
            {
                "session_id": sessions[i],
                "name": "helpfulness",
                "annotator_kind": "LLM",
                "result": {"score": i / 10, "explanation": f"judge {i}"},
                "identifier": "",
                "metadata": {},
            }
        )
    return rows


@pytest.fixture
def world(
    phoenix_server: PhoenixServer,
    datadog_sim: DatadogSimulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> World:
    return _build_world(phoenix_server, datadog_sim, tmp_path, monkeypatch, annotate_phoenix=True)


@pytest.fixture
def bare_world(
    phoenix_server: PhoenixServer,
    datadog_sim: DatadogSimulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> World:
    """The same sessions, with annotations in Datadog only (a migration's starting point)."""
    return _build_world(phoenix_server, datadog_sim, tmp_path, monkeypatch, annotate_phoenix=False)


def _build_world(
    phoenix_server: PhoenixServer,
    datadog_sim: DatadogSimulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    annotate_phoenix: bool,
) -> World:
    project = f"gw-cli-{uuid.uuid4().hex[:8]}"
    with PhoenixSeeder(phoenix_server.base_url) as seeder:
        seeder.create_project(project)
        sessions, _, _ = seed_sessions(seeder, project, N_SESSIONS)
        if annotate_phoenix:
            seeder.annotate_sessions(_phoenix_rows(sessions))
    datadog_sim.seed(_datadog_seed(sessions))
    for name, value in datadog_sim.environ.items():
        monkeypatch.setenv(name, value)
    config = tmp_path / "gateway.toml"
    config.write_text(
        f"""
[auth]
enabled = false

[[sources]]
name = "{PX}"
provider = "phoenix"
base_url = "{phoenix_server.base_url}"
project = "{project}"
retry_attempts = 1

[[sources]]
name = "{DD}"
provider = "datadog"
base_url = "{datadog_sim.base_url}"
api_key_env = "{API_KEY_ENV}"
app_key_env = "{APP_KEY_ENV}"
retry_attempts = 1
""",
        encoding="utf-8",
    )
    ids_file = tmp_path / "sessions.txt"
    ids_file.write_text("# the test's sessions\n" + "\n".join(sessions) + "\n\n", encoding="utf-8")
    return World(config, sessions, ids_file, project, phoenix_server, datadog_sim)


def _run(*args: str) -> Any:
    return runner.invoke(cli_app, list(args))


# --- compare --------------------------------------------------------------------------------


def test_compare_json_csv_html_and_table(world: World, tmp_path: Path) -> None:
    base = ["compare", "--config", str(world.config), "--left", PX, "--right", DD]
    base += ["--subject-ids-file", str(world.ids_file), "--score-tolerance", "0.001"]
    result = _run(*base, "--format", "json")
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    rows = {(r["subject_id"], r["name"]): r for r in body["rows"]}
    s = world.sessions
    assert rows[(s[4], "resolution")]["status"] == "agree"
    assert rows[(s[6], "resolution")]["status"] == "label_differs"
    assert rows[(s[8], "resolution")]["status"] == "only_left"
    assert rows[(s[0], "resolution")]["status"] == "only_right"
    assert rows[(s[0], "resolution")]["right"]["count"] == 2  # alice and bob
    assert rows[(s[5], "helpfulness")]["status"] == "agree"
    resolution = next(x for x in body["summary"] if x["name"] == "resolution")
    # Paired 4-7: agree on 4 and 5, differ on 6 and 7; only left 8-9; only right 0-3.
    assert (resolution["agree"], resolution["label_differs"]) == (2, 2)
    assert (resolution["only_left"], resolution["only_right"]) == (2, 4)

    as_csv = _run(*base, "--format", "csv")
    assert as_csv.exit_code == 0, as_csv.output
    records = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [(r["subject_id"], r["name"], r["status"]) for r in records] == [
        (r["subject_id"], r["name"], r["status"]) for r in body["rows"]
    ]

    report = tmp_path / "report.html"
    as_html = _run(*base, "--format", "html", "--output", str(report))
    assert as_html.exit_code == 0, as_html.output
    html = report.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    assert s[6] in html
    assert "<script" not in html

    table = _run(*base, "--name", "resolution")
    assert table.exit_code == 0, table.output
    assert "summary per name" in table.stdout
    assert "rows (8 of 8)" in table.stdout  # only non-agreeing rows: 6-7 differ, 0-3 and 8-9 one-sided


def test_compare_name_and_subject_maps_from_files(world: World, tmp_path: Path) -> None:
    # Pair Phoenix session 8 with Datadog session 0 and Phoenix "helpfulness" with itself through
    # a JSON name map; a CSV subject map with a header.
    subject_map = tmp_path / "subjects.csv"
    subject_map.write_text(f"left_id,right_id\n{world.sessions[8]},{world.sessions[0]}\n", encoding="utf-8")
    name_map = tmp_path / "names.toml"
    name_map.write_text('[name_map]\nresolution = "resolution"\n', encoding="utf-8")
    result = _run(
        "compare",
        "--config",
        str(world.config),
        "--left",
        PX,
        "--right",
        DD,
        "--subject-id",
        world.sessions[8],
        "--subject-map",
        str(subject_map),
        "--name-map",
        str(name_map),
        "--name",
        "resolution",
        "--format",
        "json",
    )
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)["rows"]
    assert (row["subject_id"], row["right_subject_id"]) == (world.sessions[8], world.sessions[0])
    # Phoenix says LABELS[8 % 3] = escalated; Datadog on session 0: alice resolved, bob escalated.
    assert row["left"]["label"] == "escalated"
    assert row["right"]["count"] == 2


def test_compare_bad_arguments_exit_2(world: World, tmp_path: Path) -> None:
    cfg = ["--config", str(world.config)]
    assert _run("compare", *cfg, "--left", PX, "--subject-id", "x").exit_code == 2
    assert _run("compare", *cfg, "--left", PX, "--right", DD).exit_code == 2  # no subjects
    unknown = _run("compare", *cfg, "--left", PX, "--right", "nope", "--subject-id", "x")
    assert unknown.exit_code == 2
    assert "unknown right source 'nope'" in unknown.output
    bad_map = tmp_path / "names.csv"
    bad_map.write_text("left,right\nquality\n", encoding="utf-8")
    bad = _run("compare", *cfg, "--left", PX, "--right", DD, "--subject-id", "x", "--name-map", str(bad_map))
    assert bad.exit_code == 2
    assert "names.csv:2" in bad.output
    missing = _run(
        "compare", *cfg, "--left", PX, "--right", DD, "--subject-ids-file", str(tmp_path / "none.txt")
    )
    assert missing.exit_code == 2
    assert (
        _run(
            "compare", "--config", str(tmp_path / "none.toml"), "--left", PX, "--right", DD, "-s", "x"
        ).exit_code
        == 2
    )


def test_compare_a_source_down_exits_1(world: World, tmp_path: Path) -> None:
    config = tmp_path / "down.toml"
    config.write_text(
        world.config.read_text().replace(world.sim.base_url, "http://127.0.0.1:9"), encoding="utf-8"
    )
    result = _run("compare", "--config", str(config), "--left", PX, "--right", DD, "-s", world.sessions[0])
    assert result.exit_code == 1, result.output
    assert "source_unavailable" in result.output


# --- export ---------------------------------------------------------------------------------


def test_export_jsonl_and_csv(world: World, tmp_path: Path) -> None:
    out = tmp_path / "all.jsonl"
    result = _run(
        "export",
        "--config",
        str(world.config),
        "--subject-ids-file",
        str(world.ids_file),
        "--output",
        str(out),
    )
    assert result.exit_code == 0, result.output
    assert "━" not in result.output  # no progress bar when stderr is not a terminal
    items = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(items) == len({i["id"] for i in items}) == world.dd_annotations + world.px_annotations
    assert f"exported {len(items)} annotations" in result.output
    assert not (tmp_path / "all.jsonl.partial").exists()

    as_csv = _run(
        "export", "--config", str(world.config), "-f", "csv", "-s", world.sessions[0], "--source", DD
    )
    assert as_csv.exit_code == 0, as_csv.output
    records = list(csv.DictReader(io.StringIO(as_csv.stdout.split("exported")[0])))
    assert {r["source"] for r in records} == {DD}
    assert len(records) == 3  # alice: resolution + helpfulness; bob: resolution


def test_export_partial_and_bad_arguments(world: World, tmp_path: Path) -> None:
    config = tmp_path / "down.toml"
    config.write_text(
        world.config.read_text().replace(world.sim.base_url, "http://127.0.0.1:9"), encoding="utf-8"
    )
    out = tmp_path / "partial.jsonl"
    args = [
        "export",
        "--config",
        str(config),
        "--subject-ids-file",
        str(world.ids_file),
        "--output",
        str(out),
    ]
    result = _run(*args)
    assert result.exit_code == 1, result.output
    assert f"failed: {DD}" in result.output
    *data, trailer = (json.loads(line) for line in out.read_text(encoding="utf-8").splitlines())
    assert len(data) == world.px_annotations
    assert trailer["_export"]["sources"][0]["source"] == DD
    denied = tmp_path / "denied.jsonl"
    deny = _run(*args[:-1], str(denied), "--partial", "deny")
    assert deny.exit_code == 1
    assert not denied.exists()
    assert "nothing exported" in deny.output
    assert _run("export", "--config", str(world.config)).exit_code == 2
    assert _run("export", "--config", str(world.config), "-s", "x", "--source", "nope").exit_code == 2
    assert _run("export", "--config", str(world.config), "-s", "x", "--format", "xml").exit_code == 2


@pytest.mark.parametrize("command", ["query", "export", "changes", "metrics", "agreement"])
def test_every_reading_command_exits_2_on_what_the_api_refuses(world: World, command: str) -> None:
    """One table from a run's error to an exit code (``cli._inputs.command_errors``): an unknown
    source — the API's 422 — exits 2 with the API's code and words whichever command read it
    (``query`` exited 1 before the table was shared)."""
    result = _run(command, "--config", str(world.config), "-s", "x", "--source", "nope")
    assert result.exit_code == 2, result.output
    assert "validation_error: unknown source 'nope'" in result.output
    assert "known:" in result.output


# --- migrate --------------------------------------------------------------------------------


def _migrate(world: World, *extra: str) -> Any:
    return _run(
        "migrate",
        "--config",
        str(world.config),
        "--from",
        DD,
        "--to",
        PX,
        "--subject-ids-file",
        str(world.ids_file),
        *extra,
    )


def _migrated_in_phoenix(world: World) -> list[dict[str, Any]]:
    result = _run(
        "export", "--config", str(world.config), "--subject-ids-file", str(world.ids_file), "--source", PX
    )
    assert result.exit_code == 0, result.output
    items = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return [i for i in items if (i["metadata"].get("migrated_from") or {}).get("source") == DD]


def test_migrate_then_again_writes_nothing_and_verifies(world: World, tmp_path: Path) -> None:
    dry = _migrate(world, "--dry-run", "--format", "json")
    assert dry.exit_code == 0, dry.output
    dry_doc = json.loads(dry.stdout)
    assert dry_doc["report"]["dry_run"] is True
    assert dry_doc["report"]["written"] == world.dd_annotations
    assert dry_doc["verify"] is None
    assert _migrated_in_phoenix(world) == []

    checkpoint = tmp_path / "ckpt.json"
    first = _migrate(world, "--checkpoint", str(checkpoint), "--format", "json")
    assert first.exit_code == 0, first.output
    doc = json.loads(first.stdout)
    assert doc["report"]["written"] == world.dd_annotations
    assert doc["report"]["failed"] == 0
    assert doc["verify"]["differences"] == 0
    assert len(_migrated_in_phoenix(world)) == world.dd_annotations

    again = _migrate(world, "--checkpoint", str(checkpoint))
    assert again.exit_code == 0, again.output
    table = " ".join(again.stdout.split())
    assert "verify: 0 differences" in table
    assert f"unchanged │ {world.dd_annotations}" in table
    assert "written │ 0" in table
    assert len(_migrated_in_phoenix(world)) == world.dd_annotations


def test_migrate_scope_all_twice_then_compare_scope_all_agrees(bare_world: World, tmp_path: Path) -> None:
    """``--scope all``: no id file; the second run writes nothing; comparing the two scopes after
    it finds no differences (the copies compared with their originals)."""
    world = bare_world
    cfg = ["--config", str(world.config)]
    checkpoint = tmp_path / "scope.ckpt.json"
    move = ["migrate", *cfg, "--from", DD, "--to", PX, "--scope", "all", "--checkpoint", str(checkpoint)]
    first = _run(*move, "--format", "json")
    assert first.exit_code == 0, first.output
    doc = json.loads(first.stdout)
    assert doc["report"]["written"] == world.dd_annotations
    assert doc["report"]["failed"] == 0
    assert doc["verify"]["differences"] == 0
    assert len(_migrated_in_phoenix(world)) == world.dd_annotations

    again = _run(*move, "--format", "json")
    assert again.exit_code == 0, again.output
    redo = json.loads(again.stdout)["report"]
    assert (redo["written"], redo["updated"], redo["unchanged"]) == (0, 0, world.dd_annotations)

    compared = _run(
        "compare", *cfg, "--left", DD, "--right", PX, "--scope", "all", "--include-copies", "-f", "json"
    )
    assert compared.exit_code == 0, compared.output
    body = json.loads(compared.stdout)
    assert {r["status"] for r in body["rows"]} == {"agree"}
    assert len({r["subject_id"] for r in body["rows"]}) == len(DD_SESSIONS)
    # Without --include-copies the copies are left out and counted, never silently compared.
    plain = json.loads(
        _run("compare", *cfg, "--left", DD, "--right", PX, "--scope", "all", "-f", "json").stdout
    )
    assert plain["ignored"]["right_copied_from_left"] == world.dd_annotations


def test_migrate_and_compare_refuse_ids_with_scope(world: World) -> None:
    cfg = ["--config", str(world.config)]
    both = _run("migrate", *cfg, "--from", DD, "--to", PX, "--scope", "all", "-s", world.sessions[0])
    assert both.exit_code == 2
    assert "not both" in both.output
    cmp = _run("compare", *cfg, "--left", DD, "--right", PX, "--scope", "all", "-s", world.sessions[0])
    assert cmp.exit_code == 2
    assert "not both" in cmp.output


def test_migrate_bad_arguments_exit_2(world: World, tmp_path: Path) -> None:
    cfg = ["migrate", "--config", str(world.config)]
    assert _run(*cfg, "--from", DD, "-s", "x").exit_code == 2
    same = _run(*cfg, "--from", DD, "--to", DD, "-s", "x")
    assert same.exit_code == 2
    unknown = _run(*cfg, "--from", "nope", "--to", PX, "-s", "x")
    assert unknown.exit_code == 2
    assert "unknown source 'nope'" in unknown.output
    assert _run(*cfg, "--from", DD, "--to", PX).exit_code == 2  # no subjects
    no_project = _run(*cfg, "--from", PX, "--to", DD, "--subject-ids-file", str(world.ids_file))
    assert no_project.exit_code == 2
    assert "--datadog-project" in no_project.output
    other = tmp_path / "other.json"
    other.write_text(
        '{"version": 1, "source": "x", "target": "y", "name_map": {}, "subjects_total": 1, '
        '"subjects_sha256": "0"}',
        encoding="utf-8",
    )
    mismatch = _migrate(world, "--checkpoint", str(other))
    assert mismatch.exit_code == 2
    assert "another migration" in mismatch.output


def test_migrate_phoenix_to_datadog_through_queues(world: World) -> None:
    result = _run(
        "migrate",
        "--config",
        str(world.config),
        "--from",
        PX,
        "--to",
        DD,
        "--subject-ids-file",
        str(world.ids_file),
        "--datadog-project",
        "llm-obs-project-1",
        "--format",
        "json",
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["report"]["method"] == "annotation_queues"
    assert doc["report"]["written"] == world.px_annotations
    assert doc["verify"]["differences"] == 0


def _compare_json(world: World, *extra: str, left: str = PX, right: str = DD) -> dict[str, Any]:
    result = _run(
        "compare",
        "--config",
        str(world.config),
        "--left",
        left,
        "--right",
        right,
        "--subject-ids-file",
        str(world.ids_file),
        "--score-tolerance",
        "0.001",
        "--format",
        "json",
        *extra,
    )
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout))


def _reasoning_origin(item: dict[str, Any]) -> str | None:
    """The source named by a Datadog annotation's last reasoning line, parsed by hand."""
    datadog = item["extensions"]["datadog"]
    text = (datadog.get("reasoning") if datadog["label_type"] == "text" else item["explanation"]) or ""
    last = text.splitlines()[-1] if text else ""
    return (
        json.loads(last.removeprefix("migrated_from: "))["source"]
        if last.startswith("migrated_from: ")
        else None
    )


def test_compare_after_migrate_shows_the_same_disagreement_and_copies_never_go_back(
    world: World, tmp_path: Path
) -> None:
    """Issue 15: migrating Datadog → Phoenix must not make Phoenix seem to agree with Datadog,
    and migrating Phoenix → Datadog afterwards must not copy Datadog's own annotations back."""
    s = world.sessions
    before = _compare_json(world)
    resolution = next(x for x in before["summary"] if x["name"] == "resolution")
    # Paired 4-7 (Phoenix, Datadog): (unresolved, unresolved), (escalated, escalated),
    # (unresolved, resolved), (escalated, unresolved): agreement 2/4; kappa with n = 4, 2 agreeing,
    # chance S = u 2*2 + e 2*1 = 6: (4*2 - 6) / (16 - 6) = 0.2.
    assert (resolution["agreement_rate"], resolution["n_labelled"]) == (0.5, 4)
    assert resolution["cohen_kappa"] == pytest.approx(0.2)
    assert before["ignored"]["left_copied_from_right"] == before["ignored"]["right_copied_from_left"] == 0

    there = _migrate(world, "--format", "json")
    assert there.exit_code == 0, there.output
    assert json.loads(there.stdout)["report"]["written"] == world.dd_annotations

    # Phoenix now holds its own judgement and, newer, the copy of Datadog's on 4-7. Left out:
    after = _compare_json(world)
    for key in ("rows", "summary", "overall"):
        assert after[key] == before[key], key
    assert after["ignored"]["left_copied_from_right"] == world.dd_annotations
    assert after["ignored"]["right_copied_from_left"] == 0
    reverse = _compare_json(world, left=DD, right=PX)
    assert reverse["ignored"]["right_copied_from_left"] == world.dd_annotations
    # Asked for, the copies are compared: on 6 and 7 Phoenix's group holds its own label and the
    # copy of Datadog's (one vote each; which wins the tie depends on Phoenix's 1-second
    # timestamps of the seed and the copy, so the test checks the votes, not the winner).
    included = _compare_json(world, "--include-copies")
    rows = {(r["subject_id"], r["name"]): r for r in included["rows"]}
    for subject in (s[6], s[7]):
        row = rows[(subject, "resolution")]
        assert row["left"]["count"] == 2
        assert row["left"]["label_votes"] == {
            label: 1 for label in (row["left"]["label_votes"].keys() | {row["right"]["label"]})
        }
        assert row["right"]["label"] in row["left"]["label_votes"]
    assert included["ignored"]["left_copied_from_right"] == 0
    assert included["rows"] != after["rows"]

    table = _run(
        "compare",
        "--config",
        str(world.config),
        "--left",
        PX,
        "--right",
        DD,
        "--subject-ids-file",
        str(world.ids_file),
    )
    assert table.exit_code == 0, table.output
    assert f"not compared: {world.dd_annotations} annotations of {PX} copied from {DD}" in " ".join(
        table.stdout.split()
    )
    report = tmp_path / "after.html"
    html = _run(
        "compare",
        "--config",
        str(world.config),
        "--left",
        PX,
        "--right",
        DD,
        "--subject-ids-file",
        str(world.ids_file),
        "--format",
        "html",
        "--output",
        str(report),
    )
    assert html.exit_code == 0, html.output
    assert f"{PX}: {world.dd_annotations} copied from {DD}" in report.read_text(encoding="utf-8")

    # Phoenix → Datadog: only Phoenix's own annotations; the Datadog-originated copies stay put.
    back = ["--from", PX, "--to", DD, "--datadog-project", "llm-obs-project-1"]
    migrate_back = [
        "migrate",
        "--config",
        str(world.config),
        *back,
        "--subject-ids-file",
        str(world.ids_file),
    ]
    dry = _run(*migrate_back, "--dry-run", "--format", "json")
    assert dry.exit_code == 0, dry.output
    dry_report = json.loads(dry.stdout)["report"]
    assert dry_report["annotations_read"] == world.px_annotations + world.dd_annotations
    assert (dry_report["written"], dry_report["skipped_copies"], dry_report["failed"]) == (
        world.px_annotations,
        world.dd_annotations,
        0,
    )
    real = _run(*migrate_back, "--format", "json")
    assert real.exit_code == 0, real.output
    doc = json.loads(real.stdout)
    assert (doc["report"]["written"], doc["report"]["skipped_copies"]) == (
        world.px_annotations,
        world.dd_annotations,
    )
    assert doc["verify"]["differences"] == 0
    again = _run(*migrate_back)
    assert again.exit_code == 0, again.output
    flat = " ".join(again.stdout.split())
    assert f"skipped: copies of {DD} │ {world.dd_annotations}" in flat
    assert f"unchanged │ {world.px_annotations}" in flat

    exported = _run(
        "export", "--config", str(world.config), "--subject-ids-file", str(world.ids_file), "--source", DD
    )
    assert exported.exit_code == 0, exported.output
    items = [json.loads(line) for line in exported.stdout.splitlines() if line.startswith("{")]
    copies = [i for i in items if i["queue"]["name"].startswith(f"migrated-from-{PX}")]
    # One Datadog annotation per Phoenix annotation (one label each), all naming Phoenix.
    assert len(copies) == world.px_annotations
    assert {_reasoning_origin(i) for i in copies} == {PX}
    assert len(items) == world.dd_annotations + world.px_annotations

    # Both sides hold copies of the other now; the comparison is still the one before any copy.
    final = _compare_json(world)
    for key in ("rows", "summary", "overall"):
        assert final[key] == before[key], key
    assert (final["ignored"]["left_copied_from_right"], final["ignored"]["right_copied_from_left"]) == (
        world.dd_annotations,
        world.px_annotations,
    )


def test_migrate_interrupted_by_ctrl_c_then_resumed(world: World, tmp_path: Path) -> None:
    checkpoint = tmp_path / "ckpt.json"
    args = [
        sys.executable,
        "-m",
        "annotation_gateway.cli",
        "migrate",
        "--config",
        str(world.config),
        "--from",
        DD,
        "--to",
        PX,
        "--subject-ids-file",
        str(world.ids_file),
        "--checkpoint",
        str(checkpoint),
        "--batch-size",
        "1",
        "--concurrency",
        "1",
    ]
    world.sim.configure(latency_ms=250)  # each batch takes a few simulator calls: seconds in all
    try:
        proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy()
        )
        deadline = time.monotonic() + INTERRUPT_TIMEOUT_S
        while time.monotonic() < deadline and proc.poll() is None:
            if checkpoint.exists() and json.loads(checkpoint.read_text())["completed_subjects"]:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the migration ended before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=INTERRUPT_TIMEOUT_S)
    finally:
        world.sim.configure(latency_ms=0)
    assert proc.returncode == 130, out + err
    assert "interrupted" in err
    assert "run the same command again to resume" in err
    state = json.loads(checkpoint.read_text())
    done = len(state["completed_subjects"])
    assert 0 < done < N_SESSIONS
    assert state["finished"] is False

    resumed = _migrate(world, "--checkpoint", str(checkpoint), "--format", "json")
    assert resumed.exit_code == 0, resumed.output
    doc = json.loads(resumed.stdout)
    assert doc["report"]["subjects_resumed"] == done
    # Totals over the whole migration equal one clean run: every annotation exactly once.
    report = doc["report"]
    assert report["written"] + report["updated"] + report["unchanged"] == world.dd_annotations
    assert doc["verify"]["differences"] == 0
    assert len(_migrated_in_phoenix(world)) == world.dd_annotations


def test_export_and_query_over_a_scope(world: World) -> None:
    cfg = ["--config", str(world.config)]
    by_ids = _run("export", *cfg, "--subject-ids-file", str(world.ids_file), "--subject-kind", "session")
    scoped = _run("export", *cfg, "--scope", "all", "--subject-kind", "session")
    assert by_ids.exit_code == 0, by_ids.output
    assert scoped.exit_code == 0, scoped.output
    expected = sorted(line for line in by_ids.stdout.splitlines() if line.startswith("{"))
    assert sorted(line for line in scoped.stdout.splitlines() if line.startswith("{")) == expected
    assert len(expected) == world.dd_annotations + world.px_annotations
    table = _run("query", *cfg, "--scope", "all", "--subject-kind", "session", "--limit", "5")
    assert table.exit_code == 0, table.output
    assert "subject(s) scanned" in table.stdout
    neither = _run("query", *cfg)
    assert neither.exit_code == 2
    assert "scope=all" in neither.output


def _dd_seed_more(world: World, sessions: range) -> None:
    """New Datadog reviews on ``sessions``, in the world's queue."""
    [queue] = world.sim.state.store.queues.values()
    world.sim.seed(
        {
            "queues": [
                {
                    "id": queue.id,
                    "name": queue.name,
                    "interactions": [
                        {
                            "type": "session",
                            "content_id": world.sessions[i],
                            "annotations": [
                                {
                                    "user": "carol",
                                    "label_values": {"resolution": ["escalated"], "helpfulness": 0.25},
                                }
                            ],
                        }
                        for i in sessions
                    ],
                }
            ]
        }
    )


def _compare_scopes_agree(world: World) -> dict[str, Any]:
    cfg = ["--config", str(world.config)]
    result = _run(
        "compare", *cfg, "--left", DD, "--right", PX, "--scope", "all", "--include-copies", "-f", "json"
    )
    assert result.exit_code == 0, result.output
    body: dict[str, Any] = json.loads(result.stdout)
    return body


def test_migrate_follow_keeps_the_target_in_step(bare_world: World, tmp_path: Path) -> None:
    world = bare_world
    state = tmp_path / "follow.json"
    follow = [
        "migrate",
        "--config",
        str(world.config),
        "--from",
        DD,
        "--to",
        PX,
        "--scope",
        "all",
        "--follow",
    ]
    follow += ["--checkpoint", str(state), "--interval", "0"]
    first = _run(*follow, "--max-rounds", "2")
    assert first.exit_code == 0, first.output
    assert f"written {world.dd_annotations}" in first.output
    assert {r["status"] for r in _compare_scopes_agree(world)["rows"]} == {"agree"}

    _dd_seed_more(world, range(8, 10))  # two sessions Datadog had not reviewed yet
    again = _run(*follow, "--max-rounds", "2")
    assert again.exit_code == 0, again.output
    assert "written 4" in again.output  # carol's two label values on each of the two sessions
    body = _compare_scopes_agree(world)
    assert {r["status"] for r in body["rows"]} == {"agree"}
    assert {world.sessions[8], world.sessions[9]} <= {r["subject_id"] for r in body["rows"]}

    idle = _run(*follow, "--max-rounds", "1")
    assert idle.exit_code == 0, idle.output
    assert "round" in idle.output
    assert "0 change(s)" in idle.output  # nothing new: the state file remembered where it was
    other = _run("migrate", "--config", str(world.config), "--from", DD, "--to", PX, "-s", world.sessions[0],
                 "--follow", "--checkpoint", str(state), "--max-rounds", "1")  # fmt: skip
    assert other.exit_code == 2
    assert "another follow" in other.output


def test_migrate_follow_stops_cleanly_on_ctrl_c_while_writes_continue(
    bare_world: World, tmp_path: Path
) -> None:
    world = bare_world
    state = tmp_path / "follow.json"
    env = {**os.environ, **world.sim.environ}
    command = [sys.executable, "-m", "annotation_gateway.cli", "migrate", "--config", str(world.config),
               "--from", DD, "--to", PX, "--scope", "all", "--follow", "--checkpoint", str(state),
               "--interval", "0.2"]  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + INTERRUPT_TIMEOUT_S
        while not state.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert state.exists(), "the follow never completed a round"
        _dd_seed_more(world, range(8, 10))  # writes while it runs
        agreed = False
        while time.monotonic() < deadline and not agreed:
            rows = _compare_scopes_agree(world)["rows"]
            agreed = {r["status"] for r in rows} == {"agree"} and world.sessions[9] in {
                r["subject_id"] for r in rows
            }
            if not agreed:
                time.sleep(0.2)
        assert agreed, "the target never caught up with the source"
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=INTERRUPT_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert "stopped" in err
    assert json.loads(state.read_text())["since"]


def test_changes_command_prints_json_lines_and_resumes(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_CURSOR_SECRET", "cli-changes-secret-0123456789")
    cfg = ["--config", str(world.config)]
    first = _run("changes", *cfg, "--scope", "all", "--source", DD, "--limit", "5")
    assert first.exit_code == 0, first.output
    lines = [json.loads(line) for line in first.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == world.dd_annotations  # every change, page after page, until caught up
    assert [a["updated_at"] for a in lines] == sorted(a["updated_at"] for a in lines)
    since = [line for line in first.stderr.splitlines() if line.startswith("next_since: ")][-1].split(
        ": ", 1
    )[1]
    _dd_seed_more(world, range(9, 10))
    resumed = _run("changes", *cfg, "--scope", "all", "--source", DD, "--since", since)
    assert resumed.exit_code == 0, resumed.output
    new = [json.loads(line) for line in resumed.stdout.splitlines() if line.startswith("{")]
    assert {a["subject"]["id"] for a in new} == {world.sessions[9]}
    tampered = _run("changes", *cfg, "--scope", "all", "--source", PX, "--since", since)
    assert tampered.exit_code == 2
    assert "invalid_cursor" in tampered.output


def test_migrate_with_a_source_that_cannot_be_built_exits_2_as_a_config_error(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(API_KEY_ENV)
    result = _run("migrate", "--config", str(world.config), "--from", DD, "--to", PX, "-s", world.sessions[0])
    assert result.exit_code == 2, result.output
    assert "config error:" in result.output
    assert API_KEY_ENV in result.output
