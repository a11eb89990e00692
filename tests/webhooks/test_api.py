"""A whole gateway (``create_app`` served over HTTP) delivering to the receiver, and
``GET /v1/webhooks``: the status after a failed and a successful attempt, authenticated,
documented in OpenAPI, without a secret in the answer or in ``/metrics``.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from annotation_gateway.api.app import create_app
from annotation_gateway.api.serving import ThreadedServer
from annotation_gateway.settings import hash_key, load_settings
from tests.plugins.datadog import API_KEY_ENV, APP_KEY_ENV, DatadogSimulator
from tests.webhooks.conftest import SECRET, SECRET_ENV, seed
from tests.webhooks.receiver import Receiver

KEY = "webhook-status-reader-key"
LIMITED_KEY = "webhook-status-limited-key"


def test_the_gateway_delivers_and_get_webhooks_shows_the_status(
    datadog_sim: DatadogSimulator, receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(datadog_sim, 5)
    for name, value in datadog_sim.environ.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv(SECRET_ENV, SECRET)
    monkeypatch.setenv("GATEWAY_CURSOR_SECRET", "webhook-api-test-cursor-secret-0123456789")
    config = tmp_path / "gateway.toml"
    config.write_text(
        f"""
[auth]
enabled = true
[[auth.keys]]
name = "ops"
sha256 = "{hash_key(KEY)}"
[[auth.keys]]
name = "phx-only"
sha256 = "{hash_key(LIMITED_KEY)}"
sources = ["phx"]

[[sources]]
name = "dd"
provider = "datadog"
base_url = "{datadog_sim.base_url}"
api_key_env = "{API_KEY_ENV}"
app_key_env = "{APP_KEY_ENV}"

[[sources]]
name = "phx"
provider = "phoenix"
base_url = "http://127.0.0.1:9"
project = "p"
enabled = false

[[webhooks]]
name = "labels"
url = "{receiver.url}?token=topsecret-query"
secret_env = "{SECRET_ENV}"
filters = {{ scope = "all", sources = ["dd"] }}
state_path = "{tmp_path / "labels.sqlite3"}"
interval_s = 0.2
initial_backoff_s = 0.05
max_backoff_s = 0.2
""",
        encoding="utf-8",
    )
    settings = load_settings(config)
    receiver.fail_next(1, 500)
    with ThreadedServer(create_app(settings)) as server, httpx.Client(base_url=server.base_url) as client:
        receiver.wait_sync(lambda got: any(d.answered == 204 for d in got))
        auth = {"Authorization": f"Bearer {KEY}"}
        for _ in range(200):  # the 2xx reached the receiver; its commit follows at once
            answer = client.get("/v1/webhooks", headers=auth)
            assert answer.status_code == 200
            [status] = answer.json()["data"]
            if status["delivered_messages"] == 1:
                break
            time.sleep(0.02)  # no event crosses into the server's thread; bounded by the loop
        assert status["name"] == "labels"
        assert status["url"] == receiver.url  # no query
        assert status["state"] == "idle"
        assert status["delivered_annotations"] == 5
        assert status["last_success_at"] is not None
        assert status["last_error"] == "HTTP 500"
        assert status["pending_attempts"] == 0
        assert status["pending_since"] is None

        assert client.get("/v1/webhooks").status_code == 401
        limited = client.get("/v1/webhooks", headers={"Authorization": f"Bearer {LIMITED_KEY}"})
        assert limited.json() == {"data": []}  # its key may not read the webhook's source

        metrics = client.get("/metrics").text
        assert (
            'annotation_gateway_webhook_deliveries_total{outcome="rejected",webhook="labels"} 1.0' in metrics
        )
        assert 'annotation_gateway_webhook_deliveries_total{outcome="ok",webhook="labels"} 1.0' in metrics
        assert 'annotation_gateway_webhook_pending_messages{webhook="labels"} 0.0' in metrics
        operation = client.get("/openapi.json").json()["paths"]["/v1/webhooks"]["get"]
        assert operation["operationId"] == "list_webhooks"
        assert operation["security"] == [{"gatewayKey": []}]
        assert "401" in operation["responses"]
        for text in (answer.text, metrics):
            assert "topsecret" not in text
            assert SECRET[6:] not in text
    got = receiver.snapshot()
    assert all(d.verified for d in got)
    assert [d.answered for d in got] == [500, 204]
    assert got[0].id == got[1].id
