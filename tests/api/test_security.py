"""Security (issue 7, item 4): gateway keys, vendor secrets, cursors.

- **Keys**: every protected operation answers 401 (with ``WWW-Authenticate: Bearer``) to no key,
  a wrong key and a malformed ``Authorization``, and 403 to a key limited to another source; all
  as problem+json. The public operations (health, readiness, metrics, OpenAPI) need no key.
- **Vendor secrets**: a gateway in front of the *auth-enabled* Phoenix (a real API key) and the
  Datadog simulator (API and application keys), plus a Phoenix source with a wrong key, is driven
  through every route — successes, client errors, upstream errors, and faults including a vendor
  that echoes the request's headers (credentials included) in its error body. Every response
  body and header, every log record of every logger at DEBUG (the app's, uvicorn's error and
  access logs, httpx...), and ``/metrics`` are searched for every secret.
- **Cursors**: a cursor cannot be forged (payload changed and re-signed without the secret, or
  with a guessed one) or moved to another query, and a cursor issued to a key limited to source A
  does not work for a key limited to source B.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest

from annotation_gateway.api.app import create_app
from annotation_gateway.api.serving import ThreadedServer
from annotation_gateway.devservers.phoenix import PhoenixSeeder, PhoenixServer
from annotation_gateway.providers.phoenix import PhoenixSourceConfig
from annotation_gateway.settings import (
    ApiKeyConfig,
    AuthConfig,
    GatewaySettings,
    ServerConfig,
    hash_key,
)
from tests.api._faults import Fault, FaultProxy
from tests.api.conftest import (
    ADMIN_KEY,
    DATADOG_SOURCE,
    PHOENIX_ONLY_KEY,
    PHOENIX_SOURCE,
    ApiData,
    ClientFactory,
)
from tests.api.test_contract_fake import assert_problem
from tests.plugins.datadog import SIM_API_KEY, SIM_APP_KEY
from tests.plugins.phoenix import seed_sessions

ANNOTATIONS = "/v1/annotations"
DATADOG_ONLY_KEY = "gw-test-datadog-only-key-93d1c7"
PHOENIX_AUTH_SOURCE = "phoenix-auth"
PHOENIX_BADKEY_SOURCE = "phoenix-badkey"
PHOENIX_KEY_ENV = "GW_SECURITY_PHOENIX_KEY"
PHOENIX_BAD_KEY_ENV = "GW_SECURITY_PHOENIX_BAD_KEY"
WRONG_PHOENIX_KEY = "phx-wrong-key-e1b2c3d4e5f6a7b8"
GATEWAY_LOGGERS = (
    "",
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "annotation_gateway",
    "httpx",
    "httpcore",
)


# --- keys -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Op:
    method: str
    path: str
    params: dict[str, Any] | None = None
    body: dict[str, Any] | None = None


def _protected(data: ApiData) -> list[Op]:
    subjects = data.session_ids[:3]
    return [
        Op("GET", ANNOTATIONS, {"subject_id": subjects}),
        Op("POST", "/v1/annotations/search", body={"subject_ids": subjects}),
        Op("GET", "/v1/annotations/export", {"subject_id": subjects, "format": "jsonl"}),
        Op(
            "POST",
            "/v1/compare",
            body={"subject_ids": subjects, "left": PHOENIX_SOURCE, "right": DATADOG_SOURCE},
        ),
        Op(
            "POST",
            # An unknown subject: authenticated, a 404, and nothing written to the shared data.
            ANNOTATIONS,
            body={
                "source": PHOENIX_SOURCE,
                "annotations": [{"subject_id": "no-such-session", "name": "x", "label": "y"}],
            },
        ),
        Op("GET", "/v1/sources"),
        Op("GET", "/v1/annotations/metrics", {"subject_id": subjects, "group_by": "name"}),
        Op("POST", "/v1/annotations/metrics", body={"subject_ids": subjects}),
        Op("GET", "/v1/annotations/agreement", {"subject_id": subjects}),
        Op("GET", "/v1/annotations/changes", {"subject_id": subjects}),
        Op("GET", "/v1/webhooks"),
    ]


def _call(client: httpx.Client, op: Op, headers: dict[str, str] | None = None) -> httpx.Response:
    return client.request(op.method, op.path, params=op.params, json=op.body, headers=headers)


BAD_AUTHORIZATIONS = {
    "wrong key": f"Bearer {ADMIN_KEY}x",
    "scheme only": "Bearer",
    "basic scheme": f"Basic {ADMIN_KEY}",
    "no scheme": ADMIN_KEY,
    "token scheme": f"Token {ADMIN_KEY}",
    "key of a hash": f"Bearer {hash_key(ADMIN_KEY)}",
    "bearer no space": f"Bearer{ADMIN_KEY}",
    "huge": "Bearer " + "k" * 100_000,
    "two keys": f"Bearer {ADMIN_KEY}, Bearer {ADMIN_KEY}",
}


def test_every_protected_operation_needs_a_valid_key(gateway: Any, api_data: ApiData) -> None:
    with httpx.Client(base_url=gateway.base_url, timeout=30, trust_env=False) as anonymous:
        for op in _protected(api_data):
            for what, value in {"no key": None, **BAD_AUTHORIZATIONS}.items():
                r = _call(anonymous, op, headers={"Authorization": value} if value is not None else None)
                problem = assert_problem(r, 401, "unauthorized")
                assert r.headers["www-authenticate"].startswith("Bearer"), (op, what)
                assert ADMIN_KEY not in r.text, (op, what)
                assert problem["instance"] == op.path
            # The same operation with the key passes authentication.
            ok = _call(anonymous, op, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
            assert ok.status_code not in (401, 403), (op, ok.text[:300])
        # The scheme name is case-insensitive (RFC 9110), the key is not.
        r = anonymous.get("/v1/sources", headers={"Authorization": f"bEaReR {ADMIN_KEY}"})
        assert r.status_code == 200
        assert_problem(
            anonymous.get("/v1/sources", headers={"Authorization": f"Bearer {ADMIN_KEY.upper()}"}),
            401,
            "unauthorized",
        )
        for public in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
            assert anonymous.get(public).status_code == 200, public


def test_a_key_for_another_source_is_403(gateway: Any, api_data: ApiData, client_for: ClientFactory) -> None:
    limited = client_for(gateway.base_url, PHOENIX_ONLY_KEY)
    subjects = api_data.session_ids[:3]
    denied = [
        limited.get(ANNOTATIONS, params={"subject_id": subjects, "source": DATADOG_SOURCE}),
        limited.post("/v1/annotations/search", json={"subject_ids": subjects, "sources": [DATADOG_SOURCE]}),
        limited.get("/v1/annotations/export", params={"subject_id": subjects, "source": DATADOG_SOURCE}),
        limited.post(
            "/v1/compare", json={"subject_ids": subjects, "left": PHOENIX_SOURCE, "right": DATADOG_SOURCE}
        ),
    ]
    for r in denied:
        problem = assert_problem(r, 403, "forbidden")
        assert DATADOG_SOURCE in problem["detail"]
        assert "www-authenticate" not in r.headers
    # Without naming a source it sees only its own: no Datadog data, no Datadog status.
    body = limited.get(ANNOTATIONS, params={"subject_id": api_data.session_ids, "limit": 1000}).json()
    assert {a["source"] for a in body["data"]} == {PHOENIX_SOURCE}
    assert [s["source"] for s in body["sources"]] == [PHOENIX_SOURCE]
    assert [s["name"] for s in limited.get("/v1/sources").json()["data"]] == [PHOENIX_SOURCE]


# --- vendor secrets ---------------------------------------------------------------------------


class _Capture(logging.Handler):
    """Every record of every logger, formatted with its traceback, at DEBUG."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)
        # Structured fields passed with extra= are part of what a JSON log formatter would print.
        extras = {k: v for k, v in record.__dict__.items() if k not in _STANDARD_RECORD_FIELDS}
        self.lines.append(f"{text} {extras!r}")


