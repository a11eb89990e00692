"""``serve --workers N`` (SPEC §9): one port, several processes, metrics and cursors shared.

A real ``serve --workers 2`` subprocess on a free loopback port, auth off, in front of the
Datadog simulator. Which worker answered a request is read from prometheus-client's own
per-process files (``counter_<pid>.db`` in the multiprocess directory ``serve`` made under the
subprocess's ``TMPDIR``): nothing in the API exposes a pid. Every wait polls with a deadline.
"""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from annotation_gateway.api.serving import free_port
from annotation_gateway.cli import app as cli_app
from tests.plugins.datadog import API_KEY_ENV, APP_KEY_ENV, DatadogSimulator

SOURCE = "dd"
SESSIONS = [f"workers-session-{i}" for i in range(3)]
LABELS_PER_SESSION = 2
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
POLL_S = 0.02
ROUTE = "/v1/annotations"
REQUESTS_METRIC = "annotation_gateway_http_requests"

LABEL_VALUES = {"resolution": ["resolved"], "helpfulness": 0.5}

WORKERS = ("--workers", "2")

runner = CliRunner()


def _config(tmp_path: Path, sim: DatadogSimulator, port: int, host: str = "127.0.0.1") -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(
        f"""
[server]
host = "{host}"
port = {port}

[auth]
enabled = false

[[sources]]
name = "{SOURCE}"
provider = "datadog"
base_url = "{sim.base_url}"
api_key_env = "{API_KEY_ENV}"
app_key_env = "{APP_KEY_ENV}"
retry_attempts = 1
""",
        encoding="utf-8",
    )
    return path


def _seed(sim: DatadogSimulator) -> None:
    sim.seed(
        {
            "queues": [
                {
                    "name": "workers",
                    "label_schemas": [
                        {"name": "resolution", "type": "categorical", "values": ["resolved", "open"]},
                        {"name": "helpfulness", "type": "score", "min": 0, "max": 1},
                    ],
                    "interactions": [
                        {
                            "type": "session",
                            "content_id": sid,
                            "annotations": [{"user": "alice", "label_values": LABEL_VALUES}],
                        }
                        for sid in SESSIONS
                    ],
                }
            ]
        }
    )


def test_more_than_one_worker_needs_the_cursor_secret(tmp_path: Path, datadog_sim: DatadogSimulator) -> None:
    config = _config(tmp_path, datadog_sim, free_port())
    result = runner.invoke(
        cli_app,
        ["serve", "--config", str(config), "--workers", "2"],
        env={"GATEWAY_CURSOR_SECRET": None, **datadog_sim.environ},
    )
    assert result.exit_code == 2, result.output
    assert "GATEWAY_CURSOR_SECRET" in result.output
    assert "export GATEWAY_CURSOR_SECRET=" in result.output
    blank = runner.invoke(
        cli_app,
        ["serve", "--config", str(config), "--workers", "2"],
        env={"GATEWAY_CURSOR_SECRET": "  ", **datadog_sim.environ},
    )
    assert blank.exit_code == 2, blank.output


class Served:
    def __init__(self, base_url: str, proc: subprocess.Popen[bytes], tmpdir: Path, log: Path) -> None:
        self.base_url = base_url
        self.proc = proc
        self.tmpdir = tmpdir
        self.log = log

    def metrics_dirs(self) -> list[str]:
        return glob.glob(str(self.tmpdir / "annotation-gateway-metrics-*"))

    def answered_by(self) -> dict[int, float]:
        """``GET /v1/annotations`` answers counted per worker pid, from each worker's own file."""
        (directory,) = self.metrics_dirs()
        counts: dict[int, float] = {}
        for path in glob.glob(os.path.join(directory, "counter_*.db")):
            pid = int(Path(path).stem.rsplit("_", 1)[1])
            total = 0.0
            for metric in MultiProcessCollector.merge([path]):
                for sample in metric.samples:
                    if sample.name == f"{REQUESTS_METRIC}_total" and sample.labels.get("route") == ROUTE:
                        total += sample.value
            counts[pid] = total
        return counts

    def get(self, params: dict[str, Any]) -> tuple[httpx.Response, int]:
        """One query on a fresh connection, and the pid of the worker that answered it (the one
        whose count went up; the count is taken after the answer is sent, hence the poll)."""
        before = self.answered_by()
        with httpx.Client(base_url=self.base_url, timeout=30, trust_env=False) as client:
            response = client.get(ROUTE, params=params)
        deadline = time.monotonic() + 10
        while True:
            after = self.answered_by()
            grown = [pid for pid, n in after.items() if n > before.get(pid, 0.0)]
            if grown:
                assert len(grown) == 1, (before, after)
                assert sum(after.values()) == sum(before.values()) + 1, (before, after)
                return response, grown[0]
            assert time.monotonic() < deadline, "the answer was never counted"
            time.sleep(POLL_S)


