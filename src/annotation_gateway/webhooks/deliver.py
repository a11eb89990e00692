"""The delivery loops: each webhook follows the change feed and POSTs its batches, at least once.

Contract:
- one loop per enabled webhook (:class:`WebhookWorker`). A step either sends the stored pending
  message, or — none pending — reads ``federation.changes(query, since=<stored since>,
  limit=batch_size)``; a page with records becomes one message, **stored before its first
  attempt** (its id, exact body and the ``next_since`` it advances to: :mod:`.store`). Only a
  2xx advances the stored ``since`` and removes the message, so a restart mid-delivery sends the
  same message again (same ``webhook-id``) and nothing is lost; one message is pending per
  webhook at a time, so nothing floods either;
- the body is ``{"type": "annotations.changed", "timestamp": <RFC 3339, when the message was
  made>, "data": [<annotations, SPEC §2 shape, oldest first>], "partial": bool}`` with the
  Standard Webhooks headers of :mod:`.signing` (each attempt signed at its own time);
  ``partial`` is true when a source failed and ``filters.partial = "allow"``;
- a failed attempt (a transport error, the timeout, any non-2xx — redirects are not followed)
  is retried after ``initial_backoff_s`` doubling up to ``max_backoff_s``, each delay drawn in
  its upper half (jitter, so many gateways do not retry in step); a 429 or 503 with
  ``Retry-After`` waits what it says (at most an hour). After ``max_attempts`` failures (when
  set) the loop stops — suspended, the message kept — until the gateway restarts. A failed read
  of the feed is retried the same way (the status shows its problem code);
- the feed's ``since`` is signed with the cursor secret and bound to the query and the sources:
  when a restart brings another secret (``GATEWAY_CURSOR_SECRET`` unset) or the filters or
  sources changed, the stored token is refused. The loop then **re-anchors**: it reads the feed
  afresh from ``CHANGES_OVERLAP_S`` before the newest ``updated_at`` it delivered (the changes
  in that overlap may come again; nothing is skipped, nothing floods) and keeps that bound;
- caught up (an empty page, or a short one delivered), the loop waits ``interval_s``; a full
  page delivered is followed at once by the next read. Time and waiting are injected (``clock``,
  ``sleep``, ``rng``) so tests control them; there is no busy loop;
- :class:`WebhookService` owns the loops, the HTTP client and the stores; ``stop()`` cancels the
  loops and waits for a SQLite commit already started. Only one process delivers a webhook (its
  store's lock); the others stand by, retrying the lock every ``interval_s``;
- secrets go into the signature only: never into the status, a log line or a metric label (the
  URL is shown without credentials or query); errors are recorded as ``HTTP <status>``, an
  exception's class name, or a problem code.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import random
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import httpx
import orjson

from annotation_gateway import __version__
from annotation_gateway.errors import GatewayError, InvalidCursorError
from annotation_gateway.federation import FederatedQuery, limits
from annotation_gateway.federation.changes import ChangesPage
from annotation_gateway.providers.config import ConfigError, read_secret
from annotation_gateway.records import json_items
from annotation_gateway.webhooks.config import WebhookConfig, parse_secret
from annotation_gateway.webhooks.signing import signed_headers
from annotation_gateway.webhooks.store import Pending, WebhookState, WebhookStore

__all__ = [
    "EVENT_TYPE",
    "ChangeFeed",
    "RedactWebhookUrls",
    "WebhookObserver",
    "WebhookService",
    "WebhookStatus",
    "WebhookWorker",
    "message_body",
]

log = logging.getLogger(__name__)

EVENT_TYPE = "annotations.changed"
MAX_RETRY_AFTER_S = 3600.0
"""A receiver's ``Retry-After`` is honoured up to this (a larger one is taken as this)."""
USER_AGENT = f"annotation-gateway/{__version__} (webhooks)"
HTTPX_LOGGER = "httpx"

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]