_STANDARD_RECORD_FIELDS = set(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {
    "message",
    "asctime",
}


@dataclass
class Haystack:
    """Everything the gateway said, to search for secrets."""

    secrets: list[str]
    responses: list[str] = field(default_factory=list)
    paths: set[str] = field(default_factory=set)
    statuses: set[int] = field(default_factory=set)

    def record(self, response: httpx.Response) -> None:
        response.read()
        self.paths.add(f"{response.request.method} {response.request.url.path}")
        self.statuses.add(response.status_code)
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.multi_items())
        self.responses.append(
            f"{response.request.url.path} {response.status_code}\n{headers}\n{response.text}"
        )

    def leaks(self, texts: list[str]) -> list[tuple[str, str]]:
        found = []
        for text in texts:
            for secret in self.secrets:
                # Also the forms a secret could take on the way out: JSON-escaped, base64.
                forms = {
                    secret,
                    orjson.dumps(secret).decode()[1:-1],
                    base64.b64encode(secret.encode()).decode(),
                }
                if any(form in text for form in forms):
                    found.append((secret[:6] + "...", text[:300]))
        return found


@dataclass
class SecretRig:
    base_url: str
    proxy: FaultProxy
    """In front of the Datadog simulator."""
    phoenix_proxy: FaultProxy
    """In front of Phoenix, for the source with the wrong key."""
    haystack: Haystack
    capture: _Capture
    session_ids: list[str]
    client: Callable[[str | None], httpx.Client]


