"""Fixtures for the project's Datadog LLM Observability simulator, served over real HTTP.

- ``datadog_simulator`` (session): the shared simulator (uvicorn in a background thread, on a
  free 127.0.0.1 port) with fixed keys. Use ``.base_url``, ``.api_key``, ``.app_key``. Seed it
  once from a session fixture for data many tests read.
- ``datadog_switches`` (function): that shared simulator, its switches (and request log) reset
  after the test, its data kept. Use it to inject faults into the shared data set.
- ``datadog_sim`` (function): a *separate* simulator, wiped before and after each test (no data,
  default switches, empty request log), for tests that build their own data: nothing leaks into
  or out of the shared one.

Typical use::

    def test_something(datadog_sim):
        made = datadog_sim.seed({"queues": [{"name": "q", "label_schemas": [...],
                                             "interactions": [...]}]})
        datadog_sim.configure(fail_next=1)            # any Switches field; see the simulator
        source = datadog_sim.source_config("dd")      # a DatadogSourceConfig pointing at it
        provider = DatadogProvider.from_config(source, environ=datadog_sim.environ)
        ...
        assert datadog_sim.requests[-1].status == 200  # what reached the "vendor"

The in-process state (``datadog_sim.state``) is the same object the server uses: switches flipped
there apply to the next request.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from annotation_gateway.providers.datadog import DatadogSourceConfig
from annotation_gateway.simulators.datadog import (
    RequestRecord,
    RunningSimulator,
    SimulatorConfig,
    SimulatorState,
    Switches,
    start_in_thread,
)

SIM_API_KEY = "sim-api-key-0123456789"
SIM_APP_KEY = "sim-app-key-0123456789"
API_KEY_ENV = "TEST_DD_API_KEY"
APP_KEY_ENV = "TEST_DD_APP_KEY"


@dataclass
class DatadogSimulator:
    """A running simulator and the handles tests need."""

    running: RunningSimulator
    api_key: str = SIM_API_KEY
    app_key: str = SIM_APP_KEY

    @property
    def base_url(self) -> str:
        return self.running.base_url

    @property
    def state(self) -> SimulatorState:
        return self.running.state

    @property
    def headers(self) -> dict[str, str]:
        """The auth headers Datadog expects, with this simulator's keys."""
        return {"DD-API-KEY": self.api_key, "DD-APPLICATION-KEY": self.app_key}

    @property
    def environ(self) -> dict[str, str]:
        """An environment for ``from_config(..., environ=...)`` holding the keys."""
        return {API_KEY_ENV: self.api_key, APP_KEY_ENV: self.app_key}

    def source_config(self, name: str = "datadog-sim", **overrides: Any) -> DatadogSourceConfig:
        """A Datadog source pointing at this simulator, its keys in :attr:`environ`."""
        fields: dict[str, Any] = {
            "name": name,
            "base_url": self.base_url,
            "api_key_env": API_KEY_ENV,
            "app_key_env": APP_KEY_ENV,
        }
        return DatadogSourceConfig.model_validate(fields | overrides)

    def seed(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Load a seed document (format: the simulator's module docstring); returns the ids."""
        return self.state.load_seed(doc)

    def configure(self, **switches: Any) -> Switches:
        return self.state.configure(**switches)

    def reset(self) -> None:
        self.state.reset()

    @property
    def requests(self) -> list[RequestRecord]:
        return self.state.requests


def _serve() -> Iterator[DatadogSimulator]:
    running = start_in_thread(SimulatorConfig(api_key=SIM_API_KEY, app_key=SIM_APP_KEY))
    try:
        yield DatadogSimulator(running)
    finally:
        running.stop()


@pytest.fixture(scope="session")
def datadog_simulator() -> Iterator[DatadogSimulator]:
    yield from _serve()


@pytest.fixture
def datadog_switches(datadog_simulator: DatadogSimulator) -> Iterator[DatadogSimulator]:
    yield datadog_simulator
    datadog_simulator.state.reset(data=False, switches=True)


@pytest.fixture(scope="session")
def _datadog_scratch_simulator() -> Iterator[DatadogSimulator]:
    yield from _serve()


@pytest.fixture
def datadog_sim(_datadog_scratch_simulator: DatadogSimulator) -> Iterator[DatadogSimulator]:
    _datadog_scratch_simulator.reset()
    yield _datadog_scratch_simulator
    _datadog_scratch_simulator.reset()


# --- seed helpers with controlled times (the change feed's and the webhooks' tests) -----------

SCORE_LABELS: list[dict[str, Any]] = [{"name": "quality", "type": "score", "min": 0, "max": 10}]
"""A queue's label schema of one score label, ``quality``."""
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def stamp(seconds: float) -> str:
    """``T0 + seconds`` as the simulator's seed takes a time."""
    return (T0 + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def timed_interaction(content: str, annotation_id: str, seconds: float, value: float) -> dict[str, Any]:
    """One trace with one ``quality`` annotation whose ``modified_at`` is ``T0 + seconds``."""
    return {
        "type": "trace",
        "content_id": content,
        "annotations": [
            {
                "user": "alice",
                "id": annotation_id,
                "created_at": stamp(0),
                "modified_at": stamp(seconds),
                "label_values": [{"label": "quality", "value": value}],
            }
        ],
    }
