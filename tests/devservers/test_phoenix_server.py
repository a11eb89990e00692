"""The local Phoenix the suite starts: loopback-only listeners, clean start failures, python lookup."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from annotation_gateway.devservers.phoenix import (
    PhoenixNotInstalledError,
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