@pytest.fixture
def secret_rig(
    phoenix_auth_server: PhoenixServer, api_data: ApiData, _vendor_env: None, monkeypatch: pytest.MonkeyPatch
) -> Iterator[SecretRig]:
    phoenix_key = phoenix_auth_server.create_system_api_key(f"gw-security-{uuid.uuid4().hex[:6]}")
    project = f"gw-sec-{uuid.uuid4().hex[:6]}"
    with PhoenixSeeder(phoenix_auth_server.base_url, api_key=phoenix_key) as seeder:
        seeder.create_project(project)
        session_ids, _, _ = seed_sessions(seeder, project, 3)
        seeder.annotate_sessions(
            [
                {"session_id": s, "name": "resolution", "annotator_kind": "HUMAN", "result": {"label": "ok"}}
                for s in session_ids
            ]
        )
    monkeypatch.setenv(PHOENIX_KEY_ENV, phoenix_key)
    monkeypatch.setenv(PHOENIX_BAD_KEY_ENV, WRONG_PHOENIX_KEY)
    secrets = [phoenix_key, WRONG_PHOENIX_KEY, SIM_API_KEY, SIM_APP_KEY]
    assert phoenix_auth_server.admin_secret is not None
    secrets.append(phoenix_auth_server.admin_secret)
    haystack = Haystack(secrets=secrets)

    proxy = FaultProxy(api_data.simulator.base_url).start()
    phoenix_proxy = FaultProxy(phoenix_auth_server.base_url).start()
    settings = GatewaySettings(
        server=ServerConfig(host="127.0.0.1", port=0, access_log=True),
        auth=AuthConfig(
            keys=[
                ApiKeyConfig(name="admin", sha256=hash_key(ADMIN_KEY)),
                ApiKeyConfig(
                    name="phoenix-only", sha256=hash_key(PHOENIX_ONLY_KEY), sources=[PHOENIX_AUTH_SOURCE]
                ),
                ApiKeyConfig(
                    name="datadog-only", sha256=hash_key(DATADOG_ONLY_KEY), sources=[DATADOG_SOURCE]
                ),
            ]
        ),
        sources=[
            PhoenixSourceConfig(
                name=PHOENIX_AUTH_SOURCE,
                base_url=phoenix_auth_server.base_url,
                project=project,
                api_key_env=PHOENIX_KEY_ENV,
                retry_attempts=1,
            ),
            api_data.simulator.source_config(
                DATADOG_SOURCE, base_url=proxy.base_url, retry_attempts=1, timeout_s=1
            ),
            PhoenixSourceConfig(
                name=PHOENIX_BADKEY_SOURCE,
                base_url=phoenix_proxy.base_url,
                project=project,
                api_key_env=PHOENIX_BAD_KEY_ENV,
                retry_attempts=1,
            ),
        ],
    )
    # uvicorn configures its loggers when the server object is made: attach the capture after.
    server = ThreadedServer(create_app(settings), access_log=True, log_level="debug")
    capture = _Capture()
    loggers = [logging.getLogger(name) for name in GATEWAY_LOGGERS]
    saved = [(lg, lg.level) for lg in loggers]
    for lg in loggers:
        lg.addHandler(capture)
        lg.setLevel(logging.DEBUG)
    server.start()
    clients: list[httpx.Client] = []

    def client(key: str | None = ADMIN_KEY) -> httpx.Client:
        c = httpx.Client(
            base_url=server.base_url,
            headers={"Authorization": f"Bearer {key}"} if key else {},
            timeout=30,
            trust_env=False,
            event_hooks={"response": [haystack.record]},
        )
        clients.append(c)
        return c

    try:
        yield SecretRig(server.base_url, proxy, phoenix_proxy, haystack, capture, session_ids, client)
    finally:
        for c in clients:
            c.close()
        server.stop()
        proxy.stop()
        phoenix_proxy.stop()
        for lg, level in saved:
            lg.removeHandler(capture)
            lg.setLevel(level)


