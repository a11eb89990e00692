"""``make bench``: every scenario and ratio of issue 7 in one bounded run.

Starts, each as its own process group pinned to core 0 (``taskset -c 0``): the Phoenix stand-in
(:mod:`bench.phoenix_standin`), the Datadog simulator (``annotation_gateway.simulators.datadog``),
the bare FastAPI hello (:mod:`bench.hello_app`), the reference fan-out
(:mod:`bench.reference_fanout`) and the gateway (``annotation-gateway serve``); drives them with
wrk pinned to core 1, and writes ``bench/results/latest.md`` and ``latest.json``.

Scenarios (see ``bench/README.md`` for how to read them):

1. ``hello`` — the framework's ceiling; 2. ``cache_hit`` — ``GET /v1/annotations`` answering 100
annotations (50 + 50) from the cache, ratio to hello (target >= 0.85); 3. ``cache_miss`` and
``reference`` — the same query with ``Cache-Control: no-cache`` vs the minimal aiohttp+orjson
fan-out, CPU ms per request ratio (target <= 1.5); 4. ``overhead`` — both upstreams at 100 ms,
16 concurrent clients: p50 <= 105 ms, p99 <= 125 ms, plus the gateway's own time from
``Server-Timing``; 5. ``naive`` — a sequential Phoenix-then-Datadog httpx script vs the gateway
(faster on a miss, >= 10x on a hit); 6. ``scale`` — a 10,000-id search (upstream calls, first
page wall time <= 1.2 s, RSS per cached annotation <= 1 KiB once all 100,000 are cached and paged
through) and a 100,000-annotation export (RSS over time); 7. ``export_1m`` — a cold export of
1,000,000 Phoenix annotations streamed over HTTP: first byte <= 250 ms, RSS growth <= 64 MiB;
8. ``workers`` — cache-hit throughput of ``serve --workers 2`` vs ``--workers 1``
(:mod:`bench.workers`, ratio ``workers_2_vs_1_hit_throughput``); 9. ``scope`` — ``scope=all``
over 10,000 Phoenix sessions and 100,000 annotations: its cold first page ÷ the same data asked
by ids (target <= 2.0), and the RSS growth of paging through the whole scope (<= 128 MiB);
10. ``metrics`` — ``POST /v1/annotations/metrics`` over ``scale``'s 100,000 annotations (10,000
ids), grouped by name x source x day, once all of them are cached: wall time (median of
``--metrics-runs``, target <= 150 ms) and the RSS growth across the requests (<= 32 MiB).
11. ``redis`` — the shared cache tier (:mod:`bench.redis_tier`): CPU per miss with it ÷ without
(<= 1.2) and a hit served from Redis, p50 <= 2 ms.

A run of some scenarios only (``--only``) into an existing report keeps that report's results
of the other scenarios, each marked with the date and commit it was measured at (``meta`` →
``scenario_runs``, ``carried_over``), so ``latest.json`` → ``ratios`` stays whole.

Every wrk run has a fixed duration, every loop a count or deadline, and the whole run a budget
(``--budget-s``, default 900: all nine scenarios took 562 s on 2026-12-04): a scenario that no
longer fits is reported as skipped. Every
process started is stopped in ``finally`` (its whole process group).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson

from bench import datasets as ds
from bench.harness import (
    CLIENT_CPU,
    Measurement,
    ServerProcess,
    core_busy_seconds,
    free_port,
    measure,
    peak_rss_kib,
    pin_self_to_client_core,
    rss_kib,
    run_wrk,
    wrk_available,
)
from bench.profiling import ProfileSummary, py_spy_record, py_spy_start, py_spy_stop, summarize
from bench.report import NOTES, TARGETS, fmt, markdown, ratios, verdicts

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PYTHON = sys.executable
BIN = Path(sys.executable).parent


# --- run context -----------------------------------------------------------------------------


@dataclass
class Bench:
    args: argparse.Namespace
    work: Path
    deadline: float
    stack: contextlib.ExitStack
    results: dict[str, Any] = field(default_factory=dict)
    profiles: dict[str, ProfileSummary] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    phoenix: ServerProcess | None = None
    datadog: ServerProcess | None = None
    servers: list[ServerProcess] = field(default_factory=list)
    gateway_launcher: str = ""
    big_seeded: bool = False
    """The ``big`` data set is in the upstreams (``scale`` and ``metrics`` share it, seeded once)."""
    code_env: dict[str, str] = field(default_factory=dict)
    """Environment of every process that runs the project's code (gateway, simulator): with
    ``--gateway-commit``, ``PYTHONPATH`` = a snapshot of that commit's ``src/``."""

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def fits(self, name: str, needs_s: float) -> bool:
        if self.remaining() >= needs_s:
            return True
        self.results[name] = {"skipped": f"time budget: needs ~{needs_s:.0f}s, {self.remaining():.0f}s left"}
        return False

    @property
    def dur(self) -> float:
        return float(self.args.duration)

    def log(self, message: str) -> None:
        left = self.remaining()
        print(f"[bench {left:5.0f}s left] {message}", flush=True)


