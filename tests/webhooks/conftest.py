"""Fixtures for the webhook tests: a receiver on loopback, the simulator as the source, helpers."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from annotation_gateway.federation import Federation
from annotation_gateway.providers.datadog import DatadogProvider
from annotation_gateway.settings import CacheConfig
from annotation_gateway.webhooks.config import WebhookConfig
from tests.plugins.datadog import SCORE_LABELS, DatadogSimulator, timed_interaction
from tests.webhooks.receiver import Receiver

SECRET_BYTES = bytes(range(7, 39))
SECRET = "whsec_" + base64.b64encode(SECRET_BYTES).decode()
SECRET_ENV = "TEST_WEBHOOK_SECRET"
CURSOR_SECRET = b"webhook-tests-cursor-secret-0123"


def seed(sim: DatadogSimulator, count: int, *, queue_id: str | None = None, start: int = 0) -> str:
    """``count`` annotations ``a-NN`` on traces ``t-NN``, 10 s apart; returns the queue's id."""
    queue: dict[str, Any] = {
        "name": "hooks",
        "interactions": [
            timed_interaction(f"t-{i:02d}", f"a-{i:02d}", 10 * i, i % 10) for i in range(start, start + count)
        ],
    }
    if queue_id is None:
        queue["label_schemas"] = SCORE_LABELS
    else:
        queue["id"] = queue_id
    made = sim.seed({"queues": [queue]})
    return str(made["queues"][0]["id"])


def hook_config(url: str, state_path: Path, **overrides: Any) -> WebhookConfig:
    fields: dict[str, Any] = {
        "name": "annotations",
        "url": url,
        "secret_env": SECRET_ENV,
        "filters": {"scope": "all"},
        "state_path": state_path,
        "batch_size": 7,
        "interval_s": 60,
        "timeout_s": 0.5,
        "initial_backoff_s": 1,
        "max_backoff_s": 8,
    }
    return WebhookConfig.model_validate(fields | overrides)


@asynccontextmanager
async def datadog_federation(
    sim: DatadogSimulator, secret: bytes = CURSOR_SECRET
) -> AsyncIterator[Federation]:
    """A federation over the simulator (a new one stands for a new gateway process)."""
    provider = DatadogProvider.from_config(sim.source_config("dd"), environ=sim.environ)
    federation = Federation([provider], CacheConfig(ttl_s=300, max_stale_s=600), cursor_secret=secret)
    try:
        yield federation
    finally:
        await federation.aclose()


class Sleeper:
    """The loops' injected sleep: a wait shorter than ``idle_at`` returns at once (a backoff or
    the next page, recorded in ``delays``); a longer one means caught up: it sets ``idle`` and
    waits for ``wake()`` (or cancellation)."""

    def __init__(self, idle_at: float) -> None:
        self.idle_at = idle_at
        self.delays: list[float] = []
        self.idle = asyncio.Event()
        self._wake = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        if seconds < self.idle_at:
            await asyncio.sleep(0)
            return
        self.idle.set()
        await self._wake.wait()
        self._wake.clear()
        self.idle.clear()

    def wake(self) -> None:
        self._wake.set()

    async def wait_idle(self, timeout: float = 20.0) -> None:
        await asyncio.wait_for(self.idle.wait(), timeout)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver(SECRET).start()
    try:
        yield running
    finally:
        running.stop()
