"""Fixtures for the API tests: the real gateway over real HTTP, in front of a real Phoenix and the
Datadog simulator, both seeded with overlapping data through their own APIs.

- ``api_data`` (package): a fresh Phoenix project and the simulator's queue, seeded with the same
  session ids: sessions 00-03 in Phoenix only, 04-16 in both, 17-19 in Datadog only. It knows how
  many canonical annotations each source must answer, and Phoenix's annotation ids.
- ``make_gateway`` (function): builds a gateway (``create_app`` + uvicorn in a thread on a free
  127.0.0.1 port) for given sources/cache/auth, stopped after the test; fault tests use their own,
  so a tripped circuit or a warm cache never leaks into another test.
- ``gateway`` (package): the shared gateway over both sources with the two test keys.
- ``client`` / ``client_for(key)``: httpx clients whose every response is checked for secrets.
- autouse ``no_secrets_in_logs``: every log record of every API test (caplog at DEBUG, all
  threads) is searched for the vendor keys and the gateway keys.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from annotation_gateway.api.app import create_app
from annotation_gateway.api.serving import ThreadedServer, free_port
from annotation_gateway.devservers.phoenix import PhoenixSeeder, PhoenixServer
from annotation_gateway.providers.datadog import DatadogSourceConfig
from annotation_gateway.providers.phoenix import PhoenixSourceConfig
from annotation_gateway.settings import (
    ApiKeyConfig,
    AuthConfig,
    CacheConfig,
    GatewaySettings,
    ServerConfig,
    hash_key,
)
from tests.plugins.datadog import API_KEY_ENV, APP_KEY_ENV, SIM_API_KEY, SIM_APP_KEY, DatadogSimulator
from tests.plugins.phoenix import seed_sessions

ADMIN_KEY = "gw-test-admin-key-7f3a9c"
PHOENIX_ONLY_KEY = "gw-test-phoenix-only-key-51be02"
PHOENIX_SOURCE = "phoenix-test"
DATADOG_SOURCE = "datadog-test"
SECRETS = [SIM_API_KEY, SIM_APP_KEY, ADMIN_KEY, PHOENIX_ONLY_KEY]
"""What must never appear in a response or a log line."""
N_SESSIONS = 20
PHOENIX_SESSIONS = range(0, 17)
DATADOG_SESSIONS = range(4, 20)
SECOND_OPINION_SESSIONS = range(0, 6)
"""Phoenix sessions with a second ``resolution`` under identifier ``second-opinion``."""
BOB_SESSIONS = range(4, 20, 2)
"""Datadog sessions that a second reviewer (bob) annotated too."""
DD_LABELS_PER_ANNOTATION = 3
LABELS = ("resolved", "unresolved", "escalated")


@dataclass
class ApiData:
    project: str
    session_ids: list[str]
    write_session_id: str
    """A Phoenix session outside ``session_ids``, for write tests."""
    phoenix_ids: set[str]
    """Canonical ids of every Phoenix session annotation seeded."""
    expected: dict[str, int]
    """Canonical annotations each source answers for all ``session_ids``."""
    simulator: DatadogSimulator
    phoenix: PhoenixServer
    secrets: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.expected.values())

    def phoenix_config(self, **overrides: Any) -> PhoenixSourceConfig:
        fields: dict[str, Any] = {
            "name": PHOENIX_SOURCE,
            "base_url": self.phoenix.base_url,
            "project": self.project,
            "retry_attempts": 1,
        }
        return PhoenixSourceConfig.model_validate(fields | overrides)

    def scope_sessions(self) -> list[str]:
        """Every session of the package's Phoenix project, listed by Phoenix itself (tests of the
        package add sessions to it), and every content id in the simulator's queues: the
        sessions a ``scope=all`` read covers, for the id queries that check it."""
        ids: list[str] = []
        cursor: str | None = None
        with httpx.Client(base_url=self.phoenix.base_url, timeout=30) as phoenix:
            for _ in range(100):
                params = {"limit": "1000", **({"cursor": cursor} if cursor else {})}
                page = phoenix.get(f"/v1/projects/{self.project}/sessions", params=params).json()
                ids += [row["session_id"] for row in page["data"]]
                cursor = page["next_cursor"]
                if not cursor:
                    break
        store = self.simulator.state.store
        ids += [i.content_id for q in store.queues.values() for i in store.queue_interactions(q.id)]
        return sorted(set(ids))

    def datadog_config(self, **overrides: Any) -> DatadogSourceConfig:
        return self.simulator.source_config(DATADOG_SOURCE, retry_attempts=1, **overrides)


def _datadog_seed(session_ids: list[str]) -> dict[str, Any]:
    interactions = []
    for i in DATADOG_SESSIONS:
        annotations = [
            {
                "user": "alice",
                "label_values": {
                    "resolution": [LABELS[i % 3]],
                    "helpfulness": round((i % 5) / 4, 2),
                    "tone": ["friendly" if i % 2 else "neutral"],
                },
            }
        ]
        if i in BOB_SESSIONS:
            annotations.append(
                {
                    "user": "bob",
                    "label_values": {
                        "resolution": [LABELS[(i + 1) % 3]],
                        "helpfulness": 0.5,
                        "tone": ["curt"],
                    },
                }
            )
        interactions.append({"type": "session", "content_id": session_ids[i], "annotations": annotations})
    return {
        "queues": [
            {
                "name": f"api-tests-{uuid.uuid4().hex[:6]}",
                "label_schemas": [
                    {"name": "resolution", "type": "categorical", "values": list(LABELS)},
                    {"name": "helpfulness", "type": "score", "min": 0, "max": 1},
                    {"name": "tone", "type": "categorical", "values": ["friendly", "neutral", "curt"]},
                ],
                "interactions": interactions,
            }
        ]
    }


def _phoenix_rows(session_ids: list[str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for i in PHOENIX_SESSIONS:
        sid = session_ids[i]
        rows += [
            {
                "session_id": sid,
                "name": "resolution",
                "annotator_kind": "HUMAN",
                "result": {"label": LABELS[i % 3]},
                "metadata": {},
                "identifier": "",
            },
            {
                "session_id": sid,
                "name": "helpfulness",
                "annotator_kind": "LLM",
                "result": {"score": round((i % 5) / 4, 2), "explanation": f"judge says {i}"},
                "metadata": {"judge": "v2"},
                "identifier": "",
            },
            {
                "session_id": sid,
                "name": "pii_check",
                "annotator_kind": "CODE",
                "result": {"label": "pass", "score": 1.0},
                "metadata": {},
                "identifier": "",
            },
        ]
        if i in SECOND_OPINION_SESSIONS:
            rows.append(
                {
                    "session_id": sid,
                    "name": "resolution",
                    "annotator_kind": "HUMAN",
                    "result": {"label": "escalated"},
                    "metadata": {},
                    "identifier": "second-opinion",
                }
            )
    return rows


@pytest.fixture(scope="package")
def api_data(phoenix_server: PhoenixServer, datadog_simulator: DatadogSimulator) -> Iterator[ApiData]:
    datadog_simulator.reset()
    project = f"gw-api-{uuid.uuid4().hex[:6]}"
    with PhoenixSeeder(phoenix_server.base_url) as seeder:
        seeder.create_project(project)
        # Sessions exist in Phoenix once a span carries their id; the fixture names them.
        # One more session than the data set: writes go there, so they never change what the
        # other tests expect.
        *session_ids, write_session_id = seed_sessions(seeder, project, N_SESSIONS + 1)[0]
        gids = seeder.annotate_sessions(_phoenix_rows(session_ids))
    datadog_simulator.seed(_datadog_seed(session_ids))
    dd_annotations = len(DATADOG_SESSIONS) + len(BOB_SESSIONS)
    data = ApiData(
        project=project,
        session_ids=session_ids,
        write_session_id=write_session_id,
        phoenix_ids={f"{PHOENIX_SOURCE}:{gid}" for gid in gids},
        expected={PHOENIX_SOURCE: len(gids), DATADOG_SOURCE: dd_annotations * DD_LABELS_PER_ANNOTATION},
        simulator=datadog_simulator,
        phoenix=phoenix_server,
        secrets=SECRETS,
    )
    yield data
    datadog_simulator.reset()


GatewayFactory = Callable[..., ThreadedServer]


def build_settings(
    sources: list[PhoenixSourceConfig | DatadogSourceConfig], *, cache: CacheConfig | None = None
) -> GatewaySettings:
    return GatewaySettings(
        server=ServerConfig(host="127.0.0.1", port=0),
        auth=AuthConfig(
            keys=[
                ApiKeyConfig(name="admin", sha256=hash_key(ADMIN_KEY)),
                ApiKeyConfig(
                    name="phoenix-only", sha256=hash_key(PHOENIX_ONLY_KEY), sources=[PHOENIX_SOURCE]
                ),
            ]
        ),
        cache=cache or CacheConfig(),
        sources=sources,
    )


@pytest.fixture(scope="package")
def _vendor_env(api_data: ApiData) -> Iterator[None]:
    # The providers read their keys from the environment the config names, as in production.
    mp = pytest.MonkeyPatch()
    for name, value in api_data.simulator.environ.items():
        mp.setenv(name, value)
    assert {API_KEY_ENV, APP_KEY_ENV} <= set(api_data.simulator.environ)
    yield
    mp.undo()


@pytest.fixture
def make_gateway(api_data: ApiData, _vendor_env: None) -> Iterator[GatewayFactory]:
    started: list[ThreadedServer] = []

    def make(
        sources: list[PhoenixSourceConfig | DatadogSourceConfig] | None = None,
        *,
        cache: CacheConfig | None = None,
        providers: list[Any] | None = None,
    ) -> ThreadedServer:
        configs = sources if sources is not None else [api_data.phoenix_config(), api_data.datadog_config()]
        app = create_app(build_settings(configs, cache=cache), providers=providers)
        server = ThreadedServer(app).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture(scope="package")
def gateway(api_data: ApiData, _vendor_env: None) -> Iterator[ThreadedServer]:
    settings = build_settings([api_data.phoenix_config(), api_data.datadog_config()])
    with ThreadedServer(create_app(settings)) as server:
        yield server


def closed_port_url() -> str:
    """A loopback URL where nothing listens (a source that is down)."""
    return f"http://127.0.0.1:{free_port()}"


ClientFactory = Callable[..., httpx.Client]


@pytest.fixture
def client_for(api_data: ApiData) -> Iterator[ClientFactory]:
    """``client_for(base_url, key)``: an httpx client that fails the test if any response carries
    a vendor key or a gateway key, in its body or in a header."""
    clients: list[httpx.Client] = []

    def check(response: httpx.Response) -> None:
        response.read()
        blob = response.content.decode("utf-8", "replace") + "\n".join(
            f"{k}: {v}" for k, v in response.headers.items()
        )
        for secret in api_data.secrets:
            assert secret not in blob, f"a secret leaked in a response of {response.request.url.path}"

    def make(base_url: str, key: str | None = ADMIN_KEY) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        c = httpx.Client(
            base_url=base_url, headers=headers, timeout=30, trust_env=False, event_hooks={"response": [check]}
        )
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()


@pytest.fixture
def client(gateway: ThreadedServer, client_for: ClientFactory) -> httpx.Client:
    return client_for(gateway.base_url)


@pytest.fixture(autouse=True)
def no_secrets_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    yield
    for record in caplog.records:
        text = record.getMessage() + (record.exc_text or "")
        for secret in SECRETS:
            assert secret not in text, f"a secret leaked into a log line of {record.name}"
