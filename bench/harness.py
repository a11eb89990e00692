"""Bench plumbing: pinned server processes, wrk runs, and CPU/memory readings from ``/proc``.

- :class:`ServerProcess` starts a command as its own process group pinned to a core with
  ``taskset``, waits (bounded) until an HTTP URL answers, and always kills the whole group.
- :func:`group_cpu_seconds`, :func:`rss_kib`, :func:`open_fds` read ``/proc`` directly (no psutil):
  user+sys CPU of every process in the group, ``VmRSS``/``VmHWM``, ``/proc/<pid>/fd``.
- :func:`run_wrk` runs one bounded wrk load (``-d`` seconds, pinned to the client core) with a
  generated Lua script whose ``done()`` prints a JSON line, and :func:`measure` wraps a run with
  the server's CPU delta so that CPU per request = delta / completed requests.

Only loopback addresses are used; every wait and loop is bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

SERVER_CPU = "0"
CLIENT_CPU = "1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def pin_self_to_client_core() -> None:
    """Run the orchestrator (and the Python clients it runs in-process) on the client core."""
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setaffinity(0, {int(CLIENT_CPU)})


# --- /proc readings ---------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may contain spaces: split after its closing parenthesis
    return raw[raw.rfind(")") + 2 :].split()


def group_pids(pgid: int) -> list[int]:
    """Every live process whose process group is ``pgid``."""
    pids: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        # after the command: state(0) ppid(1) pgrp(2)
        if fields is not None and len(fields) > 2 and int(fields[2]) == pgid:
            pids.append(int(entry))
    return pids


def cpu_seconds(pid: int) -> float:
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    # utime and stime are fields 14 and 15 of the full line: 11 and 12 after the command
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def group_cpu_seconds(pgid: int) -> float:
    return sum(cpu_seconds(pid) for pid in group_pids(pgid))


def core_busy_seconds(core: str = SERVER_CPU) -> float:
    """Non-idle time of one CPU core since boot (user, nice, system, irq, softirq, steal)."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{core} "):
            v = [int(x) for x in line.split()[1:]]
            return (v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)) / CLK_TCK
    return 0.0


