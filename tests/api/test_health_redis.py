"""The gateway with ``[cache] backend = "redis"`` over real HTTP (uvicorn in a thread), in front of
the Datadog simulator and a real ``redis-server`` of its own: ``/readyz`` shows the tier's state
without failing readiness, ``/metrics`` counts Redis hits, misses and errors, no answer is a 5xx
while Redis is killed, the tier comes back without restarting the gateway, and the Redis URL's
password shows nowhere. Two gateways sharing one Redis make one upstream call for one query.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from annotation_gateway.api.app import create_app
from annotation_gateway.api.serving import ThreadedServer
from annotation_gateway.settings import (
    ApiKeyConfig,
    AuthConfig,
    CacheConfig,
    GatewaySettings,
    ServerConfig,
    hash_key,
)
from tests.api.conftest import ADMIN_KEY, DATADOG_SOURCE
from tests.plugins.datadog import DatadogSimulator
from tests.plugins.redis import RedisServer

SESSIONS = [f"sess-{i:02d}" for i in range(4)]
REDIS_URL_ENV = "TEST_GATEWAY_REDIS_URL"


def seed(sim: DatadogSimulator) -> None:
    sim.seed(
        {
            "queues": [
                {
                    "name": "redis-api",
                    "label_schemas": [{"name": "quality", "type": "score", "min": 0, "max": 5}],
                    "interactions": [
                        {
                            "type": "session",
                            "content_id": sid,
                            "annotations": [{"user": "alice", "label_values": {"quality": 2}}],
                        }
                        for sid in SESSIONS
                    ],
                }
            ]
        }
    )


def fetches(sim: DatadogSimulator) -> int:
    return sum(1 for r in sim.requests if r.path.endswith("/annotated-interactions"))


GatewayFactory = Callable[..., tuple[ThreadedServer, httpx.Client]]


@pytest.fixture
def redis_gateway(datadog_sim: DatadogSimulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[GatewayFactory]:
    """``make(url, **cache)``: a gateway over the simulator whose Redis URL is ``url``."""
    seed(datadog_sim)
    for name, value in datadog_sim.environ.items():
        monkeypatch.setenv(name, value)
    started: list[tuple[ThreadedServer, httpx.Client]] = []

    def make(url: str, **cache: Any) -> tuple[ThreadedServer, httpx.Client]:
        monkeypatch.setenv(REDIS_URL_ENV, url)
        fields: dict[str, Any] = {
            "backend": "redis",
            "redis_url_env": REDIS_URL_ENV,
            "local_ttl_s": 0.0,  # every request asks Redis: each one meets an outage
            "redis_timeout_s": 0.5,
            "redis_retry_s": 0.05,
        }
        settings = GatewaySettings(
            server=ServerConfig(host="127.0.0.1", port=0),
            auth=AuthConfig(keys=[ApiKeyConfig(name="admin", sha256=hash_key(ADMIN_KEY))]),
            cache=CacheConfig.model_validate(fields | cache),
            sources=[datadog_sim.source_config(DATADOG_SOURCE, retry_attempts=1)],
        )
        server = ThreadedServer(create_app(settings)).start()
        client = httpx.Client(
            base_url=server.base_url,
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            timeout=30,
            trust_env=False,
        )
        started.append((server, client))
        return server, client

    yield make
    for server, client in started:
        client.close()
        server.stop()


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of ``/metrics`` (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = re.escape(name) + (r"\{" + re.escape(wanted) + r"\}" if labels else "") + r" (\S+)"
    found = re.search("^" + pattern + "$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def metric_sum(text: str, name: str) -> float:
    """The sum of every sample of ``name`` (all label values)."""
    return sum(
        float(v) for v in re.findall("^" + re.escape(name) + r"(?:\{[^}]*\})? (\S+)$", text, re.MULTILINE)
    )


def test_redis_killed_under_load_no_5xx_degraded_in_readyz_and_back_by_itself(
    redis_gateway: GatewayFactory, redis_instance: RedisServer
) -> None:
    _, client = redis_gateway(redis_instance.url)
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["cache"] == {"backend": "redis", "state": "ok", "detail": None}
    assert metric(client.get("/metrics").text, "annotation_gateway_redis_up") == 1.0

    statuses: list[int] = []
    for i in range(90):
        if i == 30:
            redis_instance.stop()
        if i == 60:
            degraded = client.get("/readyz")
            assert degraded.status_code == 200, "a dead Redis must not make the gateway unready"
            cache = degraded.json()["cache"]
            assert cache["state"] == "degraded"
            assert "answering from memory and the sources" in cache["detail"]
            text = client.get("/metrics").text
            assert metric(text, "annotation_gateway_redis_up") == 0.0
            errors = metric_sum(text, "annotation_gateway_redis_errors_total")
            assert errors >= 1  # reads, or the subscription: whichever met the outage first
            assert (
                metric(
                    text,
                    "annotation_gateway_redis_cache_lookups_total",
                    source=DATADOG_SOURCE,
                    result="bypass",
                )
                >= 1
            )
            redis_instance.start()
        r = client.get("/v1/annotations", params={"subject_id": SESSIONS[i % len(SESSIONS)]})
        statuses.append(r.status_code)
        assert r.json()["partial"] is False
    assert [s for s in statuses if s >= 500] == []
    assert set(statuses) == {200}

    # Back without restarting the gateway: Redis is used again (its keys reappear).
    for _ in range(3000):  # bounded; the backoff is 0.05 s doubling per failure
        client.get("/v1/annotations", params={"subject_id": SESSIONS[0]})
        if (
            client.get("/readyz").json()["cache"]["state"] == "ok"
            and redis_instance.command("DBSIZE") != b":0\r\n"
        ):
            break
    assert client.get("/readyz").json()["cache"]["state"] == "ok"
    assert redis_instance.command("DBSIZE") != b":0\r\n"
    text = client.get("/metrics").text
    assert metric(text, "annotation_gateway_redis_up") == 1.0
    client.get("/v1/annotations", params={"subject_id": SESSIONS[0]})
    text = client.get("/metrics").text
    assert (
        metric(text, "annotation_gateway_redis_cache_lookups_total", source=DATADOG_SOURCE, result="hit") >= 1
    )
    assert (
        metric(text, "annotation_gateway_redis_cache_lookups_total", source=DATADOG_SOURCE, result="miss")
        >= 1
    )


def test_two_gateways_share_one_redis_one_upstream_call(
    redis_gateway: GatewayFactory, redis_server: RedisServer, datadog_sim: DatadogSimulator
) -> None:
    redis_server.flush()
    _, first = redis_gateway(redis_server.url)
    _, second = redis_gateway(redis_server.url)
    params = {"subject_id": SESSIONS}
    a = first.get("/v1/annotations", params=params)
    b = second.get("/v1/annotations", params=params)
    assert a.status_code == b.status_code == 200
    assert a.json()["data"] == b.json()["data"]
    assert len(a.json()["data"]) == len(SESSIONS)
    assert fetches(datadog_sim) == 1
    assert [s["cached"] for s in b.json()["sources"]] == [True]


def test_the_redis_password_shows_nowhere(
    redis_gateway: GatewayFactory, redis_instance: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    password = "sekret-redis-pass-4711"
    # The server knows no such user: AUTH fails on every connection, so the tier is degraded.
    _, client = redis_gateway(f"redis://ghost:{password}@127.0.0.1:{redis_instance.port}/0")
    answers = [client.get("/v1/annotations", params={"subject_id": sid}) for sid in SESSIONS]
    assert {r.status_code for r in answers} == {200}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["cache"]["state"] == "degraded"
    shown = ready.text + client.get("/metrics").text + "".join(r.text for r in answers)
    assert password not in shown
    logged = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert "shared cache tier" in logged  # the tier did log (its redacted target, its state)
    assert password not in logged
