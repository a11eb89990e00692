"""One simulator's state.

Contract: :class:`SimulatorState` — the store, the switches (flipped live), the rate-limit window,
the fault dice and the log of API requests (:class:`RequestRecord`) one simulator holds.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from annotation_gateway.simulators.datadog.config import (
    RATE_LIMIT_NAME,
    REQUEST_LOG_SIZE,
    SimulatorConfig,
    Switches,
)
from annotation_gateway.simulators.datadog.store import (
    DatadogStore,
    SimApiError,
    user_id_for_app_key,
    user_id_for_name,
)


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One API request as received, for tests to check what a client put on the wire."""

    method: str
    path: str
    query: tuple[tuple[str, str], ...]
    raw_query: str
    status: int
    at: float


class SimulatorState:
    """The live state of one simulator: data, switches, rate window and request log.

    Thread-safe: tests drive it from the main thread while uvicorn serves from another.
    """

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.store = DatadogStore()
        self._lock = threading.Lock()
        self._switches = config.switches
        self._rng = random.Random(config.random_seed)
        self._window_start: float | None = None
        self._window_count = 0
        self._in_flight = 0
        self.max_in_flight = 0
        """The most API requests ever being answered at once (tests check client concurrency)."""
        self._requests: deque[RequestRecord] = deque(maxlen=REQUEST_LOG_SIZE)
        self._load_initial_seed()

    # --- switches ---

    @property
    def switches(self) -> Switches:
        return self._switches

    def configure(self, **changes: Any) -> Switches:
        """Change some switches (validated); the others keep their values."""
        with self._lock:
            merged = {**self._switches.model_dump(), **changes}
            self._switches = Switches.model_validate(merged)
            if "rate_limit" in changes:
                self._window_start = None
            return self._switches

    def reset(self, *, data: bool = True, switches: bool = True) -> None:
        """Back to the start-up state: switches, data (the initial seed reloaded), logs."""
        with self._lock:
            if switches:
                self._switches = self.config.switches
                self._rng = random.Random(self.config.random_seed)
                self._window_start = None
            self._requests.clear()
            self.max_in_flight = 0
        if data:
            self.store.clear()
            self._load_initial_seed()

    # --- data ---

    @property
    def default_user(self) -> str:
        """Who seeded data belongs to when the seed names nobody."""
        if self.config.app_key:
            return user_id_for_app_key(self.config.app_key)
        return user_id_for_name("seed")

    def load_seed(self, doc: Any) -> dict[str, Any]:
        """Load a seed document; raises ``SimApiError`` (nothing loaded) when it is invalid."""
        return self.store.load_seed(doc, default_user=self.default_user)

    def _load_initial_seed(self) -> None:
        """Load the configured seeds; a bad seed is a ValueError naming the file and the entry."""
        seeds: list[tuple[str, Callable[[], Any]]] = []
        if self.config.seed_file is not None:
            path = self.config.seed_file
            seeds.append((str(path), lambda: orjson.loads(path.read_bytes())))
        if self.config.seed is not None:
            inline = self.config.seed
            seeds.append(("the inline seed", lambda: inline))
        for name, read in seeds:
            try:
                self.load_seed(read())
            except SimApiError as exc:
                first = exc.errors[0]
                where = first.get("source", {}).get("pointer", "")
                raise ValueError(f"seed {name}: {first['detail']} at {where or '/'}") from None
            except (OSError, ValueError) as exc:
                raise ValueError(f"seed {name}: {exc}") from None

    # --- request log ---

    @property
    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()
            self.max_in_flight = 0

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self._requests.append(record)

    def _enter(self) -> None:
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    # --- faults ---

    def _should_fail(self) -> int | None:
        with self._lock:
            sw = self._switches
            if sw.fail_next > 0:
                self._switches = sw.model_copy(update={"fail_next": sw.fail_next - 1})
                return sw.fail_status
            if sw.fail_rate > 0 and self._rng.random() < sw.fail_rate:
                return sw.fail_status
            return None

    def _take_rate_limit(self) -> tuple[bool, dict[str, str]]:
        """Count one request against the window: (allowed, X-RateLimit-* headers)."""
        with self._lock:
            limit = self._switches.rate_limit
            if limit is None:
                return True, {}
            now = time.monotonic()
            if self._window_start is None or now - self._window_start >= limit.period_s:
                self._window_start, self._window_count = now, 0
            allowed = self._window_count < limit.limit
            if allowed:
                self._window_count += 1
            reset = max(1, math.ceil(self._window_start + limit.period_s - now))
            period = limit.period_s
            headers = {
                "X-RateLimit-Limit": str(limit.limit),
                "X-RateLimit-Period": str(int(period)) if period == int(period) else str(period),
                "X-RateLimit-Remaining": str(limit.limit - self._window_count),
                "X-RateLimit-Reset": str(reset),
                "X-RateLimit-Name": RATE_LIMIT_NAME,
            }
            return allowed, headers