def _status_kib(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_kib(pid: int) -> int:
    return _status_kib(pid, "VmRSS")


def peak_rss_kib(pid: int) -> int:
    return _status_kib(pid, "VmHWM")


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


# --- server processes --------------------------------------------------------------------------


@dataclass
class ServerProcess:
    """One server started as its own process group, pinned to ``cpu``; always stopped."""

    name: str
    argv: Sequence[str]
    port: int
    log_dir: Path
    env: Mapping[str, str] | None = None
    cpu: str = SERVER_CPU
    ready_path: str = "/"
    ready_timeout_s: float = 60.0
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    def start(self) -> ServerProcess:
        env = dict(os.environ)
        env.update(self.env or {})
        env.setdefault("PYTHONUNBUFFERED", "1")
        log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(
                ["taskset", "-c", self.cpu, *self.argv],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # its own process group: killed as a whole
            )
        finally:
            log.close()
        self.wait_ready()
        return self

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        url = self.base_url + self.ready_path
        last = "no answer"
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while time.monotonic() < deadline:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.tail_log()}")
                try:
                    response = client.get(url)
                    if response.status_code < 500:
                        return
                    last = f"HTTP {response.status_code}"
                except httpx.HTTPError as exc:
                    last = type(exc).__name__
                time.sleep(0.1)
        raise RuntimeError(
            f"{self.name} not ready at {url} after {self.ready_timeout_s}s ({last}): {self.tail_log()}"
        )

    def tail_log(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def cpu_seconds(self) -> float:
        return group_cpu_seconds(self.pid)

    @contextlib.contextmanager
    def moved_to(self, cpu: str) -> Iterator[None]:
        """Run every thread of the server on ``cpu`` for a while, then on its own again."""
        self._pin(cpu)
        try:
            yield
        finally:
            self._pin(self.cpu)

    def _pin(self, cpu: str) -> None:
        subprocess.run(["taskset", "-a", "-p", "-c", cpu, str(self.pid)], capture_output=True, check=True)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- wrk -----------------------------------------------------------------------------------------

_DONE_LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean))
end
"""


def _lua_string(value: str) -> str:
    return "[==[" + value + "]==]"


@dataclass
class WrkResult:
    requests: int
    duration_s: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    errors: dict[str, int]
    bytes: int
    wrk_cpu_pct: float = 0.0
    """wrk's own CPU time over the run's duration: near 100 % means the load generator limits."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(
    url: str,
    *,
    duration_s: float,
    connections: int,
    work_dir: Path,
    threads: int = 1,
    headers: Mapping[str, str] | None = None,
    method: str = "GET",
    body: bytes | None = None,
    timeout_s: float = 10.0,
) -> WrkResult:
    """One bounded wrk run pinned to the client core."""
    if not url.startswith(f"http://{LOOPBACK}:"):
        raise ValueError("wrk targets loopback only")
    lines = [f"wrk.method = {_lua_string(method)}"]
    for key, value in (headers or {}).items():
        lines.append(f"wrk.headers[ {_lua_string(key)} ] = {_lua_string(value)}")
    if body is not None:
        lines.append(f"wrk.body = {_lua_string(body.decode())}")
    script = work_dir / f"wrk-{os.getpid()}-{time.monotonic_ns()}.lua"
    script.write_text("\n".join(lines) + "\n" + _DONE_LUA)
    argv = [
        "taskset",
        "-c",
        CLIENT_CPU,
        "wrk",
        "-t",
        str(threads),
        "-c",
        str(connections),
        "-d",
        f"{max(1, round(duration_s))}s",
        "--timeout",
        f"{max(1, round(timeout_s))}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        done = subprocess.run(argv, capture_output=True, timeout=duration_s + timeout_s + 30, check=False)
    finally:
        script.unlink(missing_ok=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # children's usage is added when they are reaped: this run's wrk (taskset execs into it)
    wrk_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    out = done.stdout.decode(errors="replace")
    for line in out.splitlines():
        if line.startswith("BENCHJSON "):
            raw = json.loads(line[len("BENCHJSON ") :])
            duration = raw["duration_us"] / 1e6
            return WrkResult(
                requests=raw["requests"],
                duration_s=duration,
                rps=raw["requests"] / duration if duration else 0.0,
                p50_ms=raw["p50_us"] / 1000,
                p90_ms=raw["p90_us"] / 1000,
                p99_ms=raw["p99_us"] / 1000,
                max_ms=raw["max_us"] / 1000,
                mean_ms=raw["mean_us"] / 1000,
                errors={k: raw[k] for k in ("connect", "read", "write", "status", "timeout")},
                bytes=raw["bytes"],
                wrk_cpu_pct=100 * wrk_cpu / duration if duration else 0.0,
            )
    raise RuntimeError(
        f"wrk printed no result (exit {done.returncode}): {out[-2000:]} {done.stderr[-2000:]!r}"
    )


@dataclass
class Measurement:
    """A wrk run plus the server's CPU time and memory over it."""

    wrk: WrkResult
    cpu_s: float
    cpu_ms_per_request: float
    peak_rss_mib: float
    rss_mib: float
    others_cpu_ms_per_request: dict[str, float] = field(default_factory=dict)
    """CPU per request of the other processes watched (the upstreams), for context."""
    core_foreign_pct: float = 0.0
    """Share of the server core used by processes this bench did not start (noise)."""
    client_core_busy_pct: float = 0.0
    """How busy the load generator's core was: near 100 % means the client, not the server, limits."""

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["wrk"] = self.wrk.as_dict()
        return out


def measure(
    server: ServerProcess,
    url: str,
    *,
    duration_s: float,
    connections: int,
    work_dir: Path,
    warmup_s: float = 2.0,
    headers: Mapping[str, str] | None = None,
    method: str = "GET",
    body: bytes | None = None,
    others: Sequence[ServerProcess] = (),
) -> Measurement:
    """Warm up, then one measured wrk run with the server group's CPU delta (and the others')."""
    common: dict[str, Any] = {
        "connections": connections,
        "work_dir": work_dir,
        "headers": headers,
        "method": method,
        "body": body,
    }
    if warmup_s > 0:
        run_wrk(url, duration_s=warmup_s, **common)
    others_before = {o.name: o.cpu_seconds() for o in others}
    cpu_before = server.cpu_seconds()
    core_before = core_busy_seconds()
    client_before = core_busy_seconds(CLIENT_CPU)
    result = run_wrk(url, duration_s=duration_s, **common)
    cpu = server.cpu_seconds() - cpu_before
    core = core_busy_seconds() - core_before
    client = core_busy_seconds(CLIENT_CPU) - client_before
    per_request = {
        o.name: round((o.cpu_seconds() - others_before[o.name]) * 1000 / max(1, result.requests), 4)
        for o in others
    }
    ours = cpu + sum(o.cpu_seconds() - others_before[o.name] for o in others)
    foreign = max(0.0, core - ours) / result.duration_s * 100 if result.duration_s else 0.0
    return Measurement(
        wrk=result,
        cpu_s=cpu,
        cpu_ms_per_request=cpu * 1000 / result.requests if result.requests else float("nan"),
        peak_rss_mib=peak_rss_kib(server.pid) / 1024,
        rss_mib=rss_kib(server.pid) / 1024,
        others_cpu_ms_per_request=per_request,
        core_foreign_pct=foreign,
        client_core_busy_pct=client / result.duration_s * 100 if result.duration_s else 0.0,
    )
