"""The command line and the demo, against the real Phoenix and the Datadog simulator.

- ``hash-key``, ``check``, ``query`` run in-process through typer's runner;
- ``serve`` runs as a real subprocess (the console script), answers over HTTP and stops cleanly
  on SIGTERM; auth switched off on a non-loopback host is refused before anything listens;
- the demo's stack comes up on the suite's Phoenix, and the very ``curl`` lines it prints are run
  with curl and answer with annotations from both vendors.
"""

from __future__ import annotations

import json
import os
import shlex
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
    _self_check,
    curl_examples,
    demo_config_toml,
    demo_stack,
)
from annotation_gateway.demo_data import SESSIONS
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


def test_demo_stack_and_its_curl_lines(phoenix_server: PhoenixServer, tmp_path: Path) -> None:
    messages: list[str] = []
    with demo_stack(
        gateway_port=0, simulator_port=0, phoenix=phoenix_server, progress=messages.append
    ) as stack:
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
        config = tmp_path / "demo.toml"
        config.write_text(demo_config_toml(stack), encoding="utf-8")
        result = runner.invoke(
            cli_app, ["query", "--config", str(config), "-s", SESSIONS[6].id, "--format", "json"]
        )
        assert result.exit_code == 0, result.output
        assert {a["provider"] for a in json.loads(result.stdout)["data"]} == {"phoenix", "datadog"}
    assert any("seeded" in m for m in messages)


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
