"""``make soak``: 60 s of mixed load while the Datadog upstream flaps between healthy and failing.

Starts the Phoenix stand-in, the Datadog simulator and the gateway (pinned to core 0, as in
``bench/run.py``), then runs a bounded asyncio/aiohttp client on core 1: ``--concurrency``
workers (default 16) issuing a mix of cached queries, ``no-cache`` fan-outs, queries over random
sets of 1,000 seeded sessions, 200-id searches, ``/v1/sources``, ``/metrics``, ``/healthz`` and
``/readyz`` for ``--duration`` seconds (default 60; every worker also stops after
``--max-requests``), after ``--warmup`` seconds (default 15) of the same mix with both upstreams
healthy, not counted, so that steadiness is judged once the cache has its working set.
Meanwhile the simulator is flipped every ``--flap-s`` seconds (default 5) between healthy and
one fault in turn: 500s, 503s, answers slower than the gateway's timeout, 429 rate limiting,
502s.

Checked and reported in ``bench/results/soak.md`` (and ``soak.json``):

- **zero 5xx** from the gateway on the data routes: a failing Datadog gives ``200`` with
  ``partial: true`` (or a stale cached answer); ``/readyz`` answers are counted apart, since a
  readiness probe saying 503 while a source is down is its job;
- **memory and file descriptors steady**: the gateway's RSS (``VmRSS``) and open fds
  (``/proc/<pid>/fd``) sampled every second; steady = the last 10 s within 10 % (RSS) or +16
  (fds) of seconds 10-20, after warm-up;
- **recovery**: once the faults stop, a ``no-cache`` query answers both sources ``ok`` again
  (circuit breaker closed), polled for at most 30 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import itertools
import json
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import httpx
import orjson

from bench import datasets as ds
from bench.harness import open_fds, pin_self_to_client_core, rss_kib
from bench.run import RESULTS, Bench, git_commit, seed, start_datadog, start_gateway, start_phoenix

FAULTS: list[tuple[str, dict[str, Any]]] = [
    ("500s", {"fail_rate": 1.0, "fail_status": 500}),
    ("503s", {"fail_rate": 1.0, "fail_status": 503}),
    ("slower than the timeout", {"latency_ms": 2500}),
    ("429 rate limited", {"rate_limit": "1/30s"}),
    ("502s", {"fail_rate": 1.0, "fail_status": 502}),
]
HEALTHY: dict[str, Any] = {"fail_rate": 0.0, "fail_status": 500, "latency_ms": 0, "rate_limit": None}
DATA_ROUTES = (
    "annotations_hot",
    "annotations_miss",
    "annotations_big",
    "search",
    "sources",
    "metrics",
    "healthz",
)


@dataclass
class Tally:
    status: Counter[str] = field(default_factory=Counter)
    by_route: dict[str, Counter[str]] = field(default_factory=dict)
    partial: int = 0
    stale: int = 0
    source_errors: Counter[str] = field(default_factory=Counter)
    transport_errors: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    timeline: list[tuple[float, float]] = field(default_factory=list)
    """(seconds since the tally's start when the request began, its latency in ms)."""
    five_xx_examples: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def add(self, route: str, status: int, elapsed_ms: float, body: bytes | None) -> None:
        key = str(status)
        self.by_route.setdefault(route, Counter())[key] += 1
        if route != "readyz":
            self.status[key] += 1
            if status >= 500 and len(self.five_xx_examples) < 10:
                self.five_xx_examples.append(f"{route} {status} {(body or b'')[:300]!r}")
        if len(self.latencies_ms) < 200_000:
            self.latencies_ms.append(elapsed_ms)
            began = time.monotonic() - self.started - elapsed_ms / 1000
            self.timeline.append((began, elapsed_ms))
        if body and route.startswith(("annotations", "search")) and status == 200:
            answer = orjson.loads(body)
            if answer.get("partial"):
                self.partial += 1
            for source in answer.get("sources", []):
                if source.get("stale"):
                    self.stale += 1
                if source.get("status") == "error":
                    code = (source.get("error") or {}).get("code", "?")
                    self.source_errors[f"{source.get('source')}:{code}"] += 1


def _url(base: str, path: str, params: list[tuple[str, str]]) -> str:
    return f"{base}{path}?{urlencode(params)}" if params else f"{base}{path}"


def pick_request(base: str, rng: random.Random) -> tuple[str, str, str, bytes | None, dict[str, str]]:
    """(route label, method, url, body, extra headers) of one request of the mix."""
    roll = rng.random()
    hot = [("subject_id", s) for s in ds.HOT_IDS] + [("subject_kind", "session")]
    if roll < 0.35:
        return "annotations_hot", "GET", _url(base, "/v1/annotations", hot), None, {}
    if roll < 0.50:
        return (
            "annotations_miss",
            "GET",
            _url(base, "/v1/annotations", hot),
            None,
            {"Cache-Control": "no-cache"},
        )
    if roll < 0.70:
        ids = rng.sample(ds.BIG_IDS, 5)
        params = [("subject_id", s) for s in ids] + [("limit", "100")]
        return "annotations_big", "GET", _url(base, "/v1/annotations", params), None, {}
    if roll < 0.80:
        ids = rng.sample(ds.BIG_IDS, 100) + rng.sample(ds.EMPTY_IDS, 100)
        body = orjson.dumps({"subject_ids": ids, "limit": 200})
        return "search", "POST", base + "/v1/annotations/search", body, {"Content-Type": "application/json"}
    if roll < 0.87:
        return "sources", "GET", base + "/v1/sources", None, {}
    if roll < 0.92:
        return "metrics", "GET", base + "/metrics", None, {}
    if roll < 0.96:
        return "healthz", "GET", base + "/healthz", None, {}
    return "readyz", "GET", base + "/readyz", None, {}


async def worker(
    base: str,
    session: aiohttp.ClientSession,
    tally: Tally,
    deadline: float,
    seed_value: int,
    max_requests: int,
) -> None:
    rng = random.Random(seed_value)
    auth = {"Authorization": f"Bearer {ds.GATEWAY_KEY}"}
    for _ in range(max_requests):
        if time.monotonic() >= deadline:
            return
        route, method, url, body, extra = pick_request(base, rng)
        started = time.perf_counter()
        try:
            async with session.request(method, url, data=body, headers=auth | extra) as response:
                payload = await response.read()
                tally.add(route, response.status, (time.perf_counter() - started) * 1000, payload)
        except (aiohttp.ClientError, TimeoutError) as exc:
            tally.transport_errors[f"{route}:{type(exc).__name__}"] += 1


async def _configure(session: aiohttp.ClientSession, simulator_url: str, switches: dict[str, Any]) -> None:
    """Set the simulator's switches; a pooled connection the server closed is retried (twice)."""
    for attempt in range(3):
        try:
            async with session.post(simulator_url + "/_simulator/config", json=switches) as response:
                response.raise_for_status()
                return
        except aiohttp.ClientConnectionError:
            if attempt == 2:
                raise


async def flapper(simulator_url: str, deadline: float, period_s: float, log: list[dict[str, Any]]) -> None:
    """Healthy, fault 1, healthy, fault 2, ...: one change every ``period_s`` until the deadline."""
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        for step in range(10_000):  # bounded by the deadline too
            if time.monotonic() + period_s > deadline:
                break
            if step % 2 == 0:
                name, switches = "healthy", HEALTHY
            else:
                name, fault = FAULTS[(step // 2) % len(FAULTS)]
                switches = HEALTHY | fault
            await _configure(session, simulator_url, switches)
            log.append({"t": round(time.monotonic() - started, 1), "datadog": name})
            await asyncio.sleep(period_s)
        await _configure(session, simulator_url, HEALTHY)
        log.append({"t": round(time.monotonic() - started, 1), "datadog": "healthy (end)"})


async def sampler(pid: int, deadline: float, tally: Tally, out: list[dict[str, Any]]) -> None:
    started = time.monotonic()
    for _ in range(100_000):  # bounded by the deadline too
        total = sum(tally.status.values())
        five = sum(n for s, n in tally.status.items() if s.startswith("5"))
        out.append(
            {
                "t": round(time.monotonic() - started, 1),
                "rss_mib": round(rss_kib(pid) / 1024, 1),
                "fds": open_fds(pid),
                "requests": total,
                "5xx": five,
            }
        )
        if time.monotonic() >= deadline:
            return
        await asyncio.sleep(1.0)


async def warm_up(args: argparse.Namespace, gateway_url: str) -> int:
    """The same mix for ``--warmup`` seconds, upstreams healthy, not counted: fills the cache and
    the gateway's other long-lived structures, so that steadiness is judged on a steady state."""
    tally = Tally()
    deadline = time.monotonic() + args.warmup
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        await asyncio.gather(
            *(
                worker(gateway_url, session, tally, deadline, 1000 + i, args.max_requests)
                for i in range(args.concurrency)
            )
        )
    return sum(tally.status.values())


async def load(args: argparse.Namespace, gateway_url: str, simulator_url: str, pid: int) -> dict[str, Any]:
    tally = Tally()
    samples: list[dict[str, Any]] = []
    flaps: list[dict[str, Any]] = []
    deadline = time.monotonic() + args.duration
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    started = time.monotonic()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(
            sampler(pid, deadline, tally, samples),
            flapper(simulator_url, deadline, args.flap_s, flaps),
            *(
                worker(gateway_url, session, tally, deadline, i, args.max_requests)
                for i in range(args.concurrency)
            ),
        )
    elapsed = time.monotonic() - started
    return {"tally": tally, "samples": samples, "flaps": flaps, "elapsed_s": elapsed}


def wait_recovered(gateway_url: str, budget_s: float = 30.0) -> dict[str, Any]:
    """Poll a no-cache query until both sources answer ok (the circuit closed again)."""
    params = [("subject_id", s) for s in ds.HOT_IDS] + [("subject_kind", "session")]
    url = _url(gateway_url, "/v1/annotations", params)
    headers = {"Authorization": f"Bearer {ds.GATEWAY_KEY}", "Cache-Control": "no-cache"}
    started = time.monotonic()
    last: Any = None
    with httpx.Client(timeout=30, trust_env=False) as client:
        for _ in range(300):
            response = client.get(url, headers=headers)
            last = {"status": response.status_code}
            if response.status_code == 200:
                body = response.json()
                last["sources"] = {s["source"]: s["status"] for s in body["sources"]}
                if all(s["status"] == "ok" for s in body["sources"]) and not body["partial"]:
                    return {"recovered": True, "after_s": round(time.monotonic() - started, 1), "last": last}
            if time.monotonic() - started > budget_s:
                break
            time.sleep(0.5)
    return {"recovered": False, "after_s": round(time.monotonic() - started, 1), "last": last}


def phases(tally: Tally, flaps: list[dict[str, Any]], end_s: float) -> list[dict[str, Any]]:
    """Requests and latency per flap phase (by the time each request began)."""
    out = []
    bounds = [*flaps, {"t": end_s, "datadog": "end"}]
    for phase, nxt in itertools.pairwise(bounds):
        lat = sorted(ms for began, ms in tally.timeline if phase["t"] <= began < nxt["t"])
        if not lat:
            out.append({"from_s": phase["t"], "datadog": phase["datadog"], "requests": 0})
            continue
        out.append(
            {
                "from_s": phase["t"],
                "datadog": phase["datadog"],
                "requests": len(lat),
                "p50_ms": round(lat[len(lat) // 2], 1),
                "p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))], 1),
                "max_ms": round(lat[-1], 1),
            }
        )
    return out


def steadiness(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Steady = the second half of the run adds ≤ 5 % RSS and ≤ 16 fds (last 10 s vs s 25-35)."""
    early = [s for s in samples if 25 <= s["t"] < 35]
    late = samples[-10:]
    if not early or not late:
        return {"verdict": "too short to judge"}
    rss_early = statistics.median(s["rss_mib"] for s in early)
    rss_late = statistics.median(s["rss_mib"] for s in late)
    fds_early = max(s["fds"] for s in early)
    fds_late = max(s["fds"] for s in late)
    rss_ok = rss_late <= rss_early * 1.05
    fds_ok = fds_late <= fds_early + 16
    return {
        "rss_mib_s25_35": rss_early,
        "rss_mib_last10": rss_late,
        "rss_growth_pct": round(100 * (rss_late - rss_early) / rss_early, 1) if rss_early else None,
        "rss_min_mib": min(s["rss_mib"] for s in samples),
        "rss_max_mib": max(s["rss_mib"] for s in samples),
        "fds_s25_35_max": fds_early,
        "fds_last10_max": fds_late,
        "fds_min": min(s["fds"] for s in samples),
        "fds_max": max(s["fds"] for s in samples),
        "rss_steady": rss_ok,
        "fds_steady": fds_ok,
    }


def render(report: dict[str, Any]) -> str:
    t = report["totals"]
    st = report["steadiness"]
    rec = report["recovery"]
    lines = ["# annotation-gateway soak", ""]
    lines.append(
        f"Run {report['date']}, commit `{report['commit']}`: {report['duration_s']:.0f} s of mixed "
        f"load from {report['concurrency']} concurrent clients (aiohttp, core 1) against the gateway "
        f"(core 0), while the Datadog simulator flapped every {report['flap_s']:.0f} s between "
        f"healthy and a fault."
    )
    lines += ["", "## Verdict", "", "| check | result | met |", "|---|---|:---:|"]
    five = t["5xx"]
    lines.append(
        f"| zero 5xx from the gateway (data routes) | {five} of {t['requests']:,} | {_yes(five == 0)} |"
    )
    lines.append(
        f"| no transport errors | {sum(t['transport_errors'].values())} | {_yes(not t['transport_errors'])} |"
    )
    lines.append(
        f"| RSS steady over the second half (last 10 s vs s 25-35, ≤ +5 %) | {st.get('rss_mib_s25_35')} → "
        f"{st.get('rss_mib_last10')} MiB ({st.get('rss_growth_pct')} %) | {_yes(st.get('rss_steady'))} |"
    )
    lines.append(
        f"| open fds steady (last 10 s vs s 25-35, ≤ +16) | {st.get('fds_s25_35_max')} → "
        f"{st.get('fds_last10_max')} "
        f"(min {st.get('fds_min')}, max {st.get('fds_max')}) | {_yes(st.get('fds_steady'))} |"
    )
    lines.append(
        f"| recovers when the faults stop | after {rec['after_s']} s: {rec['last']} "
        f"| {_yes(rec['recovered'])} |"
    )
    lines += ["", "## Traffic", ""]
    lines.append(
        f"{t['requests']:,} requests on data routes ({t['rps']:.0f} req/s), latency p50 "
        f"{t['p50_ms']:.1f} ms, p99 {t['p99_ms']:.1f} ms, max {t['max_ms']:.0f} ms; "
        f"{t['partial']:,} partial answers, {t['stale']:,} stale source answers."
    )
    lines += ["", "| route | answers by status |", "|---|---|"]
    for route, counts in sorted(report["by_route"].items()):
        lines.append(f"| `{route}` | {', '.join(f'{s}: {n:,}' for s, n in sorted(counts.items()))} |")
    lines.append("")
    lines.append(
        "`readyz` is not a data route: answering 503 while a source is down is what a readiness probe is for."
    )
    if t["source_errors"]:
        errs = ", ".join(f"{k}: {n:,}" for k, n in sorted(t["source_errors"].items()))
        lines.append(f"\nSource errors reported in `sources[]` (each inside a 200 partial answer): {errs}.")
    if t["transport_errors"]:
        lines.append(f"\nTransport errors: {dict(t['transport_errors'])}")
    if report["five_xx_examples"]:
        lines += ["", "5xx examples:", ""] + [f"- `{e}`" for e in report["five_xx_examples"]]
    lines += ["", "## Per phase of the Datadog simulator (by when each request began)", ""]
    lines += ["| from s | Datadog | requests | p50 ms | p99 ms | max ms |", "|---:|---|---:|---:|---:|---:|"]
    for ph in report["phases"]:
        lines.append(
            f"| {ph['from_s']} | {ph['datadog']} | {ph['requests']:,} | {ph.get('p50_ms', '')} | "
            f"{ph.get('p99_ms', '')} | {ph.get('max_ms', '')} |"
        )
    lines += ["", "## Gateway RSS and open fds, every second", ""]
    lines += ["| t s | RSS MiB | fds | requests so far | 5xx so far |", "|---:|---:|---:|---:|---:|"]
    for s in report["samples"]:
        lines.append(f"| {s['t']} | {s['rss_mib']} | {s['fds']} | {s['requests']:,} | {s['5xx']} |")
    lines += ["", "## Set-up", ""]
    lines += [f"- {n}" for n in report["notes"]]
    return "\n".join(lines) + "\n"


def _yes(value: Any) -> str:
    return "yes" if value else "**no**"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Soak the gateway while an upstream flaps.")
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--flap-s", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds of uncounted load first")
    parser.add_argument("--max-requests", type=int, default=200_000, help="per worker, a hard bound")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--name", default="soak")
    args = parser.parse_args(argv)
    pin_self_to_client_core()
    bench_args = argparse.Namespace(duration=args.duration, connections=args.concurrency, profile_s=0)
    with tempfile.TemporaryDirectory(prefix="gateway-soak-") as tmp, contextlib.ExitStack() as stack:
        bench = Bench(args=bench_args, work=Path(tmp), deadline=time.monotonic() + 600, stack=stack)
        try:
            bench.phoenix = start_phoenix(bench)
            bench.datadog = start_datadog(bench)
            seed(bench, big=False)
            seed(bench, big=True)
            gateway = start_gateway(bench, "gateway-soak", ttl_s=5.0, source_timeout_s=1.0, max_stale_s=30.0)
            print(f"soak: {args.warmup:.0f} s warm-up", flush=True)
            warm = asyncio.run(warm_up(args, gateway.base_url))
            rss_warm = round(rss_kib(gateway.pid) / 1024, 1)
            print(
                f"soak: {args.duration:.0f} s of mixed load, Datadog flapping every {args.flap_s:.0f} s",
                flush=True,
            )
            result = asyncio.run(load(args, gateway.base_url, bench.datadog.base_url, gateway.pid))
            time.sleep(2.0)
            after = {"rss_mib": round(rss_kib(gateway.pid) / 1024, 1), "fds": open_fds(gateway.pid)}
            recovery = wait_recovered(gateway.base_url)
        finally:
            stack.close()
        tally: Tally = result["tally"]
        lat = sorted(tally.latencies_ms) or [0.0]
        total = sum(tally.status.values())
        five = sum(n for s, n in tally.status.items() if s.startswith("5"))
        report = {
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": git_commit(),
            "duration_s": result["elapsed_s"],
            "concurrency": args.concurrency,
            "flap_s": args.flap_s,
            "totals": {
                "requests": total,
                "rps": total / result["elapsed_s"],
                "5xx": five,
                "status": dict(tally.status),
                "partial": tally.partial,
                "stale": tally.stale,
                "source_errors": dict(tally.source_errors),
                "transport_errors": dict(tally.transport_errors),
                "p50_ms": lat[len(lat) // 2],
                "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))],
                "max_ms": lat[-1],
            },
            "by_route": {k: dict(v) for k, v in tally.by_route.items()},
            "five_xx_examples": tally.five_xx_examples,
            "flaps": result["flaps"],
            "phases": phases(tally, result["flaps"], result["elapsed_s"]),
            "samples": result["samples"],
            "after_load": after,
            "steadiness": steadiness(result["samples"]),
            "recovery": recovery,
            "notes": [
                "Upstreams as in `make bench`: the Phoenix stand-in (healthy throughout) and the Datadog "
                "simulator, whose switches (`fail_rate`/`fail_status`, `latency_ms`, `rate_limit`) are "
                "flipped through `POST /_simulator/config`.",
                "Gateway config: cache TTL 5 s (entries expire during the run, so misses keep reaching "
                "the flapping upstream), `max_stale_s` 30, per-source timeout 1 s, auth on.",
                f"Warm-up first: {args.warmup:.0f} s of the same mix with both upstreams healthy "
                f"({warm:,} requests, not counted); gateway RSS {rss_warm} MiB after it.",
                f"Gateway after the load (2 s later): RSS {after['rss_mib']} MiB, {after['fds']} open fds.",
            ],
        }
        out_dir = Path(args.out)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / f"{args.name}.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        (out_dir / f"{args.name}.md").write_text(render(report))
        print(
            f"wrote {out_dir / (args.name + '.md')}: {total:,} requests, {five} 5xx, "
            f"steadiness {report['steadiness']}"
        )
        ok = five == 0 and report["steadiness"].get("rss_steady") and report["steadiness"].get("fds_steady")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
