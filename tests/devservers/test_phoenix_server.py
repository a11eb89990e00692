"""The local Phoenix the suite starts: loopback-only listeners, clean start failures, python lookup."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
import pytest
import respx

from annotation_gateway.devservers import phoenix as devphoenix
from annotation_gateway.devservers.phoenix import (
    PhoenixNotInstalledError,
    PhoenixSeeder,
    PhoenixServer,
    PhoenixStartError,
    phoenix_python,
)

LOOPBACK_ADDRESSES = {"127.0.0.1", "[::ffff:127.0.0.1]", "[::1]"}


def listeners(server: PhoenixServer) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket listening in the server's process group."""
    assert server.pid is not None
    group = subprocess.run(
        ["ps", "-o", "pid=", "-g", str(server.pid)], capture_output=True, text=True, check=True
    ).stdout.split()
    table = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    found: list[tuple[str, int]] = []
    for line in table.splitlines():
        if any(f"pid={pid}," in line for pid in group):
            local = line.split()[3]
            address, _, port = local.rpartition(":")
            found.append((address, int(port)))
    return found


@pytest.mark.phoenix
@pytest.mark.parametrize("fixture", ["phoenix_server", "phoenix_auth_server"])
def test_every_listener_is_on_loopback(fixture: str, request: pytest.FixtureRequest) -> None:
    server: PhoenixServer = request.getfixturevalue(fixture)
    found = listeners(server)
    assert {port for _, port in found} == {server.port, server.grpc_port}
    assert {address for address, _ in found} <= LOOPBACK_ADDRESSES, found
    # the OTLP gRPC port answers on loopback
    with socket.create_connection(("127.0.0.1", server.grpc_port), timeout=2):
        pass


@pytest.mark.phoenix
def test_auth_server_wants_a_key(phoenix_auth_server: PhoenixServer) -> None:
    url = f"{phoenix_auth_server.base_url}/v1/projects"
    assert httpx.get(url, trust_env=False).status_code == 401
    key = phoenix_auth_server.create_system_api_key("devserver-test")
    assert httpx.get(url, headers={"Authorization": f"Bearer {key}"}, trust_env=False).status_code == 200
    assert phoenix_auth_server.admin_secret is not None
    assert len(phoenix_auth_server.admin_secret) >= 32


def test_a_failed_start_shows_the_log_and_cleans_up() -> None:
    # The gateway's own Python has no Phoenix: the bootstrap dies at once.
    server = PhoenixServer(python=sys.executable)
    with pytest.raises(PhoenixStartError) as caught:
        server.start(timeout_s=30)
    assert "exited with code" in str(caught.value)
    assert "ModuleNotFoundError" in str(caught.value)
    assert not server.running
    assert server.working_dir is not None
    assert not server.working_dir.exists()


def test_missing_phoenix_python_says_to_run_make_phoenix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PHOENIX_PYTHON", str(tmp_path / "nowhere" / "python"))
    with pytest.raises(PhoenixNotInstalledError, match="make phoenix"):
        phoenix_python()


def test_spans_phoenix_never_stores_are_posted_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """Seeding waits for every span; spans Phoenix queued but never stored (seen once on a fresh
    clone: 900 of 1,000) are posted again after SPAN_RESEND_AFTER_S without progress. A mock:
    the real Phoenix cannot be made to drop a queued batch on demand."""
    monkeypatch.setattr(devphoenix, "SPAN_RESEND_AFTER_S", 0.3)
    spans = [
        PhoenixSeeder.span(trace_id=f"t{i:031d}", span_id=f"{i:016d}", session_id=f"s{i}", name="turn")
        for i in range(10)
    ]
    stored: set[str] = set()
    posts: list[int] = []

    def post(request: httpx.Request) -> httpx.Response:
        batch = orjson.loads(request.content)["data"]
        posts.append(len(batch))
        # The first post loses its last 3 spans; a second post stores what it carries.
        kept = batch if len(posts) > 1 else batch[:-3]
        stored.update(str(s["context"]["span_id"]) for s in kept)
        return httpx.Response(202, json={})

    def listing(request: httpx.Request) -> httpx.Response:
        rows = [{"context": {"span_id": span_id}} for span_id in sorted(stored)]
        return httpx.Response(200, json={"data": rows, "next_cursor": None})

    with respx.mock(base_url="http://127.0.0.1:1", assert_all_called=True) as mock:
        mock.post("/v1/projects/p/spans").mock(side_effect=post)
        mock.get("/v1/projects/p/spans").mock(side_effect=listing)
        with PhoenixSeeder("http://127.0.0.1:1") as seeder:
            seeder.add_spans("p", spans, timeout_s=10)
    assert posts == [10, 3]  # everything once, then only the three never stored
    assert stored == {str(s["context"]["span_id"]) for s in spans}
