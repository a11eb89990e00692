"""The simulator's ASGI app, and how it runs.

Contract: :func:`build_app` (the ASGI app: the API and the control routes) and how it runs —
:func:`serve` (blocking, loopback only), :func:`start_in_thread` and :func:`running` (in-process, for
tests and the demo).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import uvicorn
from starlette.applications import Starlette
from starlette.routing import Route

from annotation_gateway.simulators.datadog.api import handle_api
from annotation_gateway.simulators.datadog.config import (
    ALL_METHODS,
    CONTROL_PREFIX,
    DEFAULT_PORT,
    SimulatorConfig,
    make_config,
)
from annotation_gateway.simulators.datadog.control import (
    control_config,
    control_health,
    control_requests,
    control_reset,
    control_seed,
)
from annotation_gateway.simulators.datadog.state import SimulatorState


def build_app(config: SimulatorConfig | None = None) -> Starlette:
    """The simulator as an ASGI app; its :class:`SimulatorState` is ``app.state.simulator``."""
    state = SimulatorState(config or SimulatorConfig())
    routes = [
        Route(f"{CONTROL_PREFIX}/health", control_health, methods=["GET"]),
        Route(f"{CONTROL_PREFIX}/config", control_config, methods=["GET", "POST"]),
        Route(f"{CONTROL_PREFIX}/reset", control_reset, methods=["POST"]),
        Route(f"{CONTROL_PREFIX}/seed", control_seed, methods=["POST"]),
        Route(f"{CONTROL_PREFIX}/requests", control_requests, methods=["GET", "DELETE"]),
        Route("/{path:path}", handle_api, methods=ALL_METHODS),
    ]
    app = Starlette(routes=routes)
    app.state.simulator = state
    return app


def _require_loopback(host: str) -> None:
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"the simulator listens on loopback only, not {host!r}")


def serve(
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    config: SimulatorConfig | None = None,
    *,
    log_level: str = "info",
) -> None:
    """Run the simulator until interrupted (blocking): ``annotation-gateway simulate-datadog``.

    ``config`` as :func:`~.config.make_config` builds it from command-line switches (``None``:
    its defaults, the keys read from ``DD_API_KEY`` / ``DD_APP_KEY``). Listens on a loopback
    address only.
    """
    _require_loopback(host)
    # The access log costs 40-50 % CPU per request (SPEC §4); the request log is in the state.
    app = build_app(config if config is not None else make_config())
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)


@dataclass
class RunningSimulator:
    """A simulator served over real HTTP from a background thread."""

    base_url: str
    app: Starlette
    server: uvicorn.Server
    thread: threading.Thread

    @property
    def state(self) -> SimulatorState:
        state: SimulatorState = self.app.state.simulator
        return state

    def stop(self, timeout_s: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout_s)


def start_in_thread(
    config: SimulatorConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    startup_timeout_s: float = 10.0,
) -> RunningSimulator:
    """Serve a new simulator from a daemon thread; ``port=0`` picks a free port."""
    _require_loopback(host)
    app = build_app(config)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="datadog-simulator", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("the Datadog simulator did not start")
        time.sleep(0.01)
    url_host = f"[{host}]" if ":" in host else host
    return RunningSimulator(base_url=f"http://{url_host}:{bound_port}", app=app, server=server, thread=thread)


@contextmanager
def running(
    config: SimulatorConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> Iterator[RunningSimulator]:
    """``with running(config) as sim:`` — a simulator for the duration of the block."""
    sim = start_in_thread(config, host=host, port=port)
    try:
        yield sim
    finally:
        sim.stop()
