"""A webhook receiver on loopback for the tests: verifies, records, and misbehaves on request.

Every POST is verified with the ``standardwebhooks`` reference implementation (the secret as a
receiver would configure it, ``whsec_...``) and recorded with its headers, body and whether the
signature verified. ``fail_next(n, status, retry_after)`` answers the next ``n`` requests with
``status``; ``stall_next(n)`` holds the next ``n`` requests (past the gateway's timeout) until
:meth:`Receiver.release` or ``STALL_MAX_S``. Tests in the event loop wait on it with
:meth:`Receiver.wait_for` (bounded), never a sleep.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.requests import Request
from starlette.responses import Response

from annotation_gateway.api.serving import ThreadedServer

STALL_MAX_S = 10.0


@dataclass(frozen=True)
class Delivery:
    id: str
    timestamp: str
    signature: str
    body: bytes
    verified: bool
    answered: int
    """The status the receiver chose."""
    stalled: bool
    """Held past the gateway's timeout: its client had gone when the answer was sent."""

    @property
    def payload(self) -> dict[str, Any]:
        parsed: dict[str, Any] = orjson.loads(self.body)
        return parsed


class Receiver:
    def __init__(self, secret: str) -> None:
        self._webhook = Webhook(secret)
        self.deliveries: list[Delivery] = []
        self._cond = threading.Condition()
        self._fail: list[tuple[int, str | None]] = []
        self._stall = 0
        self._released = threading.Event()
        self._server = ThreadedServer(self)

    # --- control ------------------------------------------------------------------------------

    def fail_next(self, n: int, status: int = 500, retry_after: str | None = None) -> None:
        with self._cond:
            self._fail.extend([(status, retry_after)] * n)

    def stall_next(self, n: int) -> None:
        with self._cond:
            self._stall += n
            self._released.clear()

    def release(self) -> None:
        self._released.set()

    @property
    def url(self) -> str:
        return f"{self._server.base_url}/hooks/annotations"

    def start(self) -> Receiver:
        self._server.start()
        return self

    def stop(self) -> None:
        self._released.set()
        self._server.stop()

    # --- observation --------------------------------------------------------------------------

    def snapshot(self) -> list[Delivery]:
        with self._cond:
            return list(self.deliveries)

    def wait_sync(self, predicate: Callable[[list[Delivery]], bool], timeout: float = 20.0) -> None:
        """Until ``predicate(deliveries)`` holds; ``AssertionError`` after ``timeout``."""
        with self._cond:
            seen = self._cond.wait_for(lambda: predicate(self.deliveries), timeout)
        assert seen, f"the receiver never saw that: {self.snapshot()}"

    async def wait_for(self, predicate: Callable[[list[Delivery]], bool], timeout: float = 20.0) -> None:
        """:meth:`wait_sync` from the event loop (in a thread, so the loop keeps running)."""
        await asyncio.to_thread(self.wait_sync, predicate, timeout)

    # --- the ASGI app ---------------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        request = Request(scope, receive)
        body = await request.body()
        headers = dict(request.headers)
        try:
            self._webhook.verify(body, headers)
            verified = True
        except WebhookVerificationError:
            verified = False
        with self._cond:
            stall = self._stall > 0
            if stall:
                self._stall -= 1
            status, retry_after = self._fail.pop(0) if self._fail and not stall else (204, None)
            self.deliveries.append(
                Delivery(
                    id=headers.get("webhook-id", ""),
                    timestamp=headers.get("webhook-timestamp", ""),
                    signature=headers.get("webhook-signature", ""),
                    body=body,
                    verified=verified,
                    answered=status,
                    stalled=stall,
                )
            )
            self._cond.notify_all()
        if stall:
            await asyncio.to_thread(self._released.wait, STALL_MAX_S)
        extra = {"retry-after": retry_after} if retry_after is not None else None
        await Response(status_code=status, headers=extra)(scope, receive, send)
