"""Webhook delivery against the Datadog simulator and a verifying receiver on loopback.

- every seeded annotation is delivered once, in signed batches that verify with the
  ``standardwebhooks`` package, oldest first; new changes follow on the next read;
- a 500, a timeout and a 429 with ``Retry-After`` are retried with the same ``webhook-id``,
  after the backoff (or the wait the receiver asked for); metrics count each attempt;
- a gateway restart mid-delivery (the receiver holds the request, the loop is cancelled, a new
  loop opens the same SQLite file) sends the stored message again and then continues: nothing
  lost, nothing twice beyond that one message;
- a stored position refused after a restart with another cursor secret re-anchors the feed
  (only the overlap comes again); ``max_attempts`` suspends without dropping; a failing source
  is retried without a message; one process holds a webhook's lock.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import orjson
import pytest

from annotation_gateway.api.routes.metrics import GatewayMetrics
from annotation_gateway.federation import Federation
from annotation_gateway.webhooks.config import WebhookConfig
from annotation_gateway.webhooks.deliver import RedactWebhookUrls, WebhookService, WebhookWorker
from annotation_gateway.webhooks.store import WebhookStore
from tests.plugins.datadog import DatadogSimulator
from tests.webhooks.conftest import (
    SECRET,
    SECRET_BYTES,
    SECRET_ENV,
    Sleeper,
    datadog_federation,
    hook_config,
    seed,
)
from tests.webhooks.receiver import Delivery, Receiver


@asynccontextmanager
async def worker_for(
    config: WebhookConfig, federation: Federation, metrics: GatewayMetrics | None = None
) -> AsyncIterator[WebhookWorker]:
    """A loop to drive by hand with ``step()``."""
    store = WebhookStore(config.state_file, config.name)
    redact = RedactWebhookUrls.install([config])  # as WebhookService.start does
    async with httpx.AsyncClient(trust_env=False) as client:
        try:
            yield WebhookWorker(
                config,
                federation=federation,
                store=store,
                client=client,
                secret=SECRET_BYTES,
                observer=metrics,
                rng=random.Random(7),
            )
        finally:
            await store.close()
            if redact is not None:
                redact.uninstall()


def delivered_ids(deliveries: list[Delivery]) -> list[str]:
    return [a["id"] for d in deliveries for a in d.payload["data"]]


def delivered_subjects(deliveries: list[Delivery]) -> list[str]:
    """The seeded traces (one annotation each) the messages carried."""
    return [a["subject"]["id"] for d in deliveries for a in d.payload["data"]]


async def status_of(config: WebhookConfig) -> dict[str, object]:
    service = WebhookService([config], environ={SECRET_ENV: SECRET})
    try:
        [status] = await service.status()
    finally:
        await service.stop()
    return {k: getattr(status, k) for k in status.__slots__}


async def test_every_seeded_annotation_is_delivered_signed_and_in_order(
    datadog_sim: DatadogSimulator, receiver: Receiver, tmp_path: Path
) -> None:
    queue_id = seed(datadog_sim, 20)
    config = hook_config(receiver.url, tmp_path / "hook.sqlite3")
    async with datadog_federation(datadog_sim) as federation, worker_for(config, federation) as worker:
        delays = [await worker.step() for _ in range(4)]
        # Two full pages are followed at once; a short one, then an empty read, wait the interval.
        assert delays == [0.0, 0.0, 60, 60]
        got = receiver.snapshot()
        assert [len(d.payload["data"]) for d in got] == [7, 7, 6]
        assert all(d.verified and d.answered == 204 for d in got)
        assert len({d.id for d in got}) == 3
        assert sorted(delivered_subjects(got)) == [f"t-{i:02d}" for i in range(20)]  # each once
        assert len(set(delivered_ids(got))) == 20
        updated = [a["updated_at"] for d in got for a in d.payload["data"]]
        assert updated == sorted(updated)  # oldest first, across messages too
        first = got[0].payload
        assert first["type"] == "annotations.changed"
        assert first["partial"] is False
        assert first["timestamp"].endswith("Z")

        # A new annotation and an update of an old one: the next read delivers both, once.
        seed(datadog_sim, 1, queue_id=queue_id, start=50)
        datadog_sim.seed(
            {
                "queues": [
                    {
                        "id": queue_id,
                        "name": "hooks",
                        "interactions": [
                            {
                                "type": "trace",
                                "content_id": "t-03",
                                "annotations": [
                                    {
                                        "user": "alice",
                                        "id": "a-03",
                                        "created_at": "2026-11-01T12:00:00Z",
                                        "modified_at": "2026-11-01T12:20:00Z",
                                        "label_values": [{"label": "quality", "value": 9}],
                                    }
                                ],
                            }
                        ],
                    }
                ]
            }
        )
        assert await worker.step() == 60
        assert await worker.step() == 60
    [latest] = receiver.snapshot()[3:]
    assert latest.verified
    assert sorted(a["subject"]["id"] for a in latest.payload["data"]) == ["t-03", "t-50"]
    status = await status_of(config)
    assert status["state"] == "idle"
    assert status["delivered_messages"] == 4
    assert status["delivered_annotations"] == 22
    assert status["pending_attempts"] == 0


async def test_a_500_a_timeout_and_a_429_are_retried_with_the_same_id(
    datadog_sim: DatadogSimulator, receiver: Receiver, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    seed(datadog_sim, 3)
    config = hook_config(receiver.url + "?token=topsecret-query", tmp_path / "hook.sqlite3")
    metrics = GatewayMetrics()
    async with (
        datadog_federation(datadog_sim) as federation,
        worker_for(config, federation, metrics) as worker,
    ):
        receiver.fail_next(1, 500)
        first = await worker.step()
        assert first is not None
        assert 0.5 <= first <= 1.0  # initial_backoff_s, upper half
        status = await status_of(config)
        assert (status["state"], status["last_error"], status["pending_attempts"]) == (
            "retrying",
            "HTTP 500",
            1,
        )

        receiver.stall_next(1)
        second = await worker.step()  # the receiver holds it past timeout_s
        receiver.release()
        assert second is not None
        assert 1.0 <= second <= 2.0  # doubled
        status = await status_of(config)
        assert str(status["last_error"]).startswith("timeout")
        assert status["pending_attempts"] == 2

        receiver.fail_next(1, 429, retry_after="7")
        assert await worker.step() == 7.0  # the receiver's Retry-After, not the backoff
        assert await worker.step() == 60  # delivered

    got = receiver.snapshot()
    assert len(got) == 4
    assert len({d.id for d in got}) == 1  # one message, four attempts
    assert len({d.body for d in got}) == 1  # the exact same body each time
    assert all(d.verified for d in got)  # each attempt signed at its own time
    assert [d.answered for d in got] == [500, 204, 429, 204]
    assert got[1].stalled
    status = await status_of(config)
    assert (status["state"], status["delivered_messages"], status["pending_id"]) == ("idle", 1, None)
    assert status["last_error"] == "HTTP 429"  # the last failure stays visible, with its time

    rendered = metrics.render().decode()
    for outcome, count in (("ok", 1), ("rejected", 2), ("timeout", 1)):
        line = f'annotation_gateway_webhook_deliveries_total{{outcome="{outcome}",webhook="annotations"}}'
        assert f"{line} {count:.1f}" in rendered
    assert 'annotation_gateway_webhook_pending_messages{webhook="annotations"} 0.0' in rendered
    assert 'annotation_gateway_webhook_delivered_annotations_total{webhook="annotations"} 3.0' in rendered
    assert "annotation_gateway_webhook_last_success_timestamp_seconds" in rendered
    for text in (rendered, caplog.text, str(status)):
        assert "topsecret" not in text
        assert SECRET not in text
        assert SECRET[6:] not in text


async def test_a_restart_mid_delivery_resends_the_stored_message_then_continues(
    datadog_sim: DatadogSimulator, receiver: Receiver, tmp_path: Path
) -> None:
    seed(datadog_sim, 20)
    config = hook_config(receiver.url, tmp_path / "hook.sqlite3", timeout_s=30)
    environ = {SECRET_ENV: SECRET}

    # The first gateway: its first message reaches the receiver, which holds it; the gateway
    # stops (cancelled in the middle of the POST) before any answer.
    receiver.stall_next(1)
    first_sleeper = Sleeper(idle_at=60)
    async with datadog_federation(datadog_sim) as federation:
        first = WebhookService([config], environ=environ, sleep=first_sleeper)
        await first.start(federation)
        try:
            await receiver.wait_for(lambda got: len(got) == 1)
        finally:
            await first.stop()
    receiver.release()
    [held] = receiver.snapshot()
    store = WebhookStore(config.state_file, config.name)
    try:
        state = await store.load()
    finally:
        await store.close()
    assert state.pending is not None
    assert state.pending.id == held.id  # stored before the attempt, kept without a 2xx
    assert state.pending.body == held.body
    assert (state.since, state.delivered_messages) == (None, 0)

    # The second gateway (a new federation: a new process with the same cursor secret) sends
    # the stored message again, then carries on until caught up.
    sleeper = Sleeper(idle_at=60)
    async with datadog_federation(datadog_sim) as federation:
        second = WebhookService([config], environ=environ, sleep=sleeper)
        await second.start(federation)
        try:
            await sleeper.wait_idle()
        finally:
            await second.stop()

    got = receiver.snapshot()
    assert (got[1].id, got[1].body, got[1].answered) == (held.id, held.body, 204)
    assert len(got) == 4  # the held message twice, then the two others: no flood
    assert all(d.verified for d in got)
    answered = [d for d in got if not d.stalled]
    assert len({d.id for d in answered}) == len(answered) == 3
    assert sorted(delivered_subjects(answered)) == [f"t-{i:02d}" for i in range(20)]  # none lost or twice
    # Across every request, an annotation came twice only inside the re-sent message.
    assert len(delivered_ids(got)) == 20 + len(held.payload["data"])
    assert sleeper.delays == [0.0, 0.0, 60]


async def test_another_cursor_secret_re_anchors_the_feed_instead_of_starting_over(
    datadog_sim: DatadogSimulator, receiver: Receiver, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    queue_id = seed(datadog_sim, 20)
    config = hook_config(receiver.url, tmp_path / "hook.sqlite3", batch_size=100)
    async with datadog_federation(datadog_sim) as federation, worker_for(config, federation) as worker:
        assert await worker.step() == 60
    assert len(delivered_ids(receiver.snapshot())) == 20

    seed(datadog_sim, 1, queue_id=queue_id, start=40)  # modified 400 s after the first
    async with (
        datadog_federation(datadog_sim, secret=b"another-process-random-secret!!!") as federation,
        worker_for(config, federation) as worker,
    ):
        assert await worker.step() == 60
        assert await worker.step() == 60  # caught up with the re-anchored token
    assert "reading again from" in caplog.text
    again = receiver.snapshot()[1:]
    assert len(again) == 1
    # The overlap (30 s before the newest delivered, at 190 s) comes again, and the new one.
    assert sorted(delivered_subjects(again)) == ["t-16", "t-17", "t-18", "t-19", "t-40"]


async def test_max_attempts_suspends_and_keeps_the_message_for_the_next_start(
    datadog_sim: DatadogSimulator, receiver: Receiver, tmp_path: Path
) -> None:
    seed(datadog_sim, 2)
    config = hook_config(receiver.url, tmp_path / "hook.sqlite3", max_attempts=2)
    receiver.fail_next(2, 503)
    sleeper = Sleeper(idle_at=60)
    async with datadog_federation(datadog_sim) as federation:
        async with worker_for(config, federation) as worker:
            worker._sleep = sleeper
            await asyncio.wait_for(worker.run(), 20)  # returns: suspended
        assert len(sleeper.delays) == 1  # one backoff between the two attempts
        status = await status_of(config)
        assert (status["state"], status["pending_attempts"], status["last_error"]) == (
            "suspended",
            2,
            "HTTP 503",
        )
        async with worker_for(config, federation) as worker:
            assert await worker.step() == 60
    got = receiver.snapshot()
    assert [d.answered for d in got] == [503, 503, 204]
    assert len({d.id for d in got}) == 1
    status = await status_of(config)
    assert (status["state"], status["delivered_messages"]) == ("idle", 1)


async def test_a_failing_source_is_retried_without_a_message(
    datadog_sim: DatadogSimulator, receiver: Receiver, tmp_path: Path
) -> None:
    seed(datadog_sim, 2)
    config = hook_config(receiver.url, tmp_path / "hook.sqlite3")
    async with datadog_federation(datadog_sim) as federation, worker_for(config, federation) as worker:
        datadog_sim.configure(fail_next=1000)
        delay = await worker.step()
        assert delay is not None
        assert delay <= 1.0
        status = await status_of(config)
        assert str(status["last_error"]).startswith("feed: ")
        assert status["pending_id"] is None
        assert receiver.snapshot() == []
        datadog_sim.configure(fail_next=0)
    # The circuit the failures opened belongs to that federation: a fresh one reads again.
    async with datadog_federation(datadog_sim) as federation, worker_for(config, federation) as worker:
        assert await worker.step() == 60
    assert len(delivered_ids(receiver.snapshot())) == 2


async def test_one_process_delivers_a_webhook_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "hook.sqlite3"
    first, second = WebhookStore(path, "w"), WebhookStore(path, "w")
    try:
        assert first.try_lock()
        assert not second.try_lock()
        first.unlock()
        assert second.try_lock()
    finally:
        await first.close()
        await second.close()


def test_message_body_is_the_annotations_canonical_json() -> None:
    from annotation_gateway.federation.changes import ChangesPage
    from annotation_gateway.webhooks.deliver import message_body

    body = message_body(ChangesPage([], "tok", True, []), 0.0)
    assert orjson.loads(body) == {
        "type": "annotations.changed",
        "timestamp": "1970-01-01T00:00:00.000000Z",
        "data": [],
        "partial": True,
    }