class ChangeFeed(Protocol):
    """What the loop needs of the federation."""

    async def changes(
        self,
        query: FederatedQuery,
        *,
        since: str | None,
        limit: int = ...,
        allowed_sources: frozenset[str] | None = None,
        audience: str | None = None,
    ) -> ChangesPage: ...


class WebhookObserver(Protocol):
    """Metrics hooks (:class:`~annotation_gateway.api.routes.metrics.GatewayMetrics`)."""

    def on_webhook_delivery(self, webhook: str, outcome: str, annotations: int) -> None: ...

    def on_webhook_pending(self, webhook: str, pending: int) -> None: ...

    def on_webhook_success(self, webhook: str, at: float) -> None: ...


class _NoObserver:
    def on_webhook_delivery(self, webhook: str, outcome: str, annotations: int) -> None:
        pass

    def on_webhook_pending(self, webhook: str, pending: int) -> None:
        pass

    def on_webhook_success(self, webhook: str, at: float) -> None:
        pass


def message_body(page: ChangesPage, made_at: float) -> bytes:
    """The message's exact bytes; each annotation's canonical JSON as its record writes it."""
    stamp = datetime.fromtimestamp(made_at, tz=UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    return b"".join(
        (
            b'{"type":',
            orjson.dumps(EVENT_TYPE),
            b',"timestamp":',
            orjson.dumps(stamp),
            b',"data":[',
            json_items(page.records),
            b'],"partial":',
            b"true" if page.partial else b"false",
            b"}",
        )
    )


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER_S)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max(when.timestamp() - now, 0.0), MAX_RETRY_AFTER_S)


@dataclass(frozen=True, slots=True)
class Outcome:
    """One attempt: ``ok`` | ``rejected`` (non-2xx) | ``timeout`` | ``error`` (transport)."""

    outcome: str
    error: str | None = None
    wait_s: float | None = None


