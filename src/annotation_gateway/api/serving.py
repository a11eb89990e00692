"""Run an ASGI app with uvicorn in a background thread (the demo, the tests).

Contract of :class:`ThreadedServer`: ``start()`` binds ``host:port`` itself (port 0 = a free port
chosen by the OS, so there is no race between "find a free port" and "bind it"), serves the app
in a daemon thread with its own event loop, and returns once uvicorn has run the app's lifespan
startup and accepts connections (or raises if it did not within ``startup_timeout_s``);
``stop()`` asks uvicorn to exit (graceful: lifespan shutdown runs) and joins the thread, bounded
by ``shutdown_timeout_s``. Only loopback hosts are accepted unless ``allow_public`` is set.
It runs with the same client limits as ``annotation-gateway serve`` (:func:`uvicorn_limits`).
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from annotation_gateway.api.protocol import header_deadline_protocol
from annotation_gateway.settings import ServerConfig, is_loopback

__all__ = ["ThreadedServer", "free_port", "port_is_free", "uvicorn_limits"]


def uvicorn_limits(server: ServerConfig) -> dict[str, Any]:
    """uvicorn options that bound what one client can hold (``serve``, the demo and the tests
    all use them): a deadline on each request's head (:mod:`~annotation_gateway.api.protocol`),
    idle keep-alive connections closed after ``keep_alive_s``, and at most ``max_connections``
    connections and requests at once (uvicorn answers 503 beyond it)."""
    return {
        "http": header_deadline_protocol(server.header_timeout_s),
        "timeout_keep_alive": server.keep_alive_s,
        "limit_concurrency": server.max_connections,
    }


STARTUP_POLL_S = 0.02


def port_is_free(host: str, port: int) -> bool:
    """True when ``host:port`` can be bound right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1", preferred: int | None = None) -> int:
    """``preferred`` when it is free, else a port the OS says is free (may race; prefer port=0)."""
    if preferred and port_is_free(host, preferred):
        return preferred
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class ThreadedServer:
    """uvicorn serving ``app`` on ``host:port`` in a daemon thread."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        access_log: bool = False,
        log_level: str = "warning",
        startup_timeout_s: float = 30.0,
        shutdown_timeout_s: float = 10.0,
        allow_public: bool = False,
        limits: ServerConfig | None = None,
    ) -> None:
        """``limits``: the header deadline, keep-alive and connection cap of a ``[server]``
        section (:func:`uvicorn_limits`); its defaults when ``None``."""
        if not allow_public and not is_loopback(host):
            raise ValueError(f"refusing to serve on non-loopback host {host!r}")
        self.host = host
        self._requested_port = port
        self.port = port
        self._startup_timeout_s = startup_timeout_s
        self._shutdown_timeout_s = shutdown_timeout_s
        self._config = uvicorn.Config(
            app,
            host=host,
            port=port,
            access_log=access_log,
            log_level=log_level,
            lifespan="on",
            # The threads' servers must not steal Ctrl-C from the process that owns them.
            timeout_graceful_shutdown=int(shutdown_timeout_s),
            **uvicorn_limits(limits if limits is not None else ServerConfig()),
        )
        self._server = uvicorn.Server(self._config)
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._error: BaseException | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _run(self) -> None:
        try:
            assert self._sock is not None
            self._server.run(sockets=[self._sock])
        except BaseException as exc:  # reported to start()/stop() in the owning thread
            self._error = exc

    def start(self) -> ThreadedServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self._requested_port))
        except OSError:
            sock.close()
            raise
        sock.set_inheritable(True)
        self._sock = sock
        self.port = sock.getsockname()[1]
        # uvicorn installs signal handlers only on the main thread; here it runs on another.
        self._thread = threading.Thread(target=self._run, name=f"uvicorn-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self._startup_timeout_s
        while not self._server.started:
            if self._error is not None or not self._thread.is_alive():
                self._cleanup_socket()
                raise RuntimeError(f"server on {self.base_url} failed to start") from self._error
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"server on {self.base_url} did not start in {self._startup_timeout_s}s")
            time.sleep(STARTUP_POLL_S)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(self._shutdown_timeout_s)
            if self._thread.is_alive():
                # Graceful shutdown overran: make uvicorn drop open connections and exit.
                self._server.force_exit = True
                self._thread.join(self._shutdown_timeout_s)
            self._thread = None
        self._cleanup_socket()

    def _cleanup_socket(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> ThreadedServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
