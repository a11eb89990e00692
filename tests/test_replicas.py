"""Two gateway **processes** sharing one Redis (SPEC §9), in front of the Datadog simulator (and
a real Phoenix for the write test).

Two ``annotation-gateway serve`` subprocesses on their own loopback ports, ``[cache] backend =
"redis"`` on a real ``redis-server``, the same cursor secret: a query asked on both makes one
upstream read (the simulator's request log); a cursor issued by one continues on the other; a
write through one is read on the other at once (its local copy dropped by the invalidation);
Redis killed under a bounded load loop gives no 5xx, and both use it again once it is back.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from annotation_gateway.api.serving import free_port
from tests.plugins.datadog import API_KEY_ENV, APP_KEY_ENV, DatadogSimulator
from tests.plugins.phoenix import PhoenixProject
from tests.plugins.redis import RedisServer

SESSIONS = [f"replica-session-{i}" for i in range(6)]
START_TIMEOUT_S = 60.0
READ_PATH = "/api/v2/llm-obs/v1/annotated-interactions"


def _config(tmp_path: Path, sim: DatadogSimulator, name: str, phoenix: PhoenixProject | None = None) -> Path:
    path = tmp_path / f"{name}.toml"
    extra = ""
    if phoenix is not None:
        extra = f"""
[[sources]]
name = "px"
provider = "phoenix"
base_url = "{phoenix.base_url}"
project = "{phoenix.project}"
"""
    path.write_text(
        f"""
[server]
host = "127.0.0.1"

[auth]
enabled = false

[cache]
backend = "redis"
redis_url_env = "GATEWAY_REDIS_URL"
local_ttl_s = 30                    # long: only the invalidation message can make b drop its copy
redis_timeout_s = 2

[[sources]]
name = "dd"
provider = "datadog"
base_url = "{sim.base_url}"
api_key_env = "{API_KEY_ENV}"
app_key_env = "{APP_KEY_ENV}"
retry_attempts = 1
{extra}""",
        encoding="utf-8",
    )
    return path


def _start(config: Path, env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    with log.open("wb") as out:
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
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(base + "/healthz", timeout=2, trust_env=False).status_code == 200:
                return proc, base
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "serve did not start:\n" + log.read_text()
        time.sleep(0.1)


@pytest.fixture
def replicas(
    tmp_path: Path, datadog_sim: DatadogSimulator, redis_instance: RedisServer, request: pytest.FixtureRequest
) -> Iterator[tuple[str, str]]:
    phoenix: PhoenixProject | None = (
        request.getfixturevalue("phoenix_project") if request.node.get_closest_marker("phoenix") else None
    )
    datadog_sim.seed(
        {
            "queues": [
                {
                    "name": "replicas",
                    "label_schemas": [{"name": "resolution", "type": "categorical", "values": ["yes", "no"]}],
                    "interactions": [
                        {"type": "session", "content_id": s, "annotations": [
                            {"user": "alice", "label_values": {"resolution": ["yes"]}}]}
                        for s in SESSIONS
                    ],
                }
            ]
        }
    )  # fmt: skip
    env = {
        **os.environ,
        **datadog_sim.environ,
        "GATEWAY_REDIS_URL": redis_instance.url,
        "GATEWAY_CURSOR_SECRET": "one-secret-for-both-replicas-0123456789",
    }
    started = [
        _start(_config(tmp_path, datadog_sim, n, phoenix), env, tmp_path / f"{n}.log") for n in ("a", "b")
    ]
    try:
        yield started[0][1], started[1][1]
    finally:
        for proc, _ in started:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _reads(sim: DatadogSimulator) -> int:
    return sum(1 for r in sim.requests if r.path == READ_PATH)


def test_one_upstream_read_and_cursors_across_processes(
    replicas: tuple[str, str], datadog_sim: DatadogSimulator
) -> None:
    a, b = replicas
    params = [("subject_id", s) for s in SESSIONS]
    datadog_sim.state.clear_requests()
    first = httpx.get(a + "/v1/annotations", params=params, timeout=30, trust_env=False)
    assert first.status_code == 200, first.text
    reads = _reads(datadog_sim)
    assert reads >= 1
    second = httpx.get(b + "/v1/annotations", params=params, timeout=30, trust_env=False)
    assert second.status_code == 200, second.text
    assert second.json()["data"] == first.json()["data"]
    assert _reads(datadog_sim) == reads  # b answered from Redis: no second upstream read

    page = httpx.get(
        a + "/v1/annotations", params=[*params, ("limit", "2")], timeout=30, trust_env=False
    ).json()
    more = [*params, ("limit", "100"), ("cursor", page["next_cursor"])]
    rest = httpx.get(b + "/v1/annotations", params=more, timeout=30, trust_env=False)
    assert rest.status_code == 200, rest.text
    assert [x["id"] for x in page["data"] + rest.json()["data"]] == [x["id"] for x in first.json()["data"]]


def test_redis_killed_and_restarted_under_load_gives_no_5xx(
    replicas: tuple[str, str], datadog_sim: DatadogSimulator, redis_instance: RedisServer
) -> None:
    statuses: list[int] = []
    with httpx.Client(timeout=30, trust_env=False) as client:
        for round_ in range(3):
            if round_ == 1:
                redis_instance.stop()
            if round_ == 2:
                redis_instance.start()
            for i in range(30):  # bounded
                base = replicas[i % 2]
                subject = SESSIONS[i % len(SESSIONS)]
                statuses.append(
                    client.get(base + "/v1/annotations", params={"subject_id": subject}).status_code
                )
        assert set(statuses) == {200}
        # Back in use without a restart: an answer fetched now is stored in Redis again.
        deadline = time.monotonic() + 30
        while True:
            client.get(
                replicas[0] + "/v1/annotations",
                params={"subject_id": SESSIONS[0]},
                headers={"Cache-Control": "no-cache"},
            )
            size = int(redis_instance.command("DBSIZE").strip().lstrip(b":"))
            if size > 0:
                break
            assert time.monotonic() < deadline, "the gateways never used Redis again"
            time.sleep(0.2)


@pytest.mark.phoenix
def test_a_write_through_one_process_is_read_on_the_other_at_once(
    replicas: tuple[str, str], phoenix_project: PhoenixProject
) -> None:
    a, b = replicas
    session = phoenix_project.session_ids[0]
    with httpx.Client(timeout=30, trust_env=False) as client:
        before = client.get(b + "/v1/annotations", params={"subject_id": session, "source": "px"})
        assert before.status_code == 200, before.text
        assert before.json()["data"] == []  # b now holds the empty answer (locally and in Redis)
        written = client.post(
            a + "/v1/annotations",
            json={"source": "px", "annotations": [{"subject_id": session, "name": "verdict", "label": "ok"}]},
        )
        assert written.status_code == 200, written.text
        after = client.get(b + "/v1/annotations", params={"subject_id": session, "source": "px"})
    assert after.status_code == 200, after.text
    assert [(x["name"], x["label"]) for x in after.json()["data"]] == [("verdict", "ok")]