class WebhookWorker:
    """One webhook's loop (see the module docstring). :meth:`step` is one unit of work and
    says how long to wait before the next (``None``: suspended); :meth:`run` repeats it."""

    def __init__(
        self,
        config: WebhookConfig,
        *,
        federation: ChangeFeed,
        store: WebhookStore,
        client: httpx.AsyncClient,
        secret: bytes,
        observer: WebhookObserver | None = None,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self._federation = federation
        self._store = store
        self._client = client
        self._secret = secret
        self._observer: WebhookObserver = observer or _NoObserver()
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()  # jitter, not a secret
        self._query = config.filters.query()
        self._audience = f"webhook:{config.name}"
        self._round_attempts = 0
        """Failed attempts since this loop started (``max_attempts`` counts these)."""
        self._poll_failures = 0

    @property
    def name(self) -> str:
        return self.config.name

    async def run(self) -> None:
        """Deliver until cancelled (or suspended); waits for the store's lock first."""
        while not self._store.try_lock():
            await self._sleep(self.config.interval_s)
        try:
            state = await self._store.load()
            self._observer.on_webhook_pending(self.name, 0 if state.pending is None else 1)
            if state.last_success_at is not None:
                self._observer.on_webhook_success(self.name, state.last_success_at)
            while True:
                delay = await self.step()
                if delay is None:
                    log.error(
                        "webhook %s suspended after %d failed attempts; its message is kept and is "
                        "sent again when the gateway restarts",
                        self.name,
                        self._round_attempts,
                    )
                    return
                await self._sleep(delay)
        finally:
            self._store.unlock()

    async def step(self) -> float | None:
        """Send the pending message, or read the feed and send what it has."""
        state = await self._store.load()
        pending = state.pending
        if pending is None:
            page = await self._read(state)
            if page is None:
                return self.backoff(self._poll_failures)
            if not page.records:
                if page.next_since != state.since:
                    await self._store.set_since(page.next_since, state.anchor_us)
                return self.config.interval_s
            pending = self._message(page)
            await self._store.put_pending(pending)
            self._observer.on_webhook_pending(self.name, 1)
        return await self._deliver(pending)

    # --- reading the feed -----------------------------------------------------------------------

    def _anchored(self, anchor_us: int | None) -> FederatedQuery | None:
        """The query, bounded below by the re-anchor point; ``None`` when that bound leaves
        nothing (past ``updated_before``: this webhook has nothing more to deliver)."""
        if anchor_us is None:
            return self._query
        anchor = datetime.fromtimestamp(anchor_us / 1e6, tz=UTC)
        if self._query.updated_after is not None and self._query.updated_after >= anchor:
            return self._query
        if self._query.updated_before is not None and anchor >= self._query.updated_before:
            return None
        return replace(self._query, updated_after=anchor)

    async def _read(self, state: WebhookState) -> ChangesPage | None:
        since, anchor_us = state.since, state.anchor_us
        for _ in range(2):  # the second pass only after a re-anchor, which cannot be refused
            query = self._anchored(anchor_us)
            if query is None:
                return ChangesPage([], since or "", False, [])
            try:
                page = await self._federation.changes(
                    query, since=since, limit=self.config.batch_size, audience=self._audience
                )
            except InvalidCursorError:
                if since is None:
                    raise  # not a stored token's fault: a bug, reported below
                anchor_us = self._reanchor_point(state)
                log.warning(
                    "webhook %s: its stored position was refused (the cursor secret, the filters or "
                    "the sources changed); reading again from %s",
                    self.name,
                    "the beginning" if anchor_us is None else _iso(anchor_us),
                )
                since = None
                await self._store.set_since(None, anchor_us)
                continue
            except GatewayError as exc:
                return await self._read_failed(exc.code.value)
            except (httpx.HTTPError, OSError) as exc:
                return await self._read_failed(type(exc).__name__)
            self._poll_failures = 0
            return page
        raise AssertionError("unreachable: a re-anchored read has no since token to refuse")

    def _reanchor_point(self, state: WebhookState) -> int | None:
        if state.watermark_us is None:
            return state.anchor_us
        return state.watermark_us - int(limits.CHANGES_OVERLAP_S * 1_000_000)

    async def _read_failed(self, error: str) -> ChangesPage | None:
        """Record a failed read; ``None`` tells :meth:`step` to back off."""
        self._poll_failures += 1
        log.warning("webhook %s: reading the change feed failed: %s", self.name, error)
        await self._store.poll_failed(f"feed: {error}", self._clock())
        return None

    def _message(self, page: ChangesPage) -> Pending:
        now = self._clock()
        return Pending(
            id=f"msg_{uuid.uuid4().hex}",
            body=message_body(page, now),
            count=len(page.records),
            next_since=page.next_since,
            watermark_us=max(r.updated_us for r in page.records),
            since=now,
        )

    # --- sending --------------------------------------------------------------------------------

    async def _deliver(self, pending: Pending) -> float | None:
        result = await self._attempt(pending)
        now = self._clock()
        self._observer.on_webhook_delivery(self.name, result.outcome, pending.count)
        if result.outcome == "ok":
            await self._store.complete(now)
            self._round_attempts = 0
            self._observer.on_webhook_pending(self.name, 0)
            self._observer.on_webhook_success(self.name, now)
            log.info("webhook %s: delivered %s (%d annotations)", self.name, pending.id, pending.count)
            full = pending.count >= self.config.batch_size
            return 0.0 if full else self.config.interval_s
        self._round_attempts += 1
        limit = self.config.max_attempts
        suspended = limit is not None and self._round_attempts >= limit
        await self._store.attempt_failed(result.error or result.outcome, now, suspended=suspended)
        log.warning(
            "webhook %s: attempt %d of %s failed: %s",
            self.name,
            pending.attempts + 1,
            pending.id,
            result.error,
        )
        if suspended:
            return None
        if result.wait_s is not None:
            return result.wait_s
        return self.backoff(pending.attempts + 1)

    async def _attempt(self, pending: Pending) -> Outcome:
        headers = signed_headers(self._secret, pending.id, int(self._clock()), pending.body)
        headers["content-type"] = "application/json"
        headers["user-agent"] = USER_AGENT
        try:
            # Streamed and never read: a receiver's answer body is of no use, and could be huge.
            async with self._client.stream(
                "POST",
                self.config.url,
                content=pending.body,
                headers=headers,
                timeout=self.config.timeout_s,
            ) as response:
                status = response.status_code
                wait = None
                if status in (429, 503):
                    wait = retry_after(response.headers.get("retry-after"), self._clock())
        except httpx.TimeoutException as exc:
            return Outcome("timeout", f"timeout ({type(exc).__name__})")
        except httpx.HTTPError as exc:
            return Outcome("error", type(exc).__name__)
        if 200 <= status < 300:
            return Outcome("ok")
        return Outcome("rejected", f"HTTP {status}", wait)

    def backoff(self, failures: int) -> float:
        """``initial_backoff_s`` doubled per failure up to ``max_backoff_s``, in its upper half."""
        ceiling = min(
            self.config.max_backoff_s, self.config.initial_backoff_s * 2.0 ** min(max(failures - 1, 0), 32)
        )
        return ceiling / 2 + self._rng.random() * ceiling / 2


class RedactWebhookUrls(logging.Filter):
    """Shows webhook URLs without credentials or query in ``httpx``'s own log lines: httpx logs
    every request's whole URL at INFO, and receivers put tokens in the query."""

    def __init__(self, urls: Mapping[str, str]) -> None:
        super().__init__()
        self._urls = dict(urls)
        """full URL → what may be shown"""

    @classmethod
    def install(cls, configs: Sequence[WebhookConfig]) -> RedactWebhookUrls | None:
        """Add the filter to httpx's logger when a URL has something to hide."""
        hidden = {str(httpx.URL(c.url)): c.public_url for c in configs if c.url != c.public_url}
        if not hidden:
            return None
        redact = cls(hidden)
        logging.getLogger(HTTPX_LOGGER).addFilter(redact)
        return redact

    def uninstall(self) -> None:
        logging.getLogger(HTTPX_LOGGER).removeFilter(self)

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(str(a) in self._urls for a in record.args):
            record.args = tuple(self._urls.get(str(a), a) for a in record.args)
        return True


def _iso(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, tz=UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class WebhookStatus:
    """What ``GET /v1/webhooks`` shows of one webhook."""

    name: str
    url: str
    enabled: bool
    state: str
    """``idle`` | ``pending`` (a message stored, not yet tried) | ``retrying`` | ``suspended``
    | ``disabled``."""
    delivered_messages: int
    delivered_annotations: int
    last_success_at: float | None
    last_error: str | None
    last_error_at: float | None
    pending_id: str | None
    pending_annotations: int | None
    pending_attempts: int
    pending_since: float | None
    sources: tuple[str, ...]
    """The webhook's ``filters.sources`` (empty: every source)."""


class WebhookService:
    """Every configured webhook's loop, the HTTP client and the stores (see the module docstring)."""

    def __init__(
        self,
        configs: Sequence[WebhookConfig],
        *,
        observer: WebhookObserver | None = None,
        environ: Mapping[str, str] | None = None,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.configs = list(configs)
        self._observer = observer
        self._environ = environ
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self._client = client
        self._owns_client = client is None
        self._stores = {c.name: WebhookStore(Path(c.state_file), c.name) for c in self.configs}
        self.workers: dict[str, WebhookWorker] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._redact: RedactWebhookUrls | None = None

    def secrets(self) -> dict[str, bytes]:
        """Each enabled webhook's HMAC key; ``ConfigError`` naming the key when one is missing
        or malformed (so a gateway with a broken webhook does not start)."""
        out: dict[str, bytes] = {}
        for index, config in enumerate(self.configs):
            if not config.enabled:
                continue
            key = f"webhooks[{index}].secret_env"
            value = read_secret(config.secret_env, key=key, environ=self._environ)
            assert value is not None  # secret_env is required
            out[config.name] = parse_secret(value.get_secret_value(), key=key)
        return out

    async def start(self, federation: ChangeFeed) -> None:
        keys = self.secrets()
        if not keys:
            return
        for index, config in enumerate(self.configs):
            if config.name in keys:
                try:
                    # Opened now, so an unwritable state_path stops the startup with its key
                    # rather than failing in a loop later.
                    await self._stores[config.name].load()
                except (sqlite3.Error, OSError) as exc:
                    raise ConfigError(
                        f"webhooks[{index}].state_path: cannot use {config.state_file}: {exc}"
                    ) from exc
        if self._client is None:
            # No proxies from the environment and no redirects, as for the sources; the
            # timeout is set per request (each webhook has its own).
            self._client = httpx.AsyncClient(trust_env=False, follow_redirects=False)
        self._redact = RedactWebhookUrls.install(self.configs)
        for config in self.configs:
            if config.name not in keys:
                continue
            worker = WebhookWorker(
                config,
                federation=federation,
                store=self._stores[config.name],
                client=self._client,
                secret=keys[config.name],
                observer=self._observer,
                clock=self._clock,
                sleep=self._sleep,
                rng=self._rng,
            )
            self.workers[config.name] = worker
            self._tasks[config.name] = asyncio.create_task(
                self._supervise(worker), name=f"webhook-{config.name}"
            )
        log.info("webhooks delivering: %s", ", ".join(self._tasks))

    async def _supervise(self, worker: WebhookWorker) -> None:
        """Keep one loop going: an unexpected error is logged and the loop restarted after a
        backoff (a bug must not silently end deliveries)."""
        failures = 0
        while True:
            try:
                await worker.run()
                return  # suspended
            except asyncio.CancelledError:
                raise
            except Exception:
                failures += 1
                log.exception("webhook %s: the delivery loop failed; restarting it", worker.name)
                await self._sleep(worker.backoff(failures))

    async def stop(self) -> None:
        """Cancel the loops, wait for them (and any commit in progress), close everything."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._redact is not None:
            self._redact.uninstall()
            self._redact = None
        for store in self._stores.values():
            await store.close()
        if self._client is not None and self._owns_client:
            await self._client.aclose()
            self._client = None

    async def status(self) -> list[WebhookStatus]:
        out = []
        for config in self.configs:
            store = self._stores[config.name]
            if not config.enabled and not store.path.exists():
                # A disabled webhook that never ran: no file is made just to say so.
                state = WebhookState(config.name)
            else:
                state = await store.load()
            out.append(_status(config, state))
        return out


def _status(config: WebhookConfig, state: WebhookState) -> WebhookStatus:
    pending = state.pending
    if not config.enabled:
        kind = "disabled"
    elif state.suspended_at is not None:
        kind = "suspended"
    elif pending is None:
        kind = "idle"
    else:
        kind = "retrying" if pending.attempts else "pending"
    return WebhookStatus(
        name=config.name,
        url=config.public_url,
        enabled=config.enabled,
        state=kind,
        delivered_messages=state.delivered_messages,
        delivered_annotations=state.delivered_annotations,
        last_success_at=state.last_success_at,
        last_error=state.last_error,
        last_error_at=state.last_error_at,
        pending_id=None if pending is None else pending.id,
        pending_annotations=None if pending is None else pending.count,
        pending_attempts=0 if pending is None else pending.attempts,
        pending_since=None if pending is None else pending.since,
        sources=tuple(config.filters.sources),
    )