def _drive_every_route(rig: SecretRig) -> None:
    c = rig.client(ADMIN_KEY)
    sessions = rig.session_ids
    ok = c.get(ANNOTATIONS, params={"subject_id": sessions, "limit": 1})
    assert ok.status_code == 200, ok.text[:300]
    body = ok.json()
    statuses = {s["source"]: s for s in body["sources"]}
    assert statuses[PHOENIX_AUTH_SOURCE]["status"] == "ok"
    assert statuses[PHOENIX_AUTH_SOURCE]["count"] == len(sessions)
    assert statuses[PHOENIX_BADKEY_SOURCE]["error"]["code"] == "source_unauthorized"
    c.get(ANNOTATIONS, params={"subject_id": sessions, "limit": 1, "cursor": body["next_cursor"]})
    c.get(ANNOTATIONS, params={"subject_id": sessions, "cursor": "forged"})
    c.get(ANNOTATIONS, params={"subject_id": sessions, "partial": "deny"})
    c.get(ANNOTATIONS, params={"subject_id": sessions, "include": "raw", "source": PHOENIX_AUTH_SOURCE})
    c.get(ANNOTATIONS, params={"identifier": "x"})
    c.post("/v1/annotations/search", json={"subject_ids": sessions, "sources": [PHOENIX_BADKEY_SOURCE]})
    c.post("/v1/annotations/search", content=b"{not json", headers={"Content-Type": "application/json"})
    written = c.post(
        ANNOTATIONS,
        json={
            "source": PHOENIX_AUTH_SOURCE,
            "annotations": [{"subject_id": sessions[0], "name": "security", "label": "checked"}],
        },
    )
    assert written.status_code == 200, written.text[:300]
    c.post(
        ANNOTATIONS,
        json={
            "source": PHOENIX_AUTH_SOURCE,
            "annotations": [{"subject_id": "nope", "name": "n", "score": 1}],
        },
    )
    c.post(
        ANNOTATIONS,
        json={
            "source": PHOENIX_BADKEY_SOURCE,
            "annotations": [{"subject_id": sessions[0], "name": "n", "score": 1}],
        },
    )
    c.post(
        ANNOTATIONS,
        json={
            "source": DATADOG_SOURCE,
            "annotations": [{"subject_id": sessions[0], "name": "n", "score": 1}],
        },
    )
    for fmt in ("jsonl", "csv"):
        c.get("/v1/annotations/export", params={"subject_id": sessions, "format": fmt})
    compare = {"subject_ids": sessions, "left": PHOENIX_AUTH_SOURCE, "right": DATADOG_SOURCE}
    c.post("/v1/compare", json=compare)
    c.post("/v1/compare", params={"format": "csv"}, json=compare)
    c.post("/v1/compare", json={**compare, "right": PHOENIX_BADKEY_SOURCE})
    c.get("/v1/sources", params={"refresh": "true"})
    for path in ("/healthz", "/readyz", "/openapi.json", "/docs", "/nope"):
        c.get(path)
    c.put(ANNOTATIONS)
    rig.client(None).get(ANNOTATIONS, params={"subject_id": sessions})
    rig.client("wrong").get("/v1/sources")
    rig.client(PHOENIX_ONLY_KEY).get(ANNOTATIONS, params={"subject_id": sessions, "source": DATADOG_SOURCE})

    # Faults on the Datadog side, some echoing the request headers (its keys) back.
    echo_faults = [
        Fault("echo", 400, {"Content-Type": "application/json"}, b"json"),
        Fault("echo", 401, {"Content-Type": "application/json"}, b"json"),
        Fault("echo", 404, {"Content-Type": "text/plain"}, b"Not found. You sent:\n"),
        Fault("echo", 422, {"Content-Type": "application/json"}, b"json"),
        Fault("echo", 503, {"Content-Type": "application/vnd.api+json"}, b"json"),
        Fault("echo", 400, {"Content-Type": "application/json"}, b'{"errors": ["bad request: '),
        Fault("echo", 403, {"Content-Type": "text/plain"}, b"Forbidden. You sent:\n"),
        Fault("echo", 500, {"Content-Type": "text/html"}, b"<html><pre>"),
        Fault("echo", 200, {"Content-Type": "text/html"}, b"<html>debug:"),
        Fault("echo", 429, {"Content-Type": "application/json", "Retry-After": "1"}, b'{"errors": ["'),
        Fault("echo", 200, {"Content-Type": "application/json"}, b'{"data": '),
        Fault("truncate"),
        Fault("reset"),
        Fault("latency", latency_s=2.0),
    ]
    for fault in echo_faults:
        rig.proxy.set(fault)
        rig.phoenix_proxy.set(fault)
        for partial in ("allow", "deny"):
            c.get(
                ANNOTATIONS,
                params={"subject_id": sessions, "partial": partial},
                headers={"Cache-Control": "no-cache"},
            )
        c.post("/v1/compare", json=compare)
        c.get("/readyz")
        c.get("/v1/sources", params={"refresh": "true"})
    rig.proxy.clear()
    rig.phoenix_proxy.clear()
    c.get("/metrics")


