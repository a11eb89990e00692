"""The command line and the demo, against the real Phoenix and the Datadog simulator.

- ``hash-key``, ``check``, ``query`` run in-process through typer's runner;
- ``serve`` runs as a real subprocess (the console script), answers over HTTP and stops cleanly
  on SIGTERM; auth switched off on a non-loopback host is refused before anything listens;
- the demo's stack comes up on the suite's Phoenix, and the very ``curl`` lines it prints are run
  with curl and answer with annotations from both vendors; the command lines it prints run as
  printed in ``bash`` with a ``PATH`` that lacks the virtualenv, and one of them reaches the
  trace-level annotations;
- ``-s trace:<id>`` (the way the query table prints a trace) finds that trace's annotations in
  ``query`` and ``export``;
- tables keep every id whole: at 80 columns (``COLUMNS=80``) and when piped (one line per row).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from annotation_gateway.api.serving import free_port
from annotation_gateway.cli import app as cli_app
from annotation_gateway.demo import (
    DATADOG_SOURCE,
    PHOENIX_SOURCE,
    DemoStack,
    _self_check,
    cli_examples,
    curl_examples,
    demo_config_toml,
    demo_stack,
)
from annotation_gateway.demo_data import SESSIONS, trace_id_for
from annotation_gateway.devservers.phoenix import PhoenixServer
from annotation_gateway.settings import hash_key
from tests.api.conftest import (
    ADMIN_KEY,
    ApiData,
    closed_port_url,
)
from tests.api.conftest import (
    DATADOG_SOURCE as TEST_DD,
)
from tests.api.conftest import (
    PHOENIX_SOURCE as TEST_PHX,
)
from tests.plugins.datadog import API_KEY_ENV, APP_KEY_ENV

runner = CliRunner()
SERVE_START_TIMEOUT_S = 30.0
SERVE_STOP_TIMEOUT_S = 15.0


def _config(tmp_path: Path, api_data: ApiData, *, datadog_url: str | None = None, auth: bool = True) -> Path:
    sim = api_data.simulator
    path = tmp_path / "gateway.toml"
    path.write_text(
        f"""
[server]
host = "127.0.0.1"
port = {free_port()}

[auth]
enabled = {"true" if auth else "false"}
{"" if not auth else f'[[auth.keys]]{chr(10)}name = "admin"{chr(10)}sha256 = "{hash_key(ADMIN_KEY)}"'}

[[sources]]
name = "{TEST_PHX}"
provider = "phoenix"
base_url = "{api_data.phoenix.base_url}"
project = "{api_data.project}"
retry_attempts = 1