def auth_headers(extra: dict[str, str] | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {ds.GATEWAY_KEY}"}
    headers.update(extra or {})
    return headers


NO_CACHE = {"Cache-Control": "no-cache"}


def hot_query_url(base: str) -> str:
    params = [("subject_id", s) for s in ds.HOT_IDS] + [("subject_kind", "session"), ("limit", "100")]
    return f"{base}/v1/annotations?{urlencode(params)}"


def reference_url(base: str) -> str:
    return f"{base}/fanout?{urlencode([('subject_id', s) for s in ds.HOT_IDS])}"


# --- processes -------------------------------------------------------------------------------


def start(bench: Bench, server: ServerProcess) -> ServerProcess:
    bench.stack.enter_context(server)
    bench.servers.append(server)
    return server


def start_phoenix(bench: Bench) -> ServerProcess:
    port = free_port()
    return start(
        bench,
        ServerProcess(
            "phoenix-standin",
            [PYTHON, "-m", "bench.phoenix_standin", "--port", str(port)],
            port,
            bench.work,
            ready_path="/arize_phoenix_version",
        ),
    )


def start_datadog(bench: Bench) -> ServerProcess:
    port = free_port()
    code = (
        "import sys; from annotation_gateway.simulators.datadog import make_config, serve; "
        "serve('127.0.0.1', int(sys.argv[1]), make_config(api_key=sys.argv[2], app_key=sys.argv[3]), "
        "log_level='warning')"
    )
    return start(
        bench,
        ServerProcess(
            "datadog-simulator",
            [PYTHON, "-c", code, str(port), ds.DD_API_KEY, ds.DD_APP_KEY],
            port,
            bench.work,
            env=bench.code_env,
            ready_path="/_simulator/health",
        ),
    )


def cli_has_serve() -> bool:
    exe = BIN / "annotation-gateway"
    if not exe.exists():
        return False
    try:
        done = subprocess.run([str(exe), "serve", "--help"], capture_output=True, timeout=60, check=False)
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def start_gateway(
    bench: Bench,
    name: str,
    *,
    ttl_s: float = 600.0,
    source_timeout_s: float = 10.0,
    max_stale_s: float | None = None,
    project: str = ds.PROJECT,
    datadog: bool = True,
) -> ServerProcess:
    """A fresh gateway process; ``datadog=False``: its config has the Phoenix source alone,
    reading ``project``."""
    assert bench.phoenix is not None
    assert bench.datadog is not None
    port = free_port()
    config = ds.write_gateway_config(
        bench.work / f"{name}.toml",
        port=port,
        phoenix_url=bench.phoenix.base_url,
        datadog_url=bench.datadog.base_url,
        ttl_s=ttl_s,
        max_stale_s=max_stale_s,
        timeout_s=source_timeout_s,
        project=project,
        datadog=datadog,
    )
    if not bench.gateway_launcher:
        bench.gateway_launcher = "cli" if cli_has_serve() else "bench.serve"
        if bench.gateway_launcher != "cli":
            bench.notes.append(
                "`annotation-gateway serve` was not available: the gateway was served by "
                "`python -m bench.serve --gateway-config` (same uvicorn configuration)."
            )
    if bench.gateway_launcher == "cli":
        argv = [str(BIN / "annotation-gateway"), "serve", "--config", str(config)]
        argv += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    else:
        argv = [PYTHON, "-m", "bench.serve", "--gateway-config", str(config), "--port", str(port)]
    return start(
        bench,
        ServerProcess(
            name, argv, port, bench.work, env=ds.gateway_env() | bench.code_env, ready_path="/healthz"
        ),
    )


def upstreams(bench: Bench) -> list[ServerProcess]:
    return [s for s in (bench.phoenix, bench.datadog) if s is not None]


def stop(bench: Bench, server: ServerProcess) -> None:
    server.stop()
    if server in bench.servers:
        bench.servers.remove(server)


# --- upstream controls -------------------------------------------------------------------------


def set_latency(bench: Bench, ms: float) -> None:
    assert bench.phoenix is not None
    assert bench.datadog is not None
    with httpx.Client(timeout=30, trust_env=False) as client:
        client.post(bench.phoenix.base_url + "/_bench/control", json={"latency_ms": ms}).raise_for_status()
        client.post(bench.datadog.base_url + "/_simulator/config", json={"latency_ms": ms}).raise_for_status()


def reset_upstream_counts(bench: Bench) -> None:
    assert bench.phoenix is not None
    assert bench.datadog is not None
    with httpx.Client(timeout=30, trust_env=False) as client:
        client.post(bench.phoenix.base_url + "/_bench/reset").raise_for_status()
        client.delete(bench.datadog.base_url + "/_simulator/requests").raise_for_status()


def upstream_counts(bench: Bench) -> dict[str, Any]:
    assert bench.phoenix is not None
    assert bench.datadog is not None
    with httpx.Client(timeout=30, trust_env=False) as client:
        px = client.get(bench.phoenix.base_url + "/_bench/stats").json()
        dd = client.get(bench.datadog.base_url + "/_simulator/requests").json()
    dd_reads = [r for r in dd["requests"] if r["path"].endswith("/annotated-interactions")]
    return {
        "phoenix_calls": int(px["counters"].get("annotation_reads", 0)),
        "phoenix_max_in_flight": int(px.get("max_in_flight", 0)),
        "phoenix_other": {k: v for k, v in px["counters"].items() if k not in ("annotation_reads",)},
        "datadog_calls": len(dd_reads),
        "datadog_other_calls": len(dd["requests"]) - len(dd_reads),
        "datadog_max_in_flight": int(dd.get("max_in_flight", 0)),
    }


def seed(bench: Bench, *, big: bool) -> dict[str, Any]:
    assert bench.phoenix is not None
    assert bench.datadog is not None
    started = time.perf_counter()
    with httpx.Client(timeout=600, trust_env=False) as client:
        if big:
            px = ds.phoenix_seed(ds.BIG_IDS, ds.PHOENIX_BIG_PER_SUBJECT)
            dd = ds.datadog_seed("bench-big", ds.BIG_IDS, ds.DATADOG_BIG_USERS)
        else:
            px = ds.phoenix_seed(ds.HOT_IDS, ds.PHOENIX_HOT_PER_SUBJECT)
            dd = ds.datadog_seed("bench-hot", ds.HOT_IDS, 1)
        px_answer = client.post(bench.phoenix.base_url + "/_bench/seed", json=px)
        px_answer.raise_for_status()
        dd_answer = client.post(bench.datadog.base_url + "/_simulator/seed", content=orjson.dumps(dd))
        if dd_answer.status_code != 200:
            raise RuntimeError(f"simulator refused the seed: {dd_answer.status_code} {dd_answer.text[:500]}")
    return {
        "phoenix_rows": px_answer.json()["created"],
        "datadog": dd_answer.json().get("counts"),
        "seconds": round(time.perf_counter() - started, 2),
    }


# --- small helpers ---------------------------------------------------------------------------


_TIMING = re.compile(r"(?P<name>[A-Za-z0-9._-]+);dur=(?P<dur>[0-9.]+)")


def server_timing(header: str | None) -> dict[str, float]:
    return {m.group("name"): float(m.group("dur")) for m in _TIMING.finditer(header or "")}


def sequential_ms(
    url: str, *, headers: dict[str, str], repeat: int, method: str = "GET", body: bytes | None = None
) -> tuple[list[float], httpx.Response]:
    """``repeat`` requests one after the other; their wall times and the last response."""
    times: list[float] = []
    last: httpx.Response | None = None
    with httpx.Client(timeout=60, trust_env=False) as client:
        for _ in range(repeat):
            started = time.perf_counter()
            last = client.request(method, url, headers=headers, content=body)
            last.read()
            times.append((time.perf_counter() - started) * 1000)
    assert last is not None
    return times, last


def describe_answer(response: httpx.Response) -> dict[str, Any]:
    out: dict[str, Any] = {"status": response.status_code}
    try:
        body = response.json()
    except ValueError:
        out["body"] = response.text[:300]
        return out
    if not isinstance(body, dict) or "data" not in body:
        out["body"] = body
        return out
    by_provider: dict[str, int] = {}
    for item in body["data"]:
        by_provider[item.get("provider", "?")] = by_provider.get(item.get("provider", "?"), 0) + 1
    out.update(
        annotations=len(body["data"]),
        by_provider=by_provider,
        partial=body.get("partial"),
        next_cursor=bool(body.get("next_cursor")),
        sources=[
            {k: s.get(k) for k in ("source", "status", "count", "cached", "stale", "elapsed_ms", "error")}
            for s in body.get("sources", [])
        ],
        bytes=len(response.content),
    )
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    index = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[index]


def profile(bench: Bench, name: str, server: ServerProcess, url: str, headers: dict[str, str]) -> None:
    """Sample ``server`` with py-spy while wrk drives ``url`` (a separate, unmeasured run)."""
    seconds = int(bench.args.profile_s)
    if seconds <= 0 or not bench.fits(f"profile_{name}", seconds + 5):
        return
    bench.results.pop(f"profile_{name}", None)
    out = bench.work / f"profile-{name}.txt"
    load = threading.Thread(
        target=run_wrk,
        args=(url,),
        kwargs={
            "duration_s": seconds + 2,
            "connections": bench.args.connections,
            "work_dir": bench.work,
            "headers": headers,
        },
        daemon=True,
    )
    load.start()
    time.sleep(1.0)
    error = py_spy_record(server.pid, seconds, out)
    load.join(timeout=seconds + 30)
    bench.profiles[name] = ProfileSummary(error=error) if error else summarize(out)


def record_measurement(m: Measurement) -> dict[str, Any]:
    w = m.wrk
    return {
        "rps": round(w.rps, 1),
        "p50_ms": w.p50_ms,
        "p99_ms": w.p99_ms,
        "requests": w.requests,
        "errors": w.errors,
        "cpu_ms_per_request": round(m.cpu_ms_per_request, 4),
        "cpu_s": round(m.cpu_s, 2),
        "peak_rss_mib": round(m.peak_rss_mib, 1),
        "rss_mib": round(m.rss_mib, 1),
        "duration_s": round(w.duration_s, 2),
        "core0_foreign_pct": round(m.core_foreign_pct, 1),
        "core1_busy_pct": round(m.client_core_busy_pct, 1),
        "wrk_cpu_pct": round(w.wrk_cpu_pct, 1),
        "upstream_cpu_ms_per_request": {
            k: v
            for k, v in m.others_cpu_ms_per_request.items()
            if k in ("phoenix-standin", "datadog-simulator")
        },
    }


def combine_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One scenario's figures from its rounds: the best round's throughput and latencies (the one
    least disturbed by other load on the machine), the median CPU per request, every round kept."""
    best = max(rounds, key=lambda r: r["rps"])
    out = dict(best)
    out["cpu_ms_per_request"] = round(statistics.median(r["cpu_ms_per_request"] for r in rounds), 4)
    out["peak_rss_mib"] = max(r["peak_rss_mib"] for r in rounds)
    out["errors"] = {k: sum(r["errors"][k] for r in rounds) for k in best["errors"]}
    out["rounds"] = [
        {
            k: r[k]
            for k in (
                "rps",
                "p50_ms",
                "p99_ms",
                "cpu_ms_per_request",
                "core0_foreign_pct",
                "core1_busy_pct",
                "wrk_cpu_pct",
                "rss_mib",
            )
        }
        for r in rounds
    ]
    return out


# --- scenarios -------------------------------------------------------------------------------


def start_hello(bench: Bench, answer: bytes) -> ServerProcess:
    port = free_port()
    answer_file = bench.work / "cache-hit-answer.json"
    answer_file.write_bytes(answer)
    return start(
        bench,
        ServerProcess(
            "hello",
            [PYTHON, "-m", "bench.serve", "bench.hello_app:app", "--port", str(port)],
            port,
            bench.work,
            env={"BENCH_ANSWER_FILE": str(answer_file)},
            ready_path="/hello",
        ),
    )


def start_reference(bench: Bench) -> ServerProcess:
    assert bench.phoenix is not None
    assert bench.datadog is not None
    port = free_port()
    env = {
        "BENCH_PHOENIX_URL": bench.phoenix.base_url,
        "BENCH_PHOENIX_PROJECT": ds.PROJECT,
        "BENCH_DATADOG_URL": bench.datadog.base_url,
        "BENCH_DD_API_KEY": ds.DD_API_KEY,
        "BENCH_DD_APP_KEY": ds.DD_APP_KEY,
    }
    return start(
        bench,
        ServerProcess(
            "reference",
            [PYTHON, "-m", "bench.serve", "bench.reference_fanout:app", "--port", str(port)],
            port,
            bench.work,
            env=env,
            ready_path="/fanout?subject_id=hot-0",
        ),
    )


def cache_hit_body(gateway: ServerProcess) -> bytes:
    """The gateway's cache-hit answer, byte for byte (served by the hello app's ``/answer``)."""
    with httpx.Client(timeout=30, trust_env=False) as client:
        client.get(hot_query_url(gateway.base_url), headers=auth_headers())
        response = client.get(hot_query_url(gateway.base_url), headers=auth_headers())
    response.raise_for_status()
    return response.content


def calls_per_request(bench: Bench, url: str, headers: dict[str, str], n: int = 20) -> dict[str, float]:
    """Upstream calls one request makes, counted over ``n`` sequential requests."""
    reset_upstream_counts(bench)
    sequential_ms(url, headers=headers, repeat=n)
    calls = upstream_counts(bench)
    return {"phoenix": calls["phoenix_calls"] / n, "datadog": calls["datadog_calls"] / n}


def scenario_throughput(
    bench: Bench, hello: ServerProcess, reference: ServerProcess, gateway: ServerProcess
) -> None:
    """hello, cache hit, reference fan-out and cache miss, interleaved over ``--rounds`` rounds.

    Interleaving (A B C D, A B C D, ...) spreads any load from outside the bench evenly over
    the four, so their ratios stay fair on a shared machine.
    """
    hit_url = hot_query_url(gateway.base_url)
    ref_url = reference_url(reference.base_url)
    with httpx.Client(timeout=30, trust_env=False) as client:
        client.get(hit_url, headers=auth_headers())  # fill the cache
        hit_sample = client.get(hit_url, headers=auth_headers())
        miss_sample = client.get(hit_url, headers=auth_headers(NO_CACHE))
        ref_sample = client.get(ref_url)
        ref_sample.raise_for_status()
    extra: dict[str, dict[str, Any]] = {
        "cache_hit": {
            "answer": describe_answer(hit_sample),
            "server_timing_sample": hit_sample.headers.get("server-timing"),
            "upstream_calls_per_request": calls_per_request(bench, hit_url, auth_headers()),
        },
        "cache_miss": {
            "answer": describe_answer(miss_sample),
            "server_timing_sample": miss_sample.headers.get("server-timing"),
            "upstream_calls_per_request": calls_per_request(bench, hit_url, auth_headers(NO_CACHE)),
        },
        "reference": {
            "rows_per_answer": len(ref_sample.json()["data"]),
            "upstream_calls_per_request": calls_per_request(bench, ref_url, {}),
        },
    }
    plan: list[tuple[str, ServerProcess, str, dict[str, str]]] = [
        ("hello", hello, hello.base_url + "/hello", {}),
        ("hello_answer", hello, hello.base_url + "/answer", {}),
        ("cache_hit", gateway, hit_url, auth_headers()),
        ("reference", reference, ref_url, {}),
        ("cache_miss", gateway, hit_url, auth_headers(NO_CACHE)),
    ]
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name, *_ in plan}
    for r in range(max(1, int(bench.args.rounds))):
        for name, server, url, headers in plan:
            warmup = 2.0 if r == 0 else 0.5
            if bench.remaining() < bench.dur + warmup + 120:
                bench.notes.append(f"throughput round {r + 1} of {name} skipped: time budget")
                continue
            bench.log(f"round {r + 1}: {name}")
            m = measure(
                server,
                url,
                duration_s=bench.dur,
                connections=bench.args.connections,
                work_dir=bench.work,
                warmup_s=warmup,
                headers=headers,
                others=[s for s in bench.servers if s is not server],
            )
            rounds[name].append(record_measurement(m))
    for name, measured in rounds.items():
        if measured:
            bench.results[name] = combine_rounds(measured) | extra.get(name, {})
    profile(bench, "cache_hit", gateway, hit_url, auth_headers())
    profile(bench, "cache_miss", gateway, hit_url, auth_headers(NO_CACHE))


def upstream_processes(bench: Bench) -> dict[str, ServerProcess]:
    """The upstream stand-ins running, by vendor."""
    found = {"phoenix": bench.phoenix, "datadog": bench.datadog}
    return {name: process for name, process in found.items() if process is not None}


@contextlib.contextmanager
def upstreams_on_client_core(bench: Bench) -> Iterator[None]:
    """The Phoenix stand-in and the Datadog simulator moved to the client core for a while."""
    with contextlib.ExitStack() as moved:
        for process in upstream_processes(bench).values():
            moved.enter_context(process.moved_to(CLIENT_CPU))
        yield


OVERHEAD_ROUNDS = 3
"""Alternated rounds of the gateway and the reference fan-out in ``overhead``. One 8-s run's p50
moves by ±1 ms from one run to the next (104.0-106.0 ms in session 18's rounds of one build), as
much as the gateway adds over the reference: each side's median round is reported, every round
beside it."""


def scenario_overhead(bench: Bench, gateway: ServerProcess) -> None:
    """Both upstreams at 100 ms, 16 clients: the latency the gateway adds.

    Measured with the two upstream stand-ins moved to the client core (core 1, with wrk, which
    is nearly idle at ~130 requests a second): real upstreams are other machines, and on core 0
    the stand-ins' own CPU (~0.9 ms a request, reported) queued with the gateway's in every wave
    of 16 requests (all 16 answers arrive together after the 100 ms). The same load with the
    stand-ins on core 0, as every scenario had them before, is reported beside it (one run,
    ``overhead_shared_core_*``).

    The reference fan-out (:mod:`bench.reference_fanout`, the floor the miss CPU is compared
    with) runs under the same load and set-up, alternated with the gateway for
    :data:`OVERHEAD_ROUNDS` rounds (``overhead_reference_*``): what a fan-out with nothing but
    plumbing gets here, so the gateway's figures can be read against the floor of this machine
    and load, not only against the targets. Each side's figures are its median round's (by p50);
    errors are counted over every round."""
    rounds_s = 2 * OVERHEAD_ROUNDS * (bench.dur + 2)
    if not bench.fits("overhead", rounds_s + 2.5 * bench.dur + 40):
        return
    bench.log(
        f"overhead: both upstreams at 100 ms, 16 concurrent clients, cache bypassed; "
        f"{OVERHEAD_ROUNDS} rounds alternated with the reference fan-out"
    )
    set_latency(bench, 100)
    url = hot_query_url(gateway.base_url)
    headers = auth_headers(NO_CACHE)
    try:
        reference = start_reference(bench)
        try:
            with upstreams_on_client_core(bench):
                ours: list[dict[str, Any]] = []
                theirs: list[dict[str, Any]] = []
                for _ in range(OVERHEAD_ROUNDS):
                    ours.append(_overhead_run(bench, gateway, url, headers))
                    theirs.append(_overhead_run(bench, reference, reference_url(reference.base_url), {}))
                result = _median_round(ours)
                result["reference"] = _median_round(theirs)
                result |= _overhead_samples(bench, gateway, url, headers)
                result["upstreams_alone"] = _upstreams_alone(bench)
        finally:
            stop(bench, reference)
        result["upstreams_on_cpu"] = CLIENT_CPU
        result["shared_core"] = _overhead_run(bench, gateway, url, headers)
        bench.results["overhead"] = result
        if result["p50_ms"] > TARGETS["overhead_p50_ms"] or result["p99_ms"] > TARGETS["overhead_p99_ms"]:
            profile(bench, "overhead", gateway, url, headers)
    finally:
        set_latency(bench, 0)


def _overhead_run(bench: Bench, server: ServerProcess, url: str, headers: dict[str, str]) -> dict[str, Any]:
    """One 16-client wrk run at the set latency (after a 2-s warm-up run)."""
    run_wrk(url, duration_s=2, connections=16, work_dir=bench.work, headers=headers)
    upstreams = upstream_processes(bench)
    cpu_before = server.cpu_seconds()
    upstream_before = {name: p.cpu_seconds() for name, p in upstreams.items()}
    w = run_wrk(url, duration_s=bench.dur, connections=16, work_dir=bench.work, headers=headers)
    cpu = server.cpu_seconds() - cpu_before
    upstream_cpu = {
        name: round((process.cpu_seconds() - upstream_before[name]) * 1000 / w.requests, 4)
        for name, process in upstreams.items()
        if w.requests
    }
    return {
        "rps": round(w.rps, 1),
        "p50_ms": w.p50_ms,
        "p90_ms": w.p90_ms,
        "p99_ms": w.p99_ms,
        "max_ms": w.max_ms,
        "requests": w.requests,
        "errors": w.errors,
        "cpu_ms_per_request": round(cpu * 1000 / w.requests, 4) if w.requests else None,
        "upstream_cpu_ms_per_request": upstream_cpu,
    }


def _median_round(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median p50, whole (its p99 and CPU with it); errors summed over every
    run, and every run's p50 / p99 / CPU listed under ``rounds``."""
    median = dict(sorted(runs, key=lambda run: run["p50_ms"])[len(runs) // 2])
    errors: dict[str, int] = {}
    for run in runs:
        for kind, count in run["errors"].items():
            errors[kind] = errors.get(kind, 0) + count
    median["errors"] = errors
    median["rounds"] = [
        {"p50_ms": run["p50_ms"], "p99_ms": run["p99_ms"], "cpu_ms_per_request": run["cpu_ms_per_request"]}
        for run in runs
    ]
    return median


def _overhead_samples(
    bench: Bench, gateway: ServerProcess, url: str, headers: dict[str, str]
) -> dict[str, Any]:
    """``Server-Timing`` under the same load (a run of its own, so that the measured ones have
    exactly the 16 clients the reference gets), one client alone and the peak RSS."""
    samples = _timing_under_load(bench, url, headers)
    quiet_times, last = sequential_ms(url, headers=headers, repeat=10)
    gateway_own = [s["gateway"] for s in samples if "gateway" in s]
    return {
        "server_timing_under_load": {
            "samples": len(samples),
            "gateway_p50_ms": statistics.median(gateway_own) if gateway_own else None,
            "gateway_p99_ms": pct(gateway_own, 99) if gateway_own else None,
            "gateway_max_ms": max(gateway_own) if gateway_own else None,
            "example": last.headers.get("server-timing"),
        },
        "sequential_single_client": {
            "p50_ms": statistics.median(quiet_times),
            "server_timing": server_timing(last.headers.get("server-timing")),
        },
        "peak_rss_mib": round(peak_rss_kib(gateway.pid) / 1024, 1),
    }


def _upstreams_alone(bench: Bench) -> dict[str, dict[str, Any]]:
    """Each stand-in's own latency under the same load: 16 wrk connections straight at it, asking
    what the gateway asks of it for the hot query. The floor of the gateway's figures: a
    "100 ms" upstream answering later under 16 clients raises them by as much."""
    assert bench.phoenix is not None
    assert bench.datadog is not None
    phoenix = [("session_ids", s) for s in ds.HOT_IDS] + [("limit", str(ds.PHOENIX_PAGE_SIZE))]
    datadog = [("contentIds", s) for s in ds.HOT_IDS] + [("offset", "0"), ("limit", "100")]
    targets = {
        "phoenix": (
            f"{bench.phoenix.base_url}/v1/projects/{ds.PROJECT}/session_annotations?{urlencode(phoenix)}",
            {},
        ),
        "datadog": (
            f"{bench.datadog.base_url}/api/v2/llm-obs/v1/annotated-interactions?{urlencode(datadog)}",
            {"DD-API-KEY": ds.DD_API_KEY, "DD-APPLICATION-KEY": ds.DD_APP_KEY},
        ),
    }
    seconds = max(2.0, bench.dur / 2)
    out: dict[str, dict[str, Any]] = {}
    for name, (url, headers) in targets.items():
        w = run_wrk(url, duration_s=seconds, connections=16, work_dir=bench.work, headers=headers)
        out[name] = {"p50_ms": w.p50_ms, "p99_ms": w.p99_ms, "rps": round(w.rps, 1), "errors": w.errors}
    return out


def _timing_under_load(bench: Bench, url: str, headers: dict[str, str]) -> list[dict[str, float]]:
    """``Server-Timing`` of one more client's requests, every 0.1 s, while the 16 run (half a
    measured run's length; not itself measured: that client would be the 17th)."""
    samples: list[dict[str, float]] = []
    stop_sampling = threading.Event()

    def sample_timing() -> None:
        with httpx.Client(timeout=30, trust_env=False) as client:
            for _ in range(200):  # bounded; stops with the wrk run
                if stop_sampling.wait(0.1):
                    return
                response = client.get(url, headers=headers)
                samples.append(server_timing(response.headers.get("server-timing")))

    sampler = threading.Thread(target=sample_timing, daemon=True)
    sampler.start()
    try:
        run_wrk(url, duration_s=max(2.0, bench.dur / 2), connections=16, work_dir=bench.work, headers=headers)
    finally:
        stop_sampling.set()
        sampler.join(timeout=35)
    return samples


def run_naive(bench: Bench, repeat: int) -> dict[str, Any]:
    assert bench.phoenix is not None
    assert bench.datadog is not None
    argv = ["taskset", "-c", CLIENT_CPU, PYTHON, "-m", "bench.naive_sequential"]
    argv += [
        "--phoenix-url",
        bench.phoenix.base_url,
        "--project",
        ds.PROJECT,
        "--datadog-url",
        bench.datadog.base_url,
    ]
    argv += ["--dd-api-key", ds.DD_API_KEY, "--dd-app-key", ds.DD_APP_KEY, "--repeat", str(repeat), "--json"]
    for subject in ds.HOT_IDS:
        argv += ["--subject-id", subject]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"naive script failed: {done.stderr[-1000:]}")
    summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    summary.pop("times_ms", None)
    return summary


def scenario_naive(bench: Bench, gateway: ServerProcess) -> None:
    if not bench.fits("naive", 25):
        return
    bench.log("naive: sequential Phoenix-then-Datadog script vs the gateway")
    url = hot_query_url(gateway.base_url)
    rows: dict[str, Any] = {}
    try:
        for latency in (100, 0):
            set_latency(bench, latency)
            naive = run_naive(bench, repeat=10 if latency else 30)
            miss_times, _ = sequential_ms(url, headers=auth_headers(NO_CACHE), repeat=10 if latency else 30)
            sequential_ms(url, headers=auth_headers(), repeat=1)  # make sure the cache holds the answer
            hit_times, hit_last = sequential_ms(url, headers=auth_headers(), repeat=50)
            miss = statistics.median(miss_times)
            hit = statistics.median(hit_times)
            rows[f"upstream_{latency}ms"] = {
                "naive_p50_ms": round(naive["p50_ms"], 2),
                "naive_annotations": naive["annotations"],
                "gateway_miss_p50_ms": round(miss, 2),
                "gateway_hit_p50_ms": round(hit, 2),
                "gateway_annotations": describe_answer(hit_last).get("annotations"),
                "miss_speedup": round(naive["p50_ms"] / miss, 2),
                "hit_speedup": round(naive["p50_ms"] / hit, 1),
            }
    finally:
        set_latency(bench, 0)
    bench.results["naive"] = rows


def rss_sampler(
    pid: int, stop_event: threading.Event, out: list[tuple[float, int]], period_s: float = 0.05
) -> None:
    started = time.monotonic()
    for _ in range(100_000):  # bounded: stops with the event
        out.append((time.monotonic() - started, rss_kib(pid)))
        if stop_event.wait(period_s):
            return


@contextlib.contextmanager
def sampling_rss(pid: int, period_s: float = 0.05) -> Iterator[list[tuple[float, int]]]:
    series: list[tuple[float, int]] = []
    stop_event = threading.Event()
    thread = threading.Thread(target=rss_sampler, args=(pid, stop_event, series, period_s), daemon=True)
    thread.start()
    try:
        yield series
    finally:
        stop_event.set()
        thread.join(timeout=5)


def scenario_scale(bench: Bench) -> None:
    if not bench.fits("scale", 90):
        return
    bench.log("scale: seeding 1,000 sessions x (50 Phoenix + 50 Datadog) annotations")
    result: dict[str, Any] = {"seed": seed(bench, big=True)}
    bench.big_seeded = True
    bench.results["scale"] = result
    latency = float(bench.args.scale_latency_ms)
    set_latency(bench, latency)
    try:
        rounds = _cold_search_rounds(bench, latency) if bench.fits("scale_rounds", 120) else None
        gateway = start_gateway(bench, "gateway-scale")
        try:
            _scale_search(bench, gateway, result, latency, rounds)
        finally:
            stop(bench, gateway)
    finally:
        set_latency(bench, 0)
    if not bench.fits("export", 60):
        return
    gateway = start_gateway(bench, "gateway-export")
    try:
        _scale_export(bench, gateway, result)
    finally:
        stop(bench, gateway)


SEARCH_ROUNDS = 3
"""Cold gateways whose first page of the 10,000-id search is measured; the median is reported,
after one priming search that is not (as ``scope`` does). The first search of that size the
upstream stand-ins answer is the slow one (session 12, three ``--only scale`` runs: priming
1,255-1,368 ms, the rounds after it 944-1,139): one run alone, the only one before, measured
the stand-ins' warm-up with the gateway and spread by ~250 ms between runs of one commit."""


def _search_body() -> bytes:
    """The 10,000-id search's first page: 1,000 sessions with annotations, 9,000 without."""
    return orjson.dumps(
        {"subject_ids": ds.BIG_IDS + ds.EMPTY_IDS, "subject_kinds": ["session"], "limit": 1000}
    )


def _warm_search(search_url: str, headers: dict[str, str]) -> None:
    """One small search (an id that exists nowhere), so that what the first request of a
    process allocates once (imports, connection pools) is neither timed nor counted as cached
    annotations."""
    sequential_ms(
        search_url,
        headers=headers,
        repeat=1,
        method="POST",
        body=orjson.dumps({"subject_ids": ["warm-up-none"], "subject_kinds": ["session"]}),
    )


def _timed_search(
    bench: Bench, search_url: str, headers: dict[str, str], body: bytes
) -> tuple[float, httpx.Response]:
    """The 10,000-id search's first page (``body``), timed (ms), the upstream stand-ins on the
    client core meanwhile (see :func:`_scale_search`)."""
    with upstreams_on_client_core(bench):
        times, response = sequential_ms(search_url, headers=headers, repeat=1, method="POST", body=body)
    return times[0], response


def _cold_first_search(bench: Bench, name: str) -> float | None:
    """The first page of the 10,000-id search on a new gateway (warmed by :func:`_warm_search`),
    in ms; ``None`` when it did not answer 200."""
    gateway = start_gateway(bench, name)
    try:
        url = gateway.base_url + "/v1/annotations/search"
        headers = auth_headers({"Content-Type": "application/json"})
        _warm_search(url, headers)
        wall, response = _timed_search(bench, url, headers, _search_body())
        return round(wall, 1) if response.status_code == 200 else None
    finally:
        stop(bench, gateway)


def _cold_search_rounds(bench: Bench, latency: float) -> dict[str, Any]:
    """A priming search that is not counted (the stand-ins' first answers of that size), then
    the first page on ``SEARCH_ROUNDS - 1`` cold gateways of their own; the last round is the
    gateway :func:`_scale_search` measures memory on."""
    bench.log(
        f"scale: the 10,000-id search's first page on cold gateways (priming, not counted, then "
        f"{SEARCH_ROUNDS - 1} of the {SEARCH_ROUNDS} rounds; upstreams at {latency:.0f} ms)"
    )
    priming = _cold_first_search(bench, "gateway-search-priming")
    walls = [_cold_first_search(bench, f"gateway-search-{r}") for r in range(1, SEARCH_ROUNDS)]
    return {"priming_wall_ms": priming, "wall_ms_rounds": [w for w in walls if w is not None]}


def _scale_search(
    bench: Bench,
    gateway: ServerProcess,
    result: dict[str, Any],
    latency: float,
    rounds: dict[str, Any] | None,
) -> None:
    ids = ds.BIG_IDS + ds.EMPTY_IDS
    body = _search_body()
    search_url = gateway.base_url + "/v1/annotations/search"
    json_headers = auth_headers({"Content-Type": "application/json"})
    _warm_search(search_url, json_headers)
    rss_before = rss_kib(gateway.pid)
    reset_upstream_counts(bench)
    bench.log(
        f"scale: POST /v1/annotations/search with {len(ids)} subject ids (upstreams at {latency:.0f} ms)"
    )
    # Measured without py-spy (which pauses the process to sample it): the profile is a second,
    # unmeasured run below. The upstream stand-ins answer from the client core meanwhile, as for
    # ``overhead``: real upstreams are other machines, and on core 0 building and writing the
    # ~100,000 annotations queued with the gateway's own work (session 10, by hand: first pages
    # of 1.25-1.59 s in seven runs with them on core 0, 1.07-1.29 s in six with them on core 1).
    wall, response = _timed_search(bench, search_url, json_headers, body)
    calls = upstream_counts(bench)
    answer = describe_answer(response)
    walls = list((rounds or {}).get("wall_ms_rounds", []))
    if response.status_code == 200:
        walls.append(round(wall, 1))
    search: dict[str, Any] = {
        "subject_ids": len(ids),
        "upstream_latency_ms": latency,
        # The median of the cold gateways' first pages (this one's included); its own alone
        # when the rounds did not run.
        "wall_ms": round(statistics.median(walls), 1) if walls else round(wall, 1),
        "wall_ms_rounds": walls,
        "priming_wall_ms": (rounds or {}).get("priming_wall_ms"),
        "upstreams_on_cpu": CLIENT_CPU,
        "answer": answer,
        "server_timing": response.headers.get("server-timing"),
        "upstream": calls,
        "rss_before_mib": round(rss_before / 1024, 1),
        "rss_after_mib": round(rss_kib(gateway.pid) / 1024, 1),
    }
    seq = (calls["phoenix_calls"] + calls["datadog_calls"]) * latency
    search["sequential_estimate_ms"] = seq
    result["search_10k"] = search
    # the rest of the pages, from the cache (bounded by count and time)
    if response.status_code == 200:
        bench.log("scale: paging through every result of the search")
        cursor = response.json().get("next_cursor")
        total = answer.get("annotations", 0)
        pages = 1
        page_times: list[float] = []
        deadline = time.monotonic() + min(60.0, max(5.0, bench.remaining() - 120))
        with httpx.Client(timeout=60, trust_env=False) as client:
            while cursor and pages < 500 and time.monotonic() < deadline:
                page_body = orjson.dumps(
                    {"subject_ids": ids, "subject_kinds": ["session"], "limit": 1000, "cursor": cursor}
                )
                started = time.perf_counter()
                page = client.post(
                    gateway.base_url + "/v1/annotations/search",
                    headers=auth_headers({"Content-Type": "application/json"}),
                    content=page_body,
                )
                page_times.append((time.perf_counter() - started) * 1000)
                if page.status_code != 200:
                    search["paging_error"] = describe_answer(page)
                    break
                data = page.json()
                total += len(data["data"])
                cursor = data.get("next_cursor")
                pages += 1
        search["paging"] = {
            "pages": pages,
            "annotations": total,
            "complete": not cursor,
            "page_p50_ms": round(statistics.median(page_times), 1) if page_times else None,
            "page_max_ms": round(max(page_times), 1) if page_times else None,
        }
        search["rss_after_paging_mib"] = round(rss_kib(gateway.pid) / 1024, 1)
        search["peak_rss_mib"] = round(peak_rss_kib(gateway.pid) / 1024, 1)
        search["cached_memory"] = _cached_memory(search, rss_before)
    _profile_search(bench, gateway, search_url, body)


def _cached_memory(search: dict[str, Any], rss_before_kib: int) -> dict[str, Any]:
    """RSS growth per cached annotation: the gateway's RSS once the whole answer is cached
    (after paging through every page, each answered from the cache; the first page's RSS when
    paging did not finish) minus its RSS before the search, over the annotations it answered."""
    paging = search.get("paging") or {}
    if paging.get("complete"):
        rss_cached_mib = search["rss_after_paging_mib"]
        answered = int(paging["annotations"])
        after = "paging through every page"
    else:
        rss_cached_mib = search["rss_after_mib"]
        answered = sum(int(s.get("count") or 0) for s in search["answer"].get("sources", []))
        after = "the first page (paging did not finish)"
    growth_kib = rss_cached_mib * 1024 - rss_before_kib
    return {
        "rss_before_mib": round(rss_before_kib / 1024, 1),
        "rss_cached_mib": rss_cached_mib,
        "growth_mib": round(growth_kib / 1024, 1),
        "annotations": answered,
        "bytes_per_annotation": round(growth_kib * 1024 / answered) if answered else None,
        "measured_after": after,
    }


def _profile_search(bench: Bench, gateway: ServerProcess, url: str, body: bytes) -> None:
    """py-spy over the same search asked again with ``no-cache`` (an unmeasured run: every
    upstream is asked again, as on the first page)."""
    if bench.args.profile_s <= 0 or not bench.fits("profile_search_10k", 60):
        return
    bench.log("scale: the search again under py-spy (no-cache, unmeasured)")
    spy_out = bench.work / "profile-search.txt"
    spy = py_spy_start(gateway.pid, spy_out)
    try:
        sequential_ms(
            url,
            headers=auth_headers({"Content-Type": "application/json", **NO_CACHE}),
            repeat=1,
            method="POST",
            body=body,
        )
    except httpx.HTTPError as exc:  # an unmeasured run: its failure only costs the profile
        bench.notes.append(f"the profiled 10,000-id search failed: {exc!r}")
    finally:
        bench.profiles["search_10k"] = py_spy_stop(spy, spy_out)


def _export_once(
    gateway: ServerProcess,
    url: str,
    *,
    deadline_s: float = 300.0,
    others: list[ServerProcess] | None = None,
) -> dict[str, Any]:
    """Stream one export over HTTP (reading stops at ``deadline_s``); RSS sampled every 50 ms.

    ``rss_growth_mib`` = the sampled peak minus the RSS before; ``rss_hwm_growth_mib`` = the
    process's VmHWM after minus the RSS before when VmHWM rose during the export (it catches a
    peak shorter than the sampling period), else ``None``.
    """
    rss_before = rss_kib(gateway.pid)
    hwm_before = peak_rss_kib(gateway.pid)
    cpu_before = gateway.cpu_seconds()
    others_before = {s.name: s.cpu_seconds() for s in others or []}
    lines = 0
    size = 0
    tail = b""
    truncated = False
    started = time.perf_counter()
    first_byte: float | None = None
    with (
        sampling_rss(gateway.pid) as series,
        httpx.Client(timeout=httpx.Timeout(60.0, connect=10.0), trust_env=False) as client,
        client.stream("GET", url, headers=auth_headers()) as response,
    ):
        status = response.status_code
        if status != 200:
            response.read()
            return {"status": status, "body": response.text[:300]}
        for chunk in response.iter_bytes():
            if first_byte is None:
                first_byte = time.perf_counter() - started
            size += len(chunk)
            lines += chunk.count(b"\n")
            tail = (tail + chunk[-8192:])[-8192:]
            if time.perf_counter() - started > deadline_s:
                truncated = True
                break
    wall = time.perf_counter() - started
    peak = max(kib for _, kib in series) if series else rss_before
    hwm_after = peak_rss_kib(gateway.pid)
    last_line = tail.rstrip(b"\n").rsplit(b"\n", 1)[-1]
    trailer = orjson.loads(last_line) if last_line.startswith(b'{"_export"') and not truncated else None
    annotations = lines - (1 if trailer is not None else 0)
    return {
        "status": status,
        "lines": lines,
        "annotations": annotations,
        "trailer": trailer,
        "truncated": truncated,
        "bytes": size,
        "wall_s": round(wall, 2),
        "first_byte_ms": round((first_byte or 0) * 1000, 1),
        "annotations_per_s": round(annotations / wall) if wall else None,
        "gateway_cpu_s": round(gateway.cpu_seconds() - cpu_before, 2),
        "others_cpu_s": {s.name: round(s.cpu_seconds() - others_before[s.name], 2) for s in others or []},
        "rss_before_mib": round(rss_before / 1024, 1),
        "rss_peak_mib": round(peak / 1024, 1),
        "rss_growth_mib": round((peak - rss_before) / 1024, 1),
        "rss_hwm_growth_mib": round((hwm_after - rss_before) / 1024, 1) if hwm_after > hwm_before else None,
        "rss_after_mib": round(rss_kib(gateway.pid) / 1024, 1),
        "rss_series_mib": [
            (round(t, 2), round(k / 1024, 1)) for t, k in series[:: max(1, len(series) // 40)]
        ],
    }


def _export_available(gateway: ServerProcess, query: str = "") -> int | None:
    """``None`` when the export route answers; else the status of the probe (404/405)."""
    with httpx.Client(timeout=30, trust_env=False) as client:
        probe = client.get(
            f"{gateway.base_url}/v1/annotations/export?subject_id=nothing&format=jsonl{query}",
            headers=auth_headers(),
        )
    return probe.status_code if probe.status_code in (404, 405) else None


def _scale_export(bench: Bench, gateway: ServerProcess, result: dict[str, Any]) -> None:
    params = [("subject_id", s) for s in ds.BIG_IDS] + [("subject_kind", "session"), ("format", "jsonl")]
    url = f"{gateway.base_url}/v1/annotations/export?{urlencode(params)}"
    probe_status = _export_available(gateway)
    if probe_status is not None:
        result["export_100k"] = {"status": "not yet available", "probe_status": probe_status}
        return
    bench.log("scale: export of 100,000 annotations (cold cache), RSS sampled every 50 ms")
    cold = _export_once(gateway, url)
    out: dict[str, Any] = {"cold": cold}
    if bench.remaining() > 45 and cold.get("status") == 200:
        bench.log("scale: export again (an export caches nothing: as cold as the first)")
        out["warm"] = _export_once(gateway, url)
    result["export_100k"] = out


EXPORT_1M_ASSUMED_RATE = 20_000
"""Annotations per second the time budget assumes for the cold export (the budget check only)."""


def scenario_export_1m(bench: Bench) -> None:
    """A cold export of ``--export-annotations`` (1,000,000) Phoenix annotations, streamed over
    HTTP: first byte, wall time, annotations/s, RSS growth (sampled every 50 ms, and VmHWM)."""
    ids, per_subject = ds.export_plan(int(bench.args.export_annotations))
    expected = len(ids) * per_subject
    needs = 40 + expected / EXPORT_1M_ASSUMED_RATE
    if not bench.fits("export_1m", needs):
        return
    assert bench.phoenix is not None
    result: dict[str, Any] = {"annotations_expected": expected, "sessions": len(ids)}
    bench.results["export_1m"] = result
    bench.log(f"export_1m: {len(ids):,} Phoenix sessions x {per_subject:,} annotations (lazy seed)")
    started = time.perf_counter()
    with httpx.Client(timeout=60, trust_env=False) as client:
        answer = client.post(
            bench.phoenix.base_url + "/_bench/seed", json=ds.phoenix_lazy_seed(ids, per_subject)
        )
        answer.raise_for_status()
    result["seed"] = {
        "phoenix_rows": answer.json()["created"],
        "seconds": round(time.perf_counter() - started, 2),
    }
    gateway = start_gateway(bench, "gateway-export-1m")
    try:
        source = "&" + urlencode([("source", ds.PHOENIX_SOURCE)])
        probe_status = _export_available(gateway, source)  # also the gateway's first request
        if probe_status is not None:
            result["status"] = "not yet available"
            result["probe_status"] = probe_status
            return
        params = [("subject_id", s) for s in ids]
        params += [("subject_kind", "session"), ("source", ds.PHOENIX_SOURCE), ("format", "jsonl")]
        url = f"{gateway.base_url}/v1/annotations/export?{urlencode(params)}"
        deadline_s = max(30.0, min(bench.remaining() - 30, 60 + expected / 5_000))
        bench.log(
            f"export_1m: cold export of {expected:,} annotations (source={ds.PHOENIX_SOURCE}), "
            f"RSS sampled every 50 ms, reading stops after {deadline_s:.0f} s"
        )
        cold = _export_once(gateway, url, deadline_s=deadline_s, others=[bench.phoenix])
        if cold.get("status") == 200:
            cold["complete"] = (
                cold["annotations"] == expected and not cold["truncated"] and cold["trailer"] is None
            )
        result["cold"] = cold
        if cold.get("status") == 200:
            _profile_export(bench, gateway, url)
    finally:
        stop(bench, gateway)


def _profile_export(bench: Bench, gateway: ServerProcess, url: str) -> None:
    """py-spy for ``--profile-s`` seconds over a second (cold: the export caches nothing) export
    of the same data, cut short when the sampling ends: an unmeasured run."""
    seconds = int(bench.args.profile_s)
    if seconds <= 0 or not bench.fits("profile_export_1m", seconds + 40):
        return
    bench.results.pop("profile_export_1m", None)
    out = bench.work / "profile-export.txt"

    def export() -> None:
        with contextlib.suppress(Exception):  # an unmeasured load: its outcome does not matter
            _export_once(gateway, url, deadline_s=seconds + 2.0)

    load = threading.Thread(target=export, daemon=True)
    load.start()
    time.sleep(0.5)
    error = py_spy_record(gateway.pid, seconds, out)
    load.join(timeout=seconds + 70)
    bench.profiles["export_1m"] = ProfileSummary(error=error) if error else summarize(out)


# --- scope (SPEC §7) ---------------------------------------------------------------------------

SCOPE_PAGE = 100
"""The first page's size in the ``scope`` scenario: the API's default page size."""
SCOPE_PAGING_LIMIT = 1000
SCOPE_MAX_PAGES = 400
"""Paging bound: the 100,000 annotations take 100 pages of 1,000."""


def scope_url(base: str, *, limit: int, cursor: str | None = None) -> str:
    params = [("scope", "all"), ("subject_kind", "session"), ("limit", str(limit))]
    if cursor is not None:
        params.append(("cursor", cursor))
    return f"{base}/v1/annotations?{urlencode(params)}"


def scope_ids_body() -> bytes:
    """The same data as the scope, asked by ids: the 10,000 session ids, same page size."""
    return orjson.dumps({"subject_ids": ds.SCOPE_IDS, "subject_kinds": ["session"], "limit": SCOPE_PAGE})


def phoenix_stats(bench: Bench) -> dict[str, Any]:
    assert bench.phoenix is not None
    with httpx.Client(timeout=30, trust_env=False) as client:
        stats: dict[str, Any] = client.get(bench.phoenix.base_url + "/_bench/stats").json()
    return stats


def phoenix_reset(bench: Bench) -> None:
    assert bench.phoenix is not None
    with httpx.Client(timeout=30, trust_env=False) as client:
        client.post(bench.phoenix.base_url + "/_bench/reset").raise_for_status()


def _phoenix_calls(stats: dict[str, Any]) -> dict[str, Any]:
    counters = stats.get("counters", {})
    return {
        "listing_window_ms": stats.get("listing_window_ms"),
        "listing_calls": int(counters.get("listings", 0)),
        "annotation_reads": int(counters.get("annotation_reads", 0)),
        "max_reads_in_flight": int(stats.get("max_in_flight", 0)),
    }


def _scope_answer(response: httpx.Response) -> dict[str, Any]:
    """:func:`describe_answer`, plus each source's ``scanned_subjects`` (scope answers only)."""
    answer = describe_answer(response)
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        scanned = {s.get("source"): s.get("scanned_subjects") for s in response.json().get("sources", [])}
        for source in answer.get("sources", []):
            source["scanned_subjects"] = scanned.get(source["source"])
    return answer


def start_scope_gateway(bench: Bench, name: str) -> ServerProcess:
    """A fresh gateway with the Phoenix source alone, reading project ``bench-scope``."""
    return start_gateway(bench, name, project=ds.SCOPE_PROJECT, datadog=False)


def _warm_up(gateway: ServerProcess) -> float:
    """One search of an id that exists nowhere, as in ``scale``: the first request's one-off costs
    (lazy imports, the first upstream connection) are then in neither measurement. It caches
    nothing the measured query reads."""
    times, _ = sequential_ms(
        gateway.base_url + "/v1/annotations/search",
        headers=auth_headers({"Content-Type": "application/json"}),
        repeat=1,
        method="POST",
        body=orjson.dumps({"subject_ids": ["warm-up-none"], "subject_kinds": ["session"]}),
    )
    return round(times[0], 1)


def _cold_first_page(bench: Bench, gateway: ServerProcess, kind: str) -> dict[str, Any]:
    """The first page of ``kind`` ("scope": ``GET ?scope=all``; "ids": ``POST /search`` with the
    10,000 ids), on ``gateway`` fresh from :func:`start_scope_gateway`."""
    warm_up_ms = _warm_up(gateway)
    rss_before = rss_kib(gateway.pid)
    cpu_before = gateway.cpu_seconds()
    phoenix_reset(bench)
    if kind == "scope":
        times, response = sequential_ms(
            scope_url(gateway.base_url, limit=SCOPE_PAGE), headers=auth_headers(), repeat=1
        )
    else:
        times, response = sequential_ms(
            gateway.base_url + "/v1/annotations/search",
            headers=auth_headers({"Content-Type": "application/json"}),
            repeat=1,
            method="POST",
            body=scope_ids_body(),
        )
    return {
        "wall_ms": round(times[0], 1),
        "answer": _scope_answer(response),
        "server_timing": response.headers.get("server-timing"),
        "upstream": _phoenix_calls(phoenix_stats(bench)),
        "gateway_cpu_s": round(gateway.cpu_seconds() - cpu_before, 2),
        "warm_up_ms": warm_up_ms,
        "rss_before_kib": rss_before,
        "rss_after_mib": round(rss_kib(gateway.pid) / 1024, 1),
    }


def scenario_scope(bench: Bench) -> None:
    """``scope=all`` over 10,000 sessions and 100,000 annotations (Phoenix only, see
    :mod:`bench.datasets`): the cold first page against the same data asked by ids, and the RSS
    growth of paging through the whole scope; README "scope" says how to read it."""
    rounds = max(1, int(bench.args.scope_rounds))
    if not bench.fits("scope", 90 + 25 * rounds):
        return
    assert bench.phoenix is not None
    latency = float(bench.args.scale_latency_ms)
    result: dict[str, Any] = {
        "sessions": len(ds.SCOPE_IDS),
        "annotations_expected": len(ds.SCOPE_IDS) * ds.SCOPE_PER_SUBJECT,
        "project": ds.SCOPE_PROJECT,
        "upstream_latency_ms": latency,
        "page_size": SCOPE_PAGE,
        "gateway_sources": [ds.PHOENIX_SOURCE],
    }
    bench.results["scope"] = result
    bench.log(
        f"scope: seeding {len(ds.SCOPE_IDS):,} Phoenix sessions x {ds.SCOPE_PER_SUBJECT} annotations "
        f"(project {ds.SCOPE_PROJECT})"
    )
    started = time.perf_counter()
    with httpx.Client(timeout=300, trust_env=False) as client:
        answer = client.post(
            bench.phoenix.base_url + "/_bench/seed",
            json=ds.phoenix_seed(ds.SCOPE_IDS, ds.SCOPE_PER_SUBJECT, project=ds.SCOPE_PROJECT),
        )
        answer.raise_for_status()
    result["seed"] = {
        "phoenix_rows": answer.json()["created"],
        "seconds": round(time.perf_counter() - started, 2),
    }
    set_latency(bench, latency)
    try:
        _scope_rounds(bench, result, rounds)
    finally:
        set_latency(bench, 0)


def _scope_rounds(bench: Bench, result: dict[str, Any], rounds: int) -> None:
    # Round 0 primes the stand-in (it memoizes each answer by query string, as in every other
    # scenario): each measured round then finds the upstream equally ready for both queries, and
    # the ratio compares the gateway's work, not the stand-in's first serialization of 100,000
    # rows on the gateway's core. Round 0 is reported, not used.
    measured: dict[str, list[dict[str, Any]]] = {"scope": [], "ids": []}
    kept: ServerProcess | None = None
    kept_first: dict[str, Any] | None = None
    try:
        for r in range(rounds + 1):
            order = ("scope", "ids") if r % 2 == 0 else ("ids", "scope")
            for kind in order:
                if bench.remaining() < 60:
                    bench.notes.append(f"scope round {r} ({kind}) skipped: time budget")
                    continue
                label = "priming (stand-in cold, not used)" if r == 0 else f"round {r}"
                bench.log(f"scope: {label}: cold gateway, first page of {kind}")
                gateway = start_scope_gateway(bench, f"gateway-scope-{kind}-{r}")
                keep = kind == "scope" and r == rounds
                try:
                    first = _cold_first_page(bench, gateway, kind)
                finally:
                    if not keep:
                        stop(bench, gateway)
                if r == 0:
                    result.setdefault("priming", {})[kind] = first
                else:
                    measured[kind].append(first)
                if keep:
                    kept, kept_first = gateway, first
        first_page: dict[str, Any] = {"rounds": dict(measured)}
        for kind, rows in measured.items():
            walls = [row["wall_ms"] for row in rows if row["answer"].get("status") == 200]
            first_page[f"{kind}_ms"] = round(statistics.median(walls), 1) if walls else None
            first_page[f"{kind}_ms_all"] = walls
        if first_page["scope_ms"] and first_page["ids_ms"]:
            first_page["ratio"] = round(first_page["scope_ms"] / first_page["ids_ms"], 3)
            pairs = zip(first_page["scope_ms_all"], first_page["ids_ms_all"], strict=False)
            first_page["ratio_by_round"] = [round(a / b, 3) for a, b in pairs]
        result["first_page"] = first_page
        if kept is not None and kept_first is not None:
            _scope_paging(bench, kept, kept_first, result)
            _profile_scope(bench, kept)
    finally:
        if kept is not None:
            stop(bench, kept)


def _scope_paging(
    bench: Bench, gateway: ServerProcess, first: dict[str, Any], result: dict[str, Any]
) -> None:
    """Page through the whole scope (limit 1,000, following ``next_cursor``) on the gateway whose
    cold first page was just measured; RSS before that first page → after the last page."""
    rss_before = int(first["rss_before_kib"])
    hwm_before = peak_rss_kib(gateway.pid)
    bench.log(f"scope: paging through the whole scope, limit {SCOPE_PAGING_LIMIT}, RSS sampled every 50 ms")
    phoenix_reset(bench)
    ids: set[str] = set()
    total = 0
    pages = 0
    cursor: str | None = None
    page_times: list[float] = []
    error: dict[str, Any] | None = None
    complete = False
    deadline = time.monotonic() + min(240.0, max(20.0, bench.remaining() - 60))
    cpu_before = gateway.cpu_seconds()
    started = time.perf_counter()
    with sampling_rss(gateway.pid) as series, httpx.Client(timeout=120, trust_env=False) as client:
        while pages < SCOPE_MAX_PAGES and time.monotonic() < deadline:
            t0 = time.perf_counter()
            page = client.get(
                scope_url(gateway.base_url, limit=SCOPE_PAGING_LIMIT, cursor=cursor), headers=auth_headers()
            )
            page_times.append((time.perf_counter() - t0) * 1000)
            pages += 1
            if page.status_code != 200:
                error = describe_answer(page)
                break
            body = page.json()
            total += len(body["data"])
            ids.update(item["id"] for item in body["data"])
            cursor = body.get("next_cursor")
            if not cursor:
                complete = True
                break
    wall = time.perf_counter() - started
    rss_after = rss_kib(gateway.pid)
    hwm_after = peak_rss_kib(gateway.pid)
    sampled_peak = max((kib for _, kib in series), default=rss_after)
    paging: dict[str, Any] = {
        "pages": pages,
        "annotations": total,
        "distinct_annotations": len(ids),
        "complete": complete,
        "wall_s": round(wall, 2),
        "page_p50_ms": round(statistics.median(page_times), 1) if page_times else None,
        "page_max_ms": round(max(page_times), 1) if page_times else None,
        "gateway_cpu_s": round(gateway.cpu_seconds() - cpu_before, 2),
        "upstream": _phoenix_calls(phoenix_stats(bench)),
        "rss_series_mib": [
            (round(t, 2), round(k / 1024, 1)) for t, k in series[:: max(1, len(series) // 40)]
        ],
    }
    if error is not None:
        paging["error"] = error
    result["paging"] = paging
    result["memory"] = {
        "rss_before_mib": round(rss_before / 1024, 1),
        "rss_after_first_page_mib": first["rss_after_mib"],
        "rss_after_paging_mib": round(rss_after / 1024, 1),
        "growth_mib": round((rss_after - rss_before) / 1024, 1),
        "sampled_peak_mib": round(sampled_peak / 1024, 1),
        "sampled_peak_growth_mib": round((sampled_peak - rss_before) / 1024, 1),
        "peak_rss_mib": round(hwm_after / 1024, 1),
        "hwm_rose": hwm_after > hwm_before,
        "annotations": total,
        "bytes_per_annotation": round((rss_after - rss_before) * 1024 / total) if total else None,
        "measured_after": "paging through every page" if complete else "paging stopped early (see paging)",
    }


SCOPE_PROFILE_MAX_REQUESTS = 20


def _profile_scope(bench: Bench, gateway: ServerProcess) -> None:
    """py-spy over the scope's first page asked again with ``no-cache`` (discovery and the first
    chunk's read both go upstream again, as on a cold gateway), repeated for ``--profile-s``
    seconds (at most 20 requests): an unmeasured run."""
    seconds = float(bench.args.profile_s)
    if seconds <= 0 or not bench.fits("profile_scope_first_page", seconds + 40):
        return
    bench.log(f"scope: the first page again under py-spy (no-cache, unmeasured, ~{seconds:.0f} s)")
    out = bench.work / "profile-scope.txt"
    spy = py_spy_start(gateway.pid, out, max_s=int(seconds) + 60)
    requests = 0
    walls: list[float] = []
    try:
        url = scope_url(gateway.base_url, limit=SCOPE_PAGE)
        deadline = time.monotonic() + seconds
        while requests < SCOPE_PROFILE_MAX_REQUESTS and time.monotonic() < deadline:
            times, _ = sequential_ms(url, headers=auth_headers(NO_CACHE), repeat=1)
            walls.append(round(times[0], 1))
            requests += 1
    except httpx.HTTPError as exc:  # an unmeasured run: its failure only costs the profile
        bench.notes.append(f"the profiled scope first page failed: {exc!r}")
    finally:
        bench.profiles["scope_first_page"] = py_spy_stop(spy, out)
    result = bench.results.get("scope")
    if isinstance(result, dict):
        result["profile_requests"] = requests
        result["profile_request_ms"] = walls


# --- metrics (SPEC §8) -------------------------------------------------------------------------

METRICS_GROUP_BY = ("name", "source")
METRICS_INTERVAL = "day"
METRICS_PROFILE_MAX_REQUESTS = 20
METRICS_RSS_PERIOD_S = 0.01
"""RSS sampling period during the metrics requests: a request of ~100 ms needs several samples."""


def metrics_ids() -> list[str]:
    """The 10,000 ids of ``scale``'s search: the 1,000 big sessions and 9,000 that exist nowhere."""
    return ds.BIG_IDS + ds.EMPTY_IDS


def metrics_expected() -> int:
    """Annotations of the big data set: 1,000 sessions x (50 Phoenix + 5 users x 10 labels)."""
    return len(ds.BIG_IDS) * (ds.PHOENIX_BIG_PER_SUBJECT + ds.DATADOG_BIG_USERS * len(ds.LABEL_SCHEMAS))


def metrics_body() -> bytes:
    return orjson.dumps(
        {
            "subject_ids": metrics_ids(),
            "subject_kinds": ["session"],
            "group_by": list(METRICS_GROUP_BY),
            "interval": METRICS_INTERVAL,
        }
    )


def _metrics_answer(response: httpx.Response, wall_ms: float) -> dict[str, Any]:
    """One metrics answer, checked: rows, the sum of ``count``, ``partial``, each source's status
    and whether it was answered from the cache."""
    out: dict[str, Any] = {
        "wall_ms": round(wall_ms, 1),
        "status": response.status_code,
        "server_timing": response.headers.get("server-timing"),
        "server_ms": server_timing(response.headers.get("server-timing")).get("gateway"),
        "bytes": len(response.content),
    }
    try:
        body = response.json()
    except ValueError:
        out["body"] = response.text[:300]
        return out
    if not isinstance(body, dict) or "rows" not in body:
        out["body"] = str(body)[:300]
        return out
    rows = body["rows"]
    out.update(
        rows=len(rows),
        count=sum(int(row.get("count") or 0) for row in rows),
        score_count=sum(int(row.get("score_count") or 0) for row in rows),
        buckets=sorted({str(row.get("bucket")) for row in rows}),
        partial=body.get("partial"),
        sources=[
            {k: s.get(k) for k in ("source", "status", "count", "cached", "stale", "elapsed_ms", "error")}
            for s in body.get("sources", [])
        ],
    )
    return out


def _metrics_ok(answer: dict[str, Any], expected: int) -> bool:
    return answer.get("status") == 200 and answer.get("partial") is False and answer.get("count") == expected


def scenario_metrics(bench: Bench) -> None:
    """``POST /v1/annotations/metrics`` over the 100,000 annotations of ``scale``'s data set
    (10,000 ids), grouped by name x source x day, once every annotation is in the gateway's
    cache: wall time (median of ``--metrics-runs``), Server-Timing, and the RSS growth across the
    requests; README "metrics" says how to read it."""
    runs = max(1, int(bench.args.metrics_runs))
    if not bench.fits("metrics", 90):
        return
    latency = float(bench.args.scale_latency_ms)
    result: dict[str, Any] = {
        "subject_ids": len(metrics_ids()),
        "annotations_expected": metrics_expected(),
        "group_by": list(METRICS_GROUP_BY),
        "interval": METRICS_INTERVAL,
        "upstream_latency_ms": latency,
        "runs_asked": runs,
    }
    bench.results["metrics"] = result
    if bench.big_seeded:
        result["seed"] = {"shared_with": "scale"}
    else:
        bench.log("metrics: seeding 1,000 sessions x (50 Phoenix + 50 Datadog) annotations")
        result["seed"] = seed(bench, big=True)
        bench.big_seeded = True
    set_latency(bench, latency)
    try:
        gateway = start_gateway(bench, "gateway-metrics")
        try:
            if _metrics_warm(bench, gateway, result):
                _metrics_runs(bench, gateway, result, runs)
                _profile_metrics(bench, gateway)
        finally:
            stop(bench, gateway)
    finally:
        set_latency(bench, 0)


def _metrics_warm(bench: Bench, gateway: ServerProcess, result: dict[str, Any]) -> bool:
    """Fill the gateway's cache as ``scale`` does: one warm-up search of an unknown id, then the
    10,000-id search (limit 1,000) paged through to its last page. True when every expected
    annotation was paged through."""
    warm_up_ms = _warm_up(gateway)
    rss_before = rss_kib(gateway.pid)
    ids = metrics_ids()
    url = gateway.base_url + "/v1/annotations/search"
    headers = auth_headers({"Content-Type": "application/json"})
    bench.log(f"metrics: warming the cache: POST /v1/annotations/search with {len(ids):,} ids, every page")
    total = 0
    pages = 0
    cursor: str | None = None
    complete = False
    error: dict[str, Any] | None = None
    page_times: list[float] = []
    started = time.perf_counter()
    deadline = time.monotonic() + min(120.0, max(20.0, bench.remaining() - 60))
    with httpx.Client(timeout=120, trust_env=False) as client:
        while pages < 500 and time.monotonic() < deadline:
            request: dict[str, Any] = {"subject_ids": ids, "subject_kinds": ["session"], "limit": 1000}
            if cursor is not None:
                request["cursor"] = cursor
            t0 = time.perf_counter()
            page = client.post(url, headers=headers, content=orjson.dumps(request))
            page_times.append((time.perf_counter() - t0) * 1000)
            pages += 1
            if page.status_code != 200:
                error = describe_answer(page)
                break
            data = page.json()
            if data.get("partial"):
                error = {"partial": True, "sources": data.get("sources")}
                break
            total += len(data["data"])
            cursor = data.get("next_cursor")
            if not cursor:
                complete = True
                break
    time.sleep(0.5)  # let the last page's buffers go before the warm level is read
    warm: dict[str, Any] = {
        "warm_up_ms": warm_up_ms,
        "first_page_ms": round(page_times[0], 1) if page_times else None,
        "pages": pages,
        "annotations": total,
        "complete": complete and total == result["annotations_expected"],
        "wall_s": round(time.perf_counter() - started, 2),
        "page_p50_ms": round(statistics.median(page_times[1:]), 1) if len(page_times) > 1 else None,
        "rss_before_mib": round(rss_before / 1024, 1),
        "rss_warm_mib": round(rss_kib(gateway.pid) / 1024, 1),
        "peak_rss_mib": round(peak_rss_kib(gateway.pid) / 1024, 1),
    }
    if error is not None:
        warm["error"] = error
    result["warm"] = warm
    if not warm["complete"]:
        bench.notes.append(
            f"metrics: the cache was not warmed completely ({total:,} annotations paged, "
            f"{result['annotations_expected']:,} expected): nothing measured"
        )
    return bool(warm["complete"])


def _metrics_runs(bench: Bench, gateway: ServerProcess, result: dict[str, Any], runs: int) -> None:
    """``runs`` sequential metrics requests on the warm gateway, RSS sampled every 10 ms."""
    body = metrics_body()
    url = gateway.base_url + "/v1/annotations/metrics"
    headers = auth_headers({"Content-Type": "application/json"})
    expected = int(result["annotations_expected"])
    bench.log(
        f"metrics: {runs} x POST /v1/annotations/metrics, group_by {'+'.join(METRICS_GROUP_BY)}, "
        f"interval {METRICS_INTERVAL}, on the warm cache"
    )
    reset_upstream_counts(bench)
    rss_warm = rss_kib(gateway.pid)
    hwm_warm = peak_rss_kib(gateway.pid)
    cpu_before = gateway.cpu_seconds()
    answers: list[dict[str, Any]] = []
    rss_after_each: list[float] = []
    ours = [gateway, *upstreams(bench)]
    with (
        sampling_rss(gateway.pid, METRICS_RSS_PERIOD_S) as series,
        httpx.Client(timeout=120, trust_env=False) as client,
    ):
        for _ in range(runs):
            own_before = [server.cpu_seconds() for server in ours]
            core_before = core_busy_seconds()
            t0 = time.perf_counter()
            response = client.post(url, headers=headers, content=body)
            response.read()
            wall = (time.perf_counter() - t0) * 1000
            core = core_busy_seconds() - core_before
            own = [server.cpu_seconds() - before for server, before in zip(ours, own_before, strict=True)]
            answer = _metrics_answer(response, wall)
            # The gateway's CPU time (10 ms ticks), and the share of core 0 that processes the
            # bench did not start used meanwhile (the machine is shared: see README).
            answer["gateway_cpu_ms"] = round(own[0] * 1000, 0)
            answer["core0_foreign_pct"] = round(max(0.0, core - sum(own)) / (wall / 1000) * 100, 0)
            answers.append(answer)
            rss_after_each.append(round(rss_kib(gateway.pid) / 1024, 1))
    cpu_s = gateway.cpu_seconds() - cpu_before
    rss_after = rss_kib(gateway.pid)
    hwm_after = peak_rss_kib(gateway.pid)
    calls = upstream_counts(bench)
    sampled_peak = max((kib for _, kib in series), default=rss_after)
    ok = [a for a in answers if _metrics_ok(a, expected)]
    walls = [a["wall_ms"] for a in ok]
    servers = [a["server_ms"] for a in ok if a.get("server_ms") is not None]
    upstream = calls["phoenix_calls"] + calls["datadog_calls"]
    last = answers[-1]
    result.update(
        runs=answers,
        complete=len(ok) == len(answers),
        wall_ms=round(statistics.median(walls), 1) if walls else None,
        wall_ms_all=[a["wall_ms"] for a in answers],
        wall_ms_min=min(walls) if walls else None,
        core0_foreign_pct_all=[a["core0_foreign_pct"] for a in answers],
        gateway_cpu_ms_all=[a["gateway_cpu_ms"] for a in answers],
        server_ms=round(statistics.median(servers), 1) if servers else None,
        server_ms_all=[a.get("server_ms") for a in answers],
        gateway_cpu_ms_per_request=round(cpu_s * 1000 / len(answers), 1),
        upstream=calls,
        all_from_cache=upstream == 0 and all(s.get("cached") for a in answers for s in a.get("sources", [])),
        answer={
            k: last.get(k)
            for k in ("status", "rows", "count", "score_count", "buckets", "partial", "sources", "bytes")
        },
    )
    growth = [sampled_peak - rss_warm, rss_after - rss_warm]
    if hwm_after > hwm_warm:
        growth.append(hwm_after - rss_warm)
    result["memory"] = {
        "rss_warm_mib": round(rss_warm / 1024, 1),
        "rss_after_mib": round(rss_after / 1024, 1),
        "rss_after_each_mib": rss_after_each,
        "sampled_peak_mib": round(sampled_peak / 1024, 1),
        "samples": len(series),
        "hwm_warm_mib": round(hwm_warm / 1024, 1),
        "hwm_after_mib": round(hwm_after / 1024, 1),
        "hwm_rose": hwm_after > hwm_warm,
        "growth_mib": round(max(growth) / 1024, 1),
        "after_growth_mib": round((rss_after - rss_warm) / 1024, 1),
        "rss_series_mib": [
            (round(t, 2), round(k / 1024, 1)) for t, k in series[:: max(1, len(series) // 40)]
        ],
    }
    if not result["complete"]:
        bad = [a for a in answers if not _metrics_ok(a, expected)]
        first_bad = str({k: bad[0].get(k) for k in ("status", "partial", "count", "body")})[:300]
        bench.notes.append(
            f"metrics: {len(bad)} of {len(answers)} answers were not complete (status, partial or "
            f"count != {expected:,}): first {first_bad}"
        )


def _profile_metrics(bench: Bench, gateway: ServerProcess) -> None:
    """py-spy over the same metrics request on the same warm gateway, repeated for
    ``--profile-s`` seconds (at most 20 requests): an unmeasured run."""
    seconds = float(bench.args.profile_s)
    if seconds <= 0 or not bench.fits("profile_metrics_100k", seconds + 40):
        return
    bench.log(f"metrics: the metrics request again under py-spy (unmeasured, ~{seconds:.0f} s)")
    out = bench.work / "profile-metrics.txt"
    spy = py_spy_start(gateway.pid, out, max_s=int(seconds) + 60)
    walls: list[float] = []
    try:
        deadline = time.monotonic() + seconds
        body = metrics_body()
        headers = auth_headers({"Content-Type": "application/json"})
        url = gateway.base_url + "/v1/annotations/metrics"
        while len(walls) < METRICS_PROFILE_MAX_REQUESTS and time.monotonic() < deadline:
            times, _ = sequential_ms(url, headers=headers, repeat=1, method="POST", body=body)
            walls.append(round(times[0], 1))
    except httpx.HTTPError as exc:  # an unmeasured run: its failure only costs the profile
        bench.notes.append(f"the profiled metrics request failed: {exc!r}")
    finally:
        bench.profiles["metrics_100k"] = py_spy_stop(spy, out)
    result = bench.results.get("metrics")
    if isinstance(result, dict):
        result["profile_requests"] = len(walls)
        result["profile_request_ms"] = walls


def git_commit() -> str:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=10,
            check=False,
        )
        return done.stdout.strip() or "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


SCENARIOS = ("throughput", "overhead", "naive", "scale", "export_1m", "workers", "scope", "metrics", "redis")

RESULT_SCENARIO = {
    "hello": "throughput",
    "hello_answer": "throughput",
    "cache_hit": "throughput",
    "reference": "throughput",
    "cache_miss": "throughput",
    "profile_cache_hit": "throughput",
    "profile_cache_miss": "throughput",
    "overhead": "overhead",
    "profile_overhead": "overhead",
    "naive": "naive",
    "scale": "scale",
    "export": "scale",
    "profile_search_10k": "scale",
    "export_1m": "export_1m",
    "profile_export_1m": "export_1m",
    "workers": "workers",
    "scope": "scope",
    "profile_scope_first_page": "scope",
    "metrics": "metrics",
    "profile_metrics_100k": "metrics",
    "redis": "redis",
}
"""Which scenario writes each key of ``results`` (what a partial run may carry over)."""
PROFILE_SCENARIO = {
    "cache_hit": "throughput",
    "cache_miss": "throughput",
    "overhead": "overhead",
    "search_10k": "scale",
    "export_1m": "export_1m",
    "scope_first_page": "scope",
    "metrics_100k": "metrics",
}


def carry_over(
    path: Path, ran: set[str], results: dict[str, Any], profiles: dict[str, ProfileSummary]
) -> dict[str, dict[str, str]]:
    """A partial run (``--only``) into an existing report keeps the earlier results (and
    profiles) of the scenarios it did not run, so that ``latest.json`` → ``ratios`` stays whole;
    returns when and at which commit each carried scenario was measured."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    meta = old.get("meta") or {}
    runs = meta.get("scenario_runs") or {}
    carried: dict[str, dict[str, str]] = {}
    for name in meta.get("scenarios") or []:
        if name in ran or name not in SCENARIOS:
            continue
        carried[name] = runs.get(name) or {"date": meta.get("date", "?"), "commit": meta.get("commit", "?")}
    for key, value in (old.get("results") or {}).items():
        if RESULT_SCENARIO.get(key) in carried and key not in results:
            results[key] = value
    for key, value in (old.get("profiles") or {}).items():
        if PROFILE_SCENARIO.get(key) in carried and key not in profiles:
            profiles[key] = ProfileSummary.from_dict(value)
    return carried


def snapshot_code(commit: str, work: Path) -> tuple[dict[str, str], dict[str, Any]]:
    """``src/`` of ``commit`` extracted into ``work`` (``git archive``): the environment that
    makes the project's processes import it instead of the working tree (whose ``src/`` may be
    mid-edit by someone else), and what the report says about it."""
    done = subprocess.run(
        ["git", "rev-parse", "--verify", f"{commit}^{{commit}}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=10,
        check=True,
    )
    full = done.stdout.strip()
    target = work / "gateway-code"
    target.mkdir()
    archive = subprocess.run(
        ["git", "archive", "--format=tar", full, "src"], capture_output=True, cwd=ROOT, timeout=60, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, timeout=60, check=True)
    env = {"PYTHONPATH": str(target / "src")}
    probe = subprocess.run(
        [PYTHON, "-c", "import annotation_gateway; print(annotation_gateway.__file__)"],
        capture_output=True,
        text=True,
        env=dict(os.environ) | env,
        timeout=60,
        check=False,
    )
    imported = probe.stdout.strip()
    if not imported.startswith(str(target)):
        raise RuntimeError(f"the snapshot of {commit} is not what Python imports: {imported or probe.stderr}")
    return env, {"commit": full[:12], "snapshot": True}


def worktree_changes() -> list[str]:
    """Files changed in the working tree outside ``bench/`` when the run started (``git status``):
    the code measured is then not exactly the commit named in the report."""
    try:
        done = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    changed = [line[3:] for line in done.stdout.splitlines() if len(line) > 3]
    return [path for path in changed if not path.startswith("bench/")]


def selected_scenarios(args: argparse.Namespace) -> set[str]:
    chosen = {name.strip() for name in args.only.split(",") if name.strip()} if args.only else set(SCENARIOS)
    unknown = chosen - set(SCENARIOS)
    if unknown:
        known = ", ".join(SCENARIOS)
        raise SystemExit(f"--only: unknown scenario(s) {', '.join(sorted(unknown))}; known: {known}")
    if args.skip_scale:
        chosen.discard("scale")
    if args.skip_export_1m:
        chosen.discard("export_1m")
    return chosen


def run(args: argparse.Namespace) -> int:
    pin_self_to_client_core()
    scenarios = selected_scenarios(args)
    if scenarios & {"throughput", "overhead", "workers"} and not wrk_available():
        print("wrk is not installed: `apt-get install -y wrk` (make bench does it)", file=sys.stderr)
        return 2
    started = time.monotonic()
    changes = worktree_changes()
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp, contextlib.ExitStack() as stack:
        bench = Bench(args=args, work=Path(tmp), deadline=started + args.budget_s, stack=stack)
        bench.notes += NOTES
        code: dict[str, Any] = {"commit": git_commit(), "snapshot": False}
        if args.gateway_commit:
            bench.code_env, code = snapshot_code(args.gateway_commit, bench.work)
        try:
            bench.phoenix = start_phoenix(bench)
            bench.datadog = start_datadog(bench)
            bench.results["seed_hot"] = seed(bench, big=False)

            def gateway_scenarios() -> None:
                gateway = start_gateway(bench, "gateway")
                try:
                    if "throughput" in scenarios:
                        hello = start_hello(bench, cache_hit_body(gateway))
                        reference = start_reference(bench)
                        try:
                            _guard(
                                bench,
                                "throughput",
                                lambda: scenario_throughput(bench, hello, reference, gateway),
                            )
                        finally:
                            stop(bench, hello)
                            stop(bench, reference)
                    if "overhead" in scenarios:
                        _guard(bench, "overhead", lambda: scenario_overhead(bench, gateway))
                    if "naive" in scenarios:
                        _guard(bench, "naive", lambda: scenario_naive(bench, gateway))
                finally:
                    stop(bench, gateway)

            if scenarios & {"throughput", "overhead", "naive"}:
                _guard(bench, "gateway", gateway_scenarios)
            if "scale" in scenarios:
                _guard(bench, "scale", lambda: scenario_scale(bench))
            if "export_1m" in scenarios:
                _guard(bench, "export_1m", lambda: scenario_export_1m(bench))
            if "workers" in scenarios:
                from bench.workers import scenario_workers  # bench.workers imports this module

                _guard(bench, "workers", lambda: scenario_workers(bench))
            if "scope" in scenarios:
                _guard(bench, "scope", lambda: scenario_scope(bench))
            if "metrics" in scenarios:
                _guard(bench, "metrics", lambda: scenario_metrics(bench))
            if "redis" in scenarios:
                # Imported here: bench.redis_tier builds on this module's helpers.
                from bench.redis_tier import scenario_redis

                _guard(bench, "redis", lambda: scenario_redis(bench))
        finally:
            bench.stack.close()
        elapsed = time.monotonic() - started
        out_dir = Path(args.out)
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        commit = str(code["commit"])
        runs = {name: {"date": now, "commit": commit} for name in SCENARIOS if name in scenarios}
        carried: dict[str, dict[str, str]] = {}
        if args.only and not args.no_carry_over:
            carried = carry_over(out_dir / f"{args.name}.json", scenarios, bench.results, bench.profiles)
            runs.update(carried)
        r = ratios(bench.results)
        report: dict[str, Any] = {
            "meta": {
                "date": now,
                "machine": platform.platform(),
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "commit": commit,
                "worktree_changes": [] if code["snapshot"] else changes,
                "code_snapshot": bool(code["snapshot"]),
                "duration_s": bench.dur,
                "warmup_s": 2.0,
                "rounds": args.rounds,
                "connections": args.connections,
                "elapsed_s": round(elapsed, 1),
                "gateway_launcher": bench.gateway_launcher,
                "scenarios": [name for name in SCENARIOS if name in runs],
                "scenario_runs": runs,
                "carried_over": sorted(carried),
                "export_annotations": args.export_annotations,
                "notes": bench.notes,
            },
            "ratios": r,
            "verdicts": verdicts(r),
            "results": bench.results,
            "profiles": {k: v.as_dict() for k, v in bench.profiles.items()},
            "analysis": _analysis_text(args),
        }
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / f"{args.name}.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        (out_dir / f"{args.name}.md").write_text(markdown(report, bench.profiles))
        print(f"wrote {out_dir / (args.name + '.md')} and .json in {elapsed:.0f} s")
        for v in report["verdicts"]:
            flag = "<-- NOT MET" if v["met"] is False else ""
            print(f"  {v['what']}: {fmt(v['value'])} (target {v['target']}) {flag}")
    return 0


def _analysis_text(args: argparse.Namespace) -> str:
    path = Path(args.analysis) if args.analysis else None
    if path is not None and path.exists():
        return path.read_text().strip()
    return ""


def _guard(bench: Bench, name: str, step: Callable[[], None]) -> None:
    """Run one scenario; a failure is recorded in the report instead of ending the run."""
    try:
        step()
    except Exception as exc:
        bench.log(f"{name} failed: {exc!r}")
        entry = bench.results.setdefault(name, {})
        if isinstance(entry, dict):
            entry["error"] = f"{type(exc).__name__}: {exc}"
            entry["traceback"] = traceback.format_exc()[-3000:]


def render_only(args: argparse.Namespace) -> int:
    """Re-render ``<name>.md`` from ``<name>.json`` (e.g. after editing the analysis file)."""
    out_dir = Path(args.out)
    json_path = out_dir / f"{args.name}.json"
    report = json.loads(json_path.read_text())
    report["analysis"] = _analysis_text(args)
    report["ratios"] = ratios(report["results"])  # the current targets and keys
    report["verdicts"] = verdicts(report["ratios"])
    profiles = {k: ProfileSummary.from_dict(v) for k, v in report.get("profiles", {}).items()}
    json_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out_dir / f"{args.name}.md").write_text(markdown(report, profiles))
    print(f"re-rendered {out_dir / (args.name + '.md')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the gateway benchmarks (bench/README.md).")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per measured wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the throughput runs")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections for throughput runs")
    parser.add_argument("--budget-s", type=float, default=900.0, help="time budget of the whole run")
    parser.add_argument("--profile-s", type=float, default=6.0, help="py-spy seconds per profile (0: none)")
    parser.add_argument(
        "--scale-latency-ms", type=float, default=50.0, help="upstream latency in the 10k search"
    )
    parser.add_argument(
        "--scope-rounds",
        type=int,
        default=3,
        help="measured rounds of the scope scenario's cold first pages (each on fresh gateways)",
    )
    parser.add_argument(
        "--metrics-runs",
        type=int,
        default=5,
        help="sequential metrics requests measured on the warm cache (the median is reported)",
    )
    parser.add_argument(
        "--gateway-commit",
        default="",
        help="run the gateway and simulator from this commit's src/ (a git archive snapshot) "
        "instead of the working tree",
    )
    parser.add_argument(
        "--no-carry-over",
        action="store_true",
        help="with --only: write only this run's scenarios (default: keep the report's others)",
    )
    parser.add_argument("--skip-scale", action="store_true", help="leave out the scale scenario")
    parser.add_argument(
        "--skip-export-1m", action="store_true", help="leave out the 1,000,000-annotation export"
    )
    parser.add_argument(
        "--export-annotations",
        type=int,
        default=ds.EXPORT_ANNOTATIONS,
        help="annotations in the export_1m scenario (sessions of 1,000; smaller for a quick check)",
    )
    parser.add_argument(
        "--only",
        default="",
        help=f"comma-separated scenarios to run (default all): {','.join(SCENARIOS)}",
    )
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--name", default="latest", help="report file name (without extension)")
    parser.add_argument(
        "--analysis", default=str(RESULTS / "analysis.md"), help="hand-written analysis to include"
    )
    parser.add_argument(
        "--render-only", action="store_true", help="re-render the .md from the .json (no measuring)"
    )
    args = parser.parse_args(argv)
    return render_only(args) if args.render_only else run(args)


if __name__ == "__main__":
    sys.exit(main())