def test_vendor_secrets_never_leave_the_gateway(secret_rig: SecretRig) -> None:
    rig = secret_rig
    # The search itself works: a leak, if there were one, would be found.
    assert rig.haystack.leaks([f"x {rig.haystack.secrets[0]} y"])
    assert rig.haystack.leaks([orjson.dumps({"k": SIM_API_KEY}).decode()])

    _drive_every_route(rig)
    h = rig.haystack
    # Every route was exercised, with successes, client errors and upstream failures.
    for route in (
        f"GET {ANNOTATIONS}",
        "POST /v1/annotations/search",
        f"POST {ANNOTATIONS}",
        "GET /v1/annotations/export",
        "POST /v1/compare",
        "GET /v1/sources",
        "GET /healthz",
        "GET /readyz",
        "GET /metrics",
        "GET /openapi.json",
    ):
        assert route in h.paths, route
    assert {200, 401, 403, 404, 405, 422, 429, 502, 503, 504} & h.statuses >= {
        200,
        401,
        403,
        404,
        405,
        422,
        503,
    }
    assert rig.proxy.faulted > 0

    assert h.leaks(h.responses) == [], "a vendor secret leaked in a response"
    metrics = httpx.get(f"{rig.base_url}/metrics", trust_env=False).text
    assert "annotation_gateway_upstream_errors_total" in metrics
    assert h.leaks([metrics]) == [], "a vendor secret leaked in /metrics"
    assert len(rig.capture.lines) > 50, "the log capture saw almost nothing"
    assert any("uvicorn.access" in line for line in rig.capture.lines), "the access log was not captured"
    assert h.leaks(rig.capture.lines) == [], "a vendor secret leaked in a log line"
    # The gateway keys never show either (they are configured as hashes and never logged).
    assert (
        Haystack(secrets=[ADMIN_KEY, PHOENIX_ONLY_KEY, DATADOG_ONLY_KEY]).leaks(
            h.responses + rig.capture.lines
        )
        == []
    )


def test_secrets_are_not_in_the_environment_dump_of_settings_or_repr(secret_rig: SecretRig) -> None:
    """Nothing the gateway shows about its sources (GET /v1/sources, readiness) names a key or
    the env var's value, even after a refresh that probes every source."""
    c = secret_rig.client(ADMIN_KEY)
    shown = c.get("/v1/sources", params={"refresh": "true"}).text + c.get("/readyz").text
    assert secret_rig.haystack.leaks([shown]) == []
    assert os.environ[PHOENIX_KEY_ENV] not in shown


# --- cursors ----------------------------------------------------------------------------------


def _decode(cursor: str) -> tuple[bytes, bytes]:
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    return raw[:-16], raw[-16:]


def _encode(payload: bytes, mac: bytes) -> str:
    return base64.urlsafe_b64encode(payload + mac).rstrip(b"=").decode()


