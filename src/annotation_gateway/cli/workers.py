"""``annotation-gateway serve --workers N``: N uvicorn worker processes sharing one port.

Contract:
- :func:`run_workers` (the parent) refuses to start when the cursor secret variable
  (``server.cursor_secret_env``) is unset or blank: each worker would sign cursors with its own
  random key, so a page's cursor would fail (422 ``invalid_cursor``) whenever the next page
  reached another worker. Exit code 2, with a message saying how to set it.
- It then points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh temporary directory (a reused one
  would carry an earlier run's counters) and puts in the environment what each worker needs to
  build its own app — the config file, the command line's overrides (JSON), the log level and
  the request-head deadline — and runs uvicorn with ``workers=N`` and :func:`worker_app` as the
  app factory. Nothing is pickled across processes but names and strings. The directory is
  removed when uvicorn returns (every worker has exited by then).
- :func:`worker_app` runs once in each worker: loads and validates the settings, sets up
  logging, forgets the metric files of workers that died without cleaning up (a crash; uvicorn
  starts a replacement, which sweeps), registers ``mark_process_dead`` for its own exit, builds
  the app with multiprocess metrics (:class:`~annotation_gateway.api.routes.metrics.GatewayMetrics`)
  and tunes the garbage collector (:func:`~annotation_gateway.cli.serve.tune_gc`), as a single
  process does. SIGTERM / Ctrl-C to the parent stop every worker gracefully (uvicorn sends each
  SIGTERM; each runs its lifespan shutdown). A worker that cannot start (its settings, a
  missing vendor secret) stops them all rather than being restarted forever, and ``serve``
  prints its error and exits 1.
- ``server.max_connections`` applies per worker (uvicorn's ``limit_concurrency`` is per process).
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import typer
import uvicorn
from prometheus_client.multiprocess import mark_process_dead
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.config import STARTUP_FAILURE

from annotation_gateway.api.app import create_app
from annotation_gateway.api.serving import uvicorn_limits
from annotation_gateway.cli._app import EXIT_CONFIG, EXIT_FAILURE, err_console, setup_logging
from annotation_gateway.cli._worker_http import HEADER_TIMEOUT_ENV, PROTOCOL_IMPORT_STRING
from annotation_gateway.settings import GatewaySettings, load_settings

__all__ = [
    "MULTIPROC_DIR_ENV",
    "WORKER_CONFIG_ENV",
    "cursor_secret_is_set",
    "forget_dead_workers",
    "run_workers",
    "worker_app",
]

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
WORKER_CONFIG_ENV = "ANNOTATION_GATEWAY_WORKER_CONFIG"
WORKER_OVERRIDES_ENV = "ANNOTATION_GATEWAY_WORKER_OVERRIDES"
WORKER_LOG_LEVEL_ENV = "ANNOTATION_GATEWAY_WORKER_LOG_LEVEL"
FACTORY_IMPORT_STRING = f"{__name__}:worker_app"
STARTUP_FAILED_FILE = "startup-failed.txt"
"""Written into the metrics directory by a worker that could not start (its error, one line)."""

log = logging.getLogger(__name__)

# prometheus-client names each process's files <kind>[_<mode>]_<pid>.db.
_PID_OF_FILE = re.compile(r"_(\d+)\.db$")


def cursor_secret_is_set(settings: GatewaySettings, environ: dict[str, str] | None = None) -> bool:
    """Whether the variable ``server.cursor_secret_env`` names holds a (non-blank) secret."""
    env = os.environ if environ is None else environ
    return bool(env.get(settings.server.cursor_secret_env, "").strip())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def forget_dead_workers(directory: str) -> list[int]:
    """Run ``mark_process_dead`` for every pid with files in ``directory`` that is no longer
    running (a worker that crashed never ran its own); returns those pids."""
    pids = set()
    for path in glob.glob(os.path.join(directory, "*.db")):
        found = _PID_OF_FILE.search(path)
        if found is not None:
            pids.add(int(found.group(1)))
    dead = sorted(pid for pid in pids if pid != os.getpid() and not _alive(pid))
    for pid in dead:
        mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
    return dead


def _note_startup_failure(metrics_dir: str, error: str) -> None:
    with contextlib.suppress(OSError):
        Path(metrics_dir, STARTUP_FAILED_FILE).write_text(error, encoding="utf-8")


class _ReportStartupFailure:
    """The app, noting a failed lifespan startup (a missing vendor secret, say) where the parent
    finds it: uvicorn's supervisor then stops every worker and returns as after a SIGTERM."""

    def __init__(self, app: ASGIApp, metrics_dir: str) -> None:
        self.app = app
        self._metrics_dir = metrics_dir

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def watch(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed":
                # Starlette sends the traceback; its last line is the error (no locals, no secrets).
                lines = [line for line in str(message.get("message", "")).splitlines() if line.strip()]
                _note_startup_failure(self._metrics_dir, lines[-1] if lines else "lifespan startup failed")
            await send(message)

        await self.app(scope, receive, watch)


def worker_app() -> ASGIApp:
    """uvicorn's app factory in each worker (see the module docstring)."""
    from annotation_gateway.cli.serve import tune_gc  # serve imports this module: not at the top

    env = os.environ
    metrics_dir = env[MULTIPROC_DIR_ENV]
    setup_logging(env.get(WORKER_LOG_LEVEL_ENV, "info"))
    try:
        overrides: dict[str, Any] = json.loads(env.get(WORKER_OVERRIDES_ENV) or "{}")
        settings = load_settings(Path(env[WORKER_CONFIG_ENV]), **overrides)
        app = create_app(settings, metrics_multiprocess_dir=metrics_dir)
    except Exception as exc:
        # An exception would exit the worker with 1, and uvicorn would start it again forever;
        # STARTUP_FAILURE makes it stop every worker, and the parent reports the note.
        log.error("worker %d failed to start: %s", os.getpid(), exc)
        _note_startup_failure(metrics_dir, f"{type(exc).__name__}: {exc}")
        raise SystemExit(STARTUP_FAILURE) from exc
    forget_dead_workers(metrics_dir)
    atexit.register(mark_process_dead, os.getpid(), metrics_dir)
    tune_gc()
    return _ReportStartupFailure(app, metrics_dir)


def run_workers(
    settings: GatewaySettings,
    *,
    config: Path,
    overrides: dict[str, Any],
    workers: int,
    log_level: str,
) -> None:
    """Serve with ``workers`` processes until SIGTERM / Ctrl-C (see the module docstring).
    ``overrides``: the keyword arguments ``settings`` were loaded with (``{"server": {...}}``)."""
    if not cursor_secret_is_set(settings):
        name = settings.server.cursor_secret_env
        err_console.print(
            f"[bold red]refusing to start {workers} workers:[/] {name} is not set. Every worker "
            "must sign cursors with the same key, or a page's cursor fails on another worker. "
            f'Set it to a long random value in the environment, e.g. export {name}="$(openssl rand '
            '-hex 32)", and give every replica the same value.',
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_CONFIG)
    listen = settings.server
    metrics_dir = tempfile.mkdtemp(prefix="annotation-gateway-metrics-")
    os.environ.update(
        {
            MULTIPROC_DIR_ENV: metrics_dir,
            WORKER_CONFIG_ENV: str(config.resolve()),
            WORKER_OVERRIDES_ENV: json.dumps(overrides),
            WORKER_LOG_LEVEL_ENV: log_level,
            HEADER_TIMEOUT_ENV: repr(listen.header_timeout_s),
        }
    )
    try:
        uvicorn.run(
            FACTORY_IMPORT_STRING,
            factory=True,
            workers=workers,
            host=listen.host,
            port=listen.port,
            access_log=listen.access_log,
            log_level=log_level.lower(),
            log_config=None,  # each worker sets up the rich handler itself (worker_app)
            server_header=False,
            # The same limits as one process, but the protocol by name (see _worker_http).
            **(uvicorn_limits(listen) | {"http": PROTOCOL_IMPORT_STRING}),
        )
        failed = Path(metrics_dir, STARTUP_FAILED_FILE)
        if failed.exists():
            err_console.print(
                f"[bold red]a worker failed to start:[/] {failed.read_text(encoding='utf-8')}",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(EXIT_FAILURE)
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(metrics_dir)