@pytest.fixture
def served(tmp_path: Path, datadog_sim: DatadogSimulator) -> Iterator[Served]:
    _seed(datadog_sim)
    port = free_port()
    # The file alone is refused (auth off on a public host): each worker must load it with the
    # command line's overrides, as the parent did.
    config = _config(tmp_path, datadog_sim, 9, host="0.0.0.0")
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    log = tmp_path / "serve.log"
    env = {
        **os.environ,
        **datadog_sim.environ,
        "GATEWAY_CURSOR_SECRET": "a-shared-cursor-secret-for-every-worker",
        "TMPDIR": str(tmpdir),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "annotation_gateway.cli", "serve", "--config", str(config)),
                *("--host", "127.0.0.1", "--port", str(port), *WORKERS),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(base_url + "/healthz", timeout=2, trust_env=False).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "serve --workers 2 did not start:\n" + log.read_text()
            time.sleep(0.1)
        yield Served(base_url, proc, tmpdir, log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(STOP_TIMEOUT_S)


def _metric_sum(text: str, name: str, route: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == f"{name}_total" and sample.labels.get("route") == route:
                total += sample.value
    return total


def test_two_workers_share_the_port_the_metrics_and_the_cursors(served: Served) -> None:
    everything = {"subject_id": SESSIONS, "limit": 100}
    # Requests on fresh connections until both workers have answered some (the kernel picks).
    sent = 0
    deadline = time.monotonic() + 60
    while len([n for n in served.answered_by().values() if n > 0]) < 2:
        response, _ = served.get(everything)
        assert response.status_code == 200, response.text
        sent += 1
        assert time.monotonic() < deadline, f"one worker answered all of {sent} requests"
    assert len(served.answered_by()) == 2

    # /metrics (whichever worker answers it) counts every worker's answers: exactly what was sent.
    metrics = httpx.get(served.base_url + "/metrics", timeout=10, trust_env=False)
    assert metrics.status_code == 200
    assert _metric_sum(metrics.text, REQUESTS_METRIC, ROUTE) == sent
    assert sum(served.answered_by().values()) == sent
    assert "annotation_gateway_http_requests_in_flight" in metrics.text

    # Paging with limit=1: a cursor one worker issued continues on the other.
    expected = [a["id"] for a in served.get(everything)[0].json()["data"]]
    assert len(expected) == len(SESSIONS) * LABELS_PER_SESSION
    crossed = 0
    passes = 0
    while crossed == 0:
        passes += 1
        assert passes <= 20, "no page was ever continued on the other worker"
        seen: list[str] = []
        params: dict[str, Any] = {"subject_id": SESSIONS, "limit": 1}
        issuer: int | None = None
        while True:
            response, pid = served.get(params)
            assert response.status_code == 200, response.text
            body = response.json()
            seen += [a["id"] for a in body["data"]]
            if issuer is not None and pid != issuer:
                crossed += 1
            if body["next_cursor"] is None:
                break
            params = {"subject_id": SESSIONS, "limit": 1, "cursor": body["next_cursor"]}
            issuer = pid
        assert seen == expected

    # SIGTERM: every worker shuts down gracefully, the parent exits 0 and cleans up.
    served.proc.send_signal(signal.SIGTERM)
    assert served.proc.wait(STOP_TIMEOUT_S) == 0
    log = served.log.read_text()
    assert log.count("Application shutdown complete") == 2, log
    assert served.metrics_dirs() == []


def test_a_worker_that_cannot_start_stops_serve(tmp_path: Path, datadog_sim: DatadogSimulator) -> None:
    # The vendor keys are missing: each worker's lifespan fails. uvicorn would restart a worker
    # that merely crashed; one that fails to start stops them all, and serve says why.
    port = free_port()
    config = _config(tmp_path, datadog_sim, port)
    env = {k: v for k, v in os.environ.items() if k not in (API_KEY_ENV, APP_KEY_ENV)}
    env["GATEWAY_CURSOR_SECRET"] = "a-shared-cursor-secret-for-every-worker"
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    done = subprocess.run(
        [sys.executable, "-m", "annotation_gateway.cli", "serve", "--config", str(config), *WORKERS],
        capture_output=True,
        env=env,
        timeout=START_TIMEOUT_S,
        check=False,
    )
    output = (done.stdout + done.stderr).decode(errors="replace")
    assert done.returncode == 1, output
    assert "a worker failed to start" in output
    assert API_KEY_ENV in output