[[sources]]
name = "{TEST_DD}"
provider = "datadog"
base_url = "{datadog_url or sim.base_url}"
api_key_env = "{API_KEY_ENV}"
app_key_env = "{APP_KEY_ENV}"
retry_attempts = 1
""",
        encoding="utf-8",
    )
    return path


def test_hash_key_reads_stdin() -> None:
    result = runner.invoke(cli_app, ["hash-key"], input="test\n")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == hash_key("test")
    assert "test\n" not in result.output.replace(hash_key("test"), "")
    assert runner.invoke(cli_app, ["hash-key"], input="\n").exit_code == 2


@pytest.mark.usefixtures("_vendor_env")
def test_check_reports_every_source(tmp_path: Path, api_data: ApiData) -> None:
    ok = runner.invoke(cli_app, ["check", "--config", str(_config(tmp_path, api_data))])
    assert ok.exit_code == 0, ok.output
    assert "every source answered" in ok.output
    assert TEST_PHX in ok.output
    assert api_data.simulator.api_key not in ok.output
    down = runner.invoke(
        cli_app, ["check", "--config", str(_config(tmp_path, api_data, datadog_url=closed_port_url()))]
    )
    assert down.exit_code == 1, down.output
    assert "unreachable or misconfigured" in down.output


def test_check_names_the_wrong_config_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[auth]\nenabled = false\n[[sources]]\nname = "p"\nprovider = "phoenix"\nproject = "x"\n')
    result = runner.invoke(cli_app, ["check", "--config", str(bad)])
    assert result.exit_code == 2
    assert "sources[0].base_url" in result.output
    missing = runner.invoke(cli_app, ["check", "--config", str(tmp_path / "nope.toml")])
    assert missing.exit_code == 2
    assert "does not exist" in " ".join(missing.output.split())


@pytest.mark.usefixtures("_vendor_env")
def test_query_prints_json_and_table(tmp_path: Path, api_data: ApiData) -> None:
    config = str(_config(tmp_path, api_data))
    args = ["query", "--config", config, "--format", "json", "--limit", "1000"]
    for sid in api_data.session_ids:
        args += ["--subject-id", sid]
    result = runner.invoke(cli_app, args)
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert len(body["data"]) == api_data.total
    assert body["partial"] is False
    table = runner.invoke(
        cli_app,
        [
            "query",
            "--config",
            config,
            "-s",
            api_data.session_ids[8],
            "--name",
            "resolution",
            "--all",
            "--limit",
            "1",
        ],
    )
    assert table.exit_code == 0, table.output
    assert "3 annotation(s)" in table.output  # 1 from Phoenix, 2 from Datadog (alice and bob)
    assert f"{TEST_PHX} ok" in table.output
    assert f"{TEST_DD} ok" in table.output


def test_serve_refuses_auth_off_on_a_public_host(tmp_path: Path, api_data: ApiData) -> None:
    config = _config(tmp_path, api_data, auth=False)
    result = runner.invoke(cli_app, ["serve", "--config", str(config), "--host", "0.0.0.0"])
    assert result.exit_code == 2
    assert "loopback" in result.output


@pytest.fixture
def served(
    tmp_path: Path, api_data: ApiData, _vendor_env: None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    config = _config(tmp_path, api_data)
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "annotation_gateway.cli",
            "serve",
            "--config",
            str(config),
            "--port",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=dict(os.environ),
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVE_START_TIMEOUT_S
        while True:
            try:
                if httpx.get(f"{base_url}/healthz", timeout=1, trust_env=False).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "serve did not start"
            time.sleep(0.1)
        yield base_url, proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(SERVE_STOP_TIMEOUT_S)
        log.close()


def test_serve_answers_and_stops_on_sigterm(
    served: tuple[str, subprocess.Popen[bytes]], api_data: ApiData, tmp_path: Path
) -> None:
    base_url, proc = served
    r = httpx.get(
        f"{base_url}/v1/annotations",
        params={"subject_id": api_data.session_ids, "limit": 1000},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        trust_env=False,
        timeout=30,
    )
    assert r.status_code == 200, r.text[:300]
    assert len(r.json()["data"]) == api_data.total
    proc.send_signal(signal.SIGTERM)
    # uvicorn shuts down gracefully, then re-raises the signal so the exit status tells why.
    assert proc.wait(SERVE_STOP_TIMEOUT_S) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in (tmp_path / "serve.log").read_text()


@pytest.fixture(scope="module")
def demo(phoenix_server: PhoenixServer) -> Iterator[tuple[DemoStack, list[str]]]:
    """The demo's stack on the suite's Phoenix (it seeds the ``support-bot`` project: once per
    session), and the progress messages it printed."""
    messages: list[str] = []
    with demo_stack(
        gateway_port=0, simulator_port=0, phoenix=phoenix_server, progress=messages.append
    ) as stack:
        yield stack, messages


@pytest.fixture
def demo_config(demo: tuple[DemoStack, list[str]], tmp_path: Path) -> Path:
    config = tmp_path / "demo.toml"
    config.write_text(demo_config_toml(demo[0]), encoding="utf-8")
    return config


def test_demo_stack_and_its_curl_lines(demo: tuple[DemoStack, list[str]], tmp_path: Path) -> None:
    stack, messages = demo
    assert stack.gateway_url.startswith("http://127.0.0.1:")
    assert "annotations for 12 sessions" in _self_check(stack)
    lines = [line for line in curl_examples(stack) if line.startswith("curl -s ")]
    answers = []
    for line in lines:
        command = shlex.split(line.split(" | ")[0].split(";")[0])
        done = subprocess.run(command, capture_output=True, timeout=30, check=True)
        answers.append(json.loads(done.stdout))
    both = answers[0]
    assert {a["provider"] for a in both["data"]} == {"phoenix", "datadog"}
    assert {a["name"] for a in both["data"]} == {"resolution"}
    agree = [a["label"] for a in both["data"] if a["subject"]["id"] == SESSIONS[0].id]
    assert agree == ["resolved", "resolved"]
    differ = {a["provider"]: a["label"] for a in both["data"] if a["subject"]["id"] == SESSIONS[6].id}
    assert differ["phoenix"] != differ["datadog"]
    one_sided = answers[1]
    assert len(one_sided["data"]) == 5
    assert one_sided["next_cursor"]
    assert {a["annotator"]["kind"] for a in answers[2]["data"]} == {"LLM"}
    assert {s["name"] for s in answers[3]["data"]} == {PHOENIX_SOURCE, DATADOG_SOURCE}
    scoped = answers[4]  # scope=all: no ids, subject order, what each source scanned
    assert len(scoped["data"]) == 5
    assert scoped["next_cursor"]
    assert {a["name"] for a in scoped["data"]} == {"resolution"}
    subjects = [a["subject"]["id"] for a in scoped["data"]]
    assert subjects == sorted(subjects)
    assert all(isinstance(s["scanned_subjects"], int) for s in scoped["sources"])
    metrics, agreement = answers[5], answers[6]
    assert {(r["name"], r["source"]) for r in metrics["rows"]} >= {
        ("resolution", PHOENIX_SOURCE),
        ("resolution", DATADOG_SOURCE),
    }
    everything = httpx.post(
        f"{stack.gateway_url}/v1/annotations/search",
        json={"subject_ids": [x.id for x in SESSIONS] + _TRACES, "limit": 1000},
        headers={"Authorization": f"Bearer {stack.gateway_key}"},
        timeout=30,
    ).json()["data"]
    assert sum(r["count"] for r in metrics["rows"]) == len(everything) >= _ON_SESSIONS + _ON_TRACES
    [resolution] = agreement["results"]
    assert resolution["raters"] == sorted([PHOENIX_SOURCE, DATADOG_SOURCE])
    # Sessions 01-09 are in both vendors; 07-09 differ (demo_data.py).
    assert resolution["subjects"] == 9
    assert resolution["disagreements"] == [SESSIONS[i].id for i in (6, 7, 8)]
    config = tmp_path / "demo.toml"
    config.write_text(demo_config_toml(stack), encoding="utf-8")
    result = runner.invoke(
        cli_app, ["query", "--config", str(config), "-s", SESSIONS[6].id, "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    assert {a["provider"] for a in json.loads(result.stdout)["data"]} == {"phoenix", "datadog"}
    assert any("seeded" in m for m in messages)


def test_demo_prints_urls_not_a_macos_open(demo: tuple[DemoStack, list[str]]) -> None:
    stack, _ = demo
    lines = curl_examples(stack)
    assert not [line for line in lines if line.split()[0] == "open"]
    assert f"{stack.gateway_url}/docs" in [line.split()[0] for line in lines]


# The demo's data: Phoenix reviews every session but 12 (3 annotations each) and judges every
# turn (trace) of those; Datadog labels every session but 10 and 11 (3 or 4 label values each).
_TRACES = [trace_id_for(s.id, turn) for s in SESSIONS for turn in range(len(s.turns))]
_ON_TRACES = sum(len(s.correct_turns) for s in SESSIONS)
_ON_SESSIONS = sum(3 for s in SESSIONS if s.phoenix) + sum(
    3 + bool(s.datadog.feedback) for s in SESSIONS if s.datadog
)


def test_demo_self_check_counts_sessions_and_traces_apart(demo: tuple[DemoStack, list[str]]) -> None:
    assert (_ON_SESSIONS, _ON_TRACES, len(_TRACES)) == (68, 16, 17)
    line = _self_check(demo[0])
    assert line.startswith("gateway answers 68 annotations for 12 sessions and 16 for their 17 traces (")
    assert "phoenix-local ok 49" in line
    assert "datadog-sim ok 35" in line


def test_demo_command_lines_run_as_printed_without_the_venv_on_path(demo_config: Path) -> None:
    lines = cli_examples(demo_config)
    export, *queries = lines
    assert export.startswith("export ")
    bare_path = "/usr/bin:/bin"
    assert shutil.which("annotation-gateway", path=bare_path) is None  # what `make run` leaves
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "COLUMNS")}
    env["PATH"] = bare_path
    outputs = []
    for query in queries:
        assert Path(shlex.split(query)[0]).is_absolute(), query
        done = subprocess.run(
            ["bash", "-c", f"{export} && {query}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, (query, done.stdout, done.stderr)
        outputs.append(done.stdout)
    sessions, traces = outputs
    assert f"{PHOENIX_SOURCE} ok" in sessions
    assert f"{DATADOG_SOURCE} ok" in sessions
    for sid in (SESSIONS[6].id, SESSIONS[8].id):
        assert sid in sessions
    # The trace line reaches the trace-level annotations (Phoenix's correctness judge).
    assert "2 annotation(s)" in traces
    for turn in range(len(SESSIONS[6].turns)):
        assert f"trace:{trace_id_for(SESSIONS[6].id, turn)}" in traces
    assert "correctness" in traces


def _query_json(config: Path, *args: str) -> list[dict[str, object]]:
    result = runner.invoke(cli_app, ["query", "--config", str(config), "--format", "json", "--all", *args])
    assert result.exit_code == 0, result.output
    data: list[dict[str, object]] = json.loads(result.stdout)["data"]
    return data


def test_query_takes_the_kind_prefix_the_table_prints(demo_config: Path) -> None:
    t0, t1 = (trace_id_for(SESSIONS[6].id, turn) for turn in range(2))
    traces = _query_json(demo_config, "-s", f"trace:{t0}", "-s", f"trace:{t1}")
    got = sorted((a["subject"]["kind"], a["subject"]["id"], a["name"]) for a in traces)
    assert got == [("trace", t, "correctness") for t in sorted((t0, t1))]
    # Several kinds: each id is found under its own kind (not trace AND session).
    mixed = _query_json(demo_config, "-s", f"trace:{t0}", "-s", f"session:{SESSIONS[6].id}")
    kinds = {(a["subject"]["kind"], a["subject"]["id"]) for a in mixed}
    assert kinds == {("trace", t0), ("session", SESSIONS[6].id)}
    assert len(mixed) == 1 + 7  # the trace's judge; Phoenix 3 + Datadog 4 on the session
    # A prefixed id next to an unprefixed one: the unprefixed id is still found whatever its kind.
    assert len(_query_json(demo_config, "-s", f"trace:{t0}", "-s", t1)) == 2
    # --subject-kind still narrows the ids without a prefix; a prefix adds its kind to it.
    assert _query_json(demo_config, "--subject-kind", "session", "-s", t1) == []
    both = _query_json(demo_config, "--subject-kind", "session", "-s", SESSIONS[6].id, "-s", f"trace:{t0}")
    assert len(both) == 1 + 7
    # Text with a colon that is not a kind prefix is an id as it is.
    assert _query_json(demo_config, "-s", f"turn:{t0}") == []


def test_export_reaches_the_trace_annotations(demo_config: Path, tmp_path: Path) -> None:
    ids = tmp_path / "subjects.txt"
    ids.write_text("\n".join([s.id for s in SESSIONS] + [f"trace:{t}" for t in _TRACES]) + "\n")
    out = tmp_path / "all.jsonl"
    result = runner.invoke(
        cli_app,
        ["export", "--config", str(demo_config), "--subject-ids-file", str(ids), "--output", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert f"exported {_ON_SESSIONS + _ON_TRACES} annotations" in result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sum(r.get("subject", {}).get("kind") == "trace" for r in rows) == _ON_TRACES


_TABLE_ROW = re.compile(r"^\d\d-\d\d \d\d:\d\d:\d\d ")


def test_query_table_keeps_ids_whole_at_80_columns_and_in_a_pipe(demo_config: Path) -> None:
    t0 = trace_id_for(SESSIONS[6].id, 0)
    args = ["query", "--config", str(demo_config), "-s", SESSIONS[6].id, "-s", SESSIONS[11].id]
    args += ["-s", f"trace:{t0}", "--subject-kind", "session"]
    narrow = runner.invoke(cli_app, args, env={"COLUMNS": "80"})
    assert narrow.exit_code == 0, narrow.output
    words = set(narrow.stdout.split())
    for whole in (SESSIONS[6].id, SESSIONS[11].id, f"trace:{t0}", "resolution", "helpfulness", "unresolved"):
        assert whole in words, (whole, narrow.stdout)
    piped = runner.invoke(cli_app, args, env={"COLUMNS": None})
    assert piped.exit_code == 0, piped.output
    rows = [line for line in piped.stdout.splitlines() if _TABLE_ROW.match(line)]
    assert len(rows) == int(re.search(r"(\d+) annotation\(s\)", piped.stdout).group(1))
    for row in rows:  # one line per annotation: source, subject, name and label together
        assert len(row.split()) >= 5, row


def test_simulate_datadog_serves_until_sigterm(tmp_path: Path) -> None:
    port = free_port()
    log = (tmp_path / "sim.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "annotation_gateway.cli",
            "simulate-datadog",
            "--port",
            str(port),
            "--latency-ms",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + SERVE_START_TIMEOUT_S
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/_simulator/health", timeout=1, trust_env=False)
                break
            except httpx.TransportError:
                assert proc.poll() is None, (tmp_path / "sim.log").read_text()
                assert time.monotonic() < deadline, "the simulator did not start"
                time.sleep(0.1)
        assert health.json() == {"ok": True}
        config = httpx.get(f"http://127.0.0.1:{port}/_simulator/config", timeout=5, trust_env=False).json()
        assert "latency_ms" in json.dumps(config)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(SERVE_STOP_TIMEOUT_S) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(SERVE_STOP_TIMEOUT_S)
        log.close()
    refused = runner.invoke(cli_app, ["simulate-datadog", "--host", "0.0.0.0"])
    assert refused.exit_code == 2


README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_write_example_leaves_the_walkthrough_alone(demo: tuple[DemoStack, list[str]]) -> None:
    """Issue 15, item 6: the README's write example must not change what its walkthrough then
    shows. The walkthrough reads sessions only (sessions.txt, -s support-12); the example writes
    to a trace of the demo, and it works as printed. (Last in this module: it adds an annotation
    to the shared demo stack.)"""
    text = README.read_text(encoding="utf-8")
    bodies = re.findall(r"""-d '(\{"source": "phoenix-local", "annotations": .*?\})'\n""", text)
    assert len(bodies) == 1, bodies
    body = json.loads(bodies[0])
    (item,) = body["annotations"]
    assert item["subject_kind"] == "trace"
    assert item["subject_id"] in _TRACES
    walkthrough = text[text.index("## Migration teams") :]
    assert item["subject_id"] not in walkthrough
    assert "trace:" not in walkthrough.split("### 4.")[0]  # the walkthrough's reads are sessions
    stack, _ = demo
    headers = {"Authorization": f"Bearer {stack.gateway_key}"}
    before = httpx.post(
        f"{stack.gateway_url}/v1/annotations/search",
        json={"subject_ids": [s.id for s in SESSIONS], "limit": 1000},
        headers=headers,
        timeout=30,
    ).json()["data"]
    answer = httpx.post(f"{stack.gateway_url}/v1/annotations", json=body, headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["count"] == 1
    after = httpx.post(
        f"{stack.gateway_url}/v1/annotations/search",
        json={"subject_ids": [s.id for s in SESSIONS], "limit": 1000},
        headers=headers,
        timeout=30,
    ).json()["data"]
    assert after == before  # every session annotation the walkthrough reads is unchanged
    written = httpx.get(
        f"{stack.gateway_url}/v1/annotations",
        params={"subject_id": item["subject_id"], "name": item["name"]},
        headers=headers,
        timeout=30,
    ).json()["data"]
    assert [(a["subject"]["kind"], a["label"]) for a in written] == [("trace", item["label"])]


def test_metrics_and_agreement_commands(demo: tuple[DemoStack, list[str]], demo_config: Path) -> None:
    stack, _ = demo
    cfg = ["--config", str(demo_config)]
    api = httpx.get(
        f"{stack.gateway_url}/v1/annotations/metrics",
        params=[("scope", "all"), ("group_by", "name"), ("group_by", "source"), ("interval", "week")],
        headers={"Authorization": f"Bearer {stack.gateway_key}"},
        timeout=30,
    ).json()
    as_json = runner.invoke(
        cli_app,
        ["metrics", *cfg, "--scope", "all", "-g", "name", "-g", "source", "--interval", "week", "-f", "json"],
    )
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout)["rows"] == api["rows"]  # the same aggregation, in-process
    table = runner.invoke(cli_app, ["metrics", *cfg, "--scope", "all", "-g", "source"])
    assert table.exit_code == 0, table.output
    assert PHOENIX_SOURCE in table.stdout
    assert f"{DATADOG_SOURCE} ok" in table.stdout
    as_csv = runner.invoke(cli_app, ["metrics", *cfg, "--scope", "all", "-g", "label", "-f", "csv"])
    assert as_csv.exit_code == 0, as_csv.output
    assert as_csv.stdout.splitlines()[0].startswith("bucket,label,count,")
    agreement = runner.invoke(
        cli_app, ["agreement", *cfg, "--scope", "all", "--by", "source", "-n", "resolution"]
    )
    assert agreement.exit_code == 0, agreement.output
    assert "resolution" in agreement.stdout
    assert SESSIONS[6].id in agreement.stdout  # a disagreement is named
    html = runner.invoke(cli_app, ["agreement", *cfg, "--scope", "all", "--by", "source", "-f", "html"])
    assert html.exit_code == 0
    assert "<svg" in html.stdout
    bad = runner.invoke(cli_app, ["metrics", *cfg, "--scope", "all", "-g", "colour"])
    assert bad.exit_code == 2
    assert "colour" in bad.output
    neither = runner.invoke(cli_app, ["agreement", *cfg])
    assert neither.exit_code == 2