def test_a_cursor_cannot_be_forged(client: httpx.Client, api_data: ApiData) -> None:
    params: dict[str, Any] = {"subject_id": api_data.session_ids, "limit": 5}
    first = client.get(ANNOTATIONS, params=params).json()
    cursor = first["next_cursor"]
    payload, mac = _decode(cursor)
    version, fingerprint, micros, item_id = orjson.loads(payload)
    other = client.get(ANNOTATIONS, params={"subject_id": api_data.session_ids[:5], "limit": 1}).json()
    other_fingerprint = orjson.loads(_decode(other["next_cursor"])[0])[1]
    assert other_fingerprint != fingerprint

    def sign(body: bytes, key: bytes) -> bytes:
        return hmac.new(key, body, hashlib.sha256).digest()[:16]

    forged_payloads = {
        "skip ahead": orjson.dumps([version, fingerprint, micros - 10**9, item_id]),
        "other query": orjson.dumps([version, other_fingerprint, micros, item_id]),
        "other id": orjson.dumps([version, fingerprint, micros, "zzz"]),
    }
    for what, forged in forged_payloads.items():
        for key_name, mac_bytes in {
            "old mac": mac,
            "guessed secret": sign(forged, b"secret"),
            "empty secret": sign(forged, b"\x00"),
            "zero mac": bytes(16),
            "sha256 of payload": hashlib.sha256(forged).digest()[:16],
        }.items():
            r = client.get(ANNOTATIONS, params={**params, "cursor": _encode(forged, mac_bytes)})
            problem = assert_problem(r, 422, "invalid_cursor")
            assert "signature" in problem["detail"], (what, key_name, problem)
    # The genuine cursor still works, so the refusals above were about the forgery.
    assert client.get(ANNOTATIONS, params={**params, "cursor": cursor}).status_code == 200


def test_a_cursor_of_a_key_limited_to_one_source_fails_for_another(
    gateway: Any, api_data: ApiData, client_for: ClientFactory
) -> None:
    """A's cursor (its selection: phoenix only) replayed by the admin key (both sources) or by
    the same query naming Datadog is refused: the selection is part of what the cursor is bound
    to. The source-limited key itself keeps paging."""
    limited = client_for(gateway.base_url, PHOENIX_ONLY_KEY)
    admin = client_for(gateway.base_url, ADMIN_KEY)
    params: dict[str, Any] = {"subject_id": api_data.session_ids, "limit": 5}
    cursor = limited.get(ANNOTATIONS, params=params).json()["next_cursor"]
    assert cursor
    assert limited.get(ANNOTATIONS, params={**params, "cursor": cursor}).status_code == 200
    assert_problem(admin.get(ANNOTATIONS, params={**params, "cursor": cursor}), 422, "invalid_cursor")
    assert_problem(
        admin.get(ANNOTATIONS, params={**params, "cursor": cursor, "source": DATADOG_SOURCE}),
        422,
        "invalid_cursor",
    )
    # And the other way: the admin's cursor over both sources is no good to the limited key.
    admin_cursor = admin.get(ANNOTATIONS, params=params).json()["next_cursor"]
    assert_problem(limited.get(ANNOTATIONS, params={**params, "cursor": admin_cursor}), 422, "invalid_cursor")
    # Naming the other source outright is a 403 before any cursor is looked at.
    assert_problem(
        limited.get(ANNOTATIONS, params={**params, "cursor": admin_cursor, "source": DATADOG_SOURCE}),
        403,
        "forbidden",
    )


def test_cursors_from_key_a_fail_for_key_b(secret_rig: SecretRig) -> None:
    """Two keys limited to different sources (Phoenix / Datadog): neither's cursor pages the
    other's query, even for the same parameters."""
    a = secret_rig.client(PHOENIX_ONLY_KEY)
    b = secret_rig.client(DATADOG_ONLY_KEY)
    params: dict[str, Any] = {"subject_id": secret_rig.session_ids, "limit": 1}
    a_cursor = a.get(ANNOTATIONS, params=params).json()["next_cursor"]
    assert a_cursor
    assert a.get(ANNOTATIONS, params={**params, "cursor": a_cursor}).status_code == 200
    assert_problem(b.get(ANNOTATIONS, params={**params, "cursor": a_cursor}), 422, "invalid_cursor")
    assert_problem(
        b.get(ANNOTATIONS, params={**params, "cursor": a_cursor, "source": PHOENIX_AUTH_SOURCE}),
        403,
        "forbidden",
    )
