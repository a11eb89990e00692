"""Turn the bench's measurements into ratios, verdicts and ``bench/results/latest.md``.

:func:`ratios` computes the ratios of issues 7 and 10 from one run's results (the keys
``bench/results/latest.json`` → ``ratios`` carries: the issue-10 check reads
``miss_cpu_vs_reference``, ``overhead_p50_ms``, ``overhead_p99_ms``, ``cache_hit_vs_hello``,
``cached_bytes_per_annotation``, ``export_1m_rss_growth_mib``, ``export_first_byte_ms`` and
``search_10k_first_page_ms``), :func:`verdicts` checks each against its target, and
:func:`markdown` renders the whole report: targets, throughput table, overhead with
``Server-Timing``, the naive-script comparison, scale, the 1,000,000-annotation export, profiles,
and — for every target not met — the measured figure, by how much it misses, and the profile
that shows where the time goes.
"""

from __future__ import annotations

from typing import Any

from bench.profiling import ProfileSummary

TARGETS: dict[str, float] = {
    "cache_hit_vs_hello": 0.85,  # issue 10 (issue 7 asked 0.8)
    "miss_cpu_vs_reference": 1.5,
    "overhead_p50_ms": 105.0,
    "overhead_p99_ms": 125.0,
    "naive_miss_speedup": 1.0,
    "naive_hit_speedup": 10.0,
    # issue 10
    "cached_bytes_per_annotation": 1024.0,  # <= 1 KiB of RSS per cached annotation
    "export_1m_rss_growth_mib": 64.0,  # "flat": a few chunks in memory, never the export
    "export_first_byte_ms": 250.0,
    "search_10k_first_page_ms": 1200.0,
    # scopes (SPEC §7)
    "scope_first_page_vs_id_query": 2.0,  # scope=all's cold first page / the same data by ids
    "scope_rss_growth_mib": 128.0,  # paging through a 100,000-annotation scope
    # metrics (SPEC §8)
    "metrics_100k_ms": 150.0,  # POST /v1/annotations/metrics over 100,000 cached annotations
    "metrics_rss_growth_mib": 32.0,  # aggregation streams: groups and scores, never annotations
    # issue 13
    "redis_miss_cpu_vs_memory": 1.2,
    "redis_hit_ms_p50": 2.0,
}

MEMORY_KEYS = frozenset(
    {
        "cached_bytes_per_annotation",
        "export_1m_rss_growth_mib",
        "scope_rss_growth_mib",
        "metrics_rss_growth_mib",
    }
)

NOTES = [
    "Phoenix upstream: `bench/phoenix_standin.py`, a tiny ASGI app with Phoenix 20.26.1's exact "
    "wire format, a latency knob and a request counter. The real Phoenix takes ~15 s to start and "
    "answers in 10-200+ ms depending on its SQL work, varying run to run: it cannot be the "
    "*controlled* upstream that CPU and latency attribution needs (its behaviour is covered by "
    "the test suite against the real server).",
    "Datadog upstream: the project's Datadog simulator (`annotation_gateway.simulators.datadog`), "
    "seeded through its seed format (`POST /_simulator/seed`), latency set through "
    "`/_simulator/config`, upstream calls counted from `/_simulator/requests`.",
    "Gateway config (generated into a temp dir): auth on with one bearer key, cache TTL 600 s, "
    "`max_concurrency = 64` per source (the default 16 would queue 16 clients' fan-outs behind a "
    "100 ms upstream), both sources on loopback.",
    "CPU ms per request = the server process group's user+sys CPU time delta "
    "(/proc/<pid>/stat, 10 ms ticks) over the measured wrk run, divided by completed requests. "
    "Peak RSS = VmHWM of the server process.",
    "The upstreams run on core 0 with the server under test, so the fan-out scenarios' req/s "
    "include the upstreams' CPU; CPU ms per request counts the server's own process only.",
    "The 1,000,000-annotation export (`export_1m`) reads Phoenix only (`source=phoenix-bench`): "
    "1,000 sessions x 1,000 annotations generated inside the stand-in when read (a lazy seed: no "
    "memory, no seeding time; the generation runs on core 0 next to the gateway, and its CPU "
    "time is reported). Seeding a million annotations into the Datadog simulator through its "
    "seed format would take longer than the bench's whole time budget.",
    "The machine is shared (other sessions run test suites and real Phoenix servers on both "
    "cores): every measured run records the share of core 0 used by processes the bench did not "
    "start, the throughput scenarios are interleaved so such load falls on all of them alike, and "
    "CPU ms per request (a process's own CPU time) is the least disturbed figure.",
]

_LABELS = {
    "hello": "bare FastAPI hello",
    "hello_answer": "bare FastAPI, the cache-hit answer's bytes",
    "cache_hit": "gateway cache hit (100 annotations)",
    "reference": "reference fan-out (aiohttp + orjson)",
    "cache_miss": "gateway cache miss fan-out (no-cache)",
}


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    hello, hit = results.get("hello", {}), results.get("cache_hit", {})
    if "rps" in hello and "rps" in hit:
        out["cache_hit_vs_hello"] = round(hit["rps"] / hello["rps"], 3)
    if "cpu_ms_per_request" in hello and "cpu_ms_per_request" in hit:
        # what each could serve on a core of its own: robust to other load on a shared machine
        out["cache_hit_vs_hello_by_cpu"] = round(hello["cpu_ms_per_request"] / hit["cpu_ms_per_request"], 3)
    same_bytes = results.get("hello_answer", {})
    if "rps" in same_bytes and "rps" in hit:
        out["cache_hit_vs_same_bytes"] = round(hit["rps"] / same_bytes["rps"], 3)
    ref, miss = results.get("reference", {}), results.get("cache_miss", {})
    if "cpu_ms_per_request" in ref and "cpu_ms_per_request" in miss:
        out["miss_cpu_vs_reference"] = round(miss["cpu_ms_per_request"] / ref["cpu_ms_per_request"], 3)
        out["miss_rps_vs_reference"] = round(miss["rps"] / ref["rps"], 3)
    over = results.get("overhead", {})
    if "p50_ms" in over:
        out["overhead_p50_ms"] = over["p50_ms"]
        out["overhead_p99_ms"] = over["p99_ms"]
        shared = over.get("shared_core") or {}
        if "p50_ms" in shared:  # the stand-ins on the gateway's core, as before session 10
            out["overhead_shared_core_p50_ms"] = shared["p50_ms"]
            out["overhead_shared_core_p99_ms"] = shared["p99_ms"]
        for vendor, alone in (over.get("upstreams_alone") or {}).items():
            out[f"overhead_upstream_{vendor}_p50_ms"] = alone["p50_ms"]  # each stand-in alone
        floor = over.get("reference") or {}
        if "p50_ms" in floor:  # the reference fan-out under the same load and set-up
            out["overhead_reference_p50_ms"] = floor["p50_ms"]
            out["overhead_reference_p99_ms"] = floor["p99_ms"]
    naive = results.get("naive", {}).get("upstream_100ms")
    if naive:
        out["naive_miss_speedup"] = naive["miss_speedup"]
        out["naive_hit_speedup"] = naive["hit_speedup"]
    search = (results.get("scale") or {}).get("search_10k") or {}
    if search.get("answer", {}).get("status") == 200:
        out["search_10k_first_page_ms"] = search["wall_ms"]
    cached = search.get("cached_memory") or {}
    if cached.get("bytes_per_annotation") is not None:
        out["cached_bytes_per_annotation"] = cached["bytes_per_annotation"]
    cold = (results.get("export_1m") or {}).get("cold") or {}
    if cold.get("status") == 200:
        growth = [g for g in (cold["rss_growth_mib"], cold.get("rss_hwm_growth_mib")) if g is not None]
        out["export_1m_rss_growth_mib"] = max(growth)
        out["export_first_byte_ms"] = cold["first_byte_ms"]
        out["export_1m_annotations"] = cold["annotations"]
        out["export_1m_annotations_per_s"] = cold["annotations_per_s"]
        out["export_1m_wall_s"] = cold["wall_s"]
        out["export_1m_complete"] = cold.get("complete")
    workers = results.get("workers") or {}
    if workers.get("ratio") is not None:
        out["workers_2_vs_1_hit_throughput"] = workers["ratio"]
    scope = results.get("scope") or {}
    first = scope.get("first_page") or {}
    if first.get("ratio") is not None:
        out["scope_first_page_vs_id_query"] = first["ratio"]
        out["scope_first_page_ms"] = first["scope_ms"]
        out["scope_id_query_first_page_ms"] = first["ids_ms"]
    memory = scope.get("memory") or {}
    if memory.get("growth_mib") is not None:
        out["scope_rss_growth_mib"] = memory["growth_mib"]
        out["scope_peak_rss_mib"] = memory["peak_rss_mib"]
        out["scope_paged_annotations"] = memory["annotations"]
        out["scope_paging_complete"] = (scope.get("paging") or {}).get("complete")
    metrics = results.get("metrics") or {}
    if metrics.get("runs"):
        out["metrics_complete"] = metrics.get("complete")
        out["metrics_100k_ms"] = metrics.get("wall_ms")
        out["metrics_100k_server_ms"] = metrics.get("server_ms")
        out["metrics_100k_gateway_cpu_ms"] = metrics.get("gateway_cpu_ms_per_request")
        out["metrics_annotations"] = (metrics.get("answer") or {}).get("count")
        out["metrics_rows"] = (metrics.get("answer") or {}).get("rows")
        out["metrics_from_cache"] = metrics.get("all_from_cache")
    metrics_memory = metrics.get("memory") or {}
    if metrics_memory.get("growth_mib") is not None:
        out["metrics_rss_growth_mib"] = metrics_memory["growth_mib"]
    redis = results.get("redis") or {}
    if "miss_cpu_ratio" in redis:
        out["redis_miss_cpu_vs_memory"] = redis["miss_cpu_ratio"]
    if "p50_ms" in (redis.get("hit") or {}):
        out["redis_hit_ms_p50"] = redis["hit"]["p50_ms"]
    return out


def verdicts(r: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per target: ``met`` is ``None`` when the figure is missing (or, for the export,
    when the export did not finish: its figures then verify nothing); ``direction`` and
    ``limit`` let the report say by how much a target is missed."""
    t = TARGETS
    exported = r.get("export_1m_annotations")
    export_what = f"cold export of {exported:,} annotations" if exported is not None else "cold export"
    if exported is not None and r.get("export_1m_complete") is False:
        export_what += " (did not finish: not verified)"
    paged = r.get("scope_paged_annotations")
    scope_what = f"paging a scope of {paged:,} annotations" if paged is not None else "paging a whole scope"
    if paged is not None and r.get("scope_paging_complete") is False:
        scope_what += " (did not finish: not verified)"
    counted = r.get("metrics_annotations")
    metrics_what = (
        f"metrics over {counted:,} cached annotations, name x source x day"
        if counted is not None
        else "metrics over 100,000 cached annotations, name x source x day"
    )
    if r.get("metrics_complete") is False:
        metrics_what += " (an answer was incomplete: not verified)"
    elif r.get("metrics_from_cache") is False:
        metrics_what += " (not all read from the cache: not verified)"
    checks: list[tuple[str, str, str, str]] = [
        # key, what, direction (">=", ">" or "<="), target as shown
        ("cache_hit_vs_hello", "cache hit throughput / hello throughput", ">=", ">= 0.85x"),
        ("miss_cpu_vs_reference", "miss CPU per request / reference fan-out", "<=", "<= 1.5x"),
        ("overhead_p50_ms", "p50 at 100 ms upstreams, 16 clients", "<=", "<= 105 ms"),
        ("overhead_p99_ms", "p99 at 100 ms upstreams, 16 clients", "<=", "<= 125 ms"),
        (
            "naive_miss_speedup",
            "naive script time / gateway miss time (100 ms upstreams)",
            ">",
            "> 1x",
        ),
        (
            "naive_hit_speedup",
            "naive script time / gateway hit time (100 ms upstreams)",
            ">=",
            ">= 10x",
        ),
        (
            "cached_bytes_per_annotation",
            "RSS growth per cached annotation (10,000-id search, 100,000 annotations), bytes",
            "<=",
            "<= 1,024 (1 KiB)",
        ),
        (
            "search_10k_first_page_ms",
            "10,000-id search, first page (upstreams at 50 ms)",
            "<=",
            "<= 1,200 ms",
        ),
        ("export_first_byte_ms", f"{export_what}: first byte", "<=", "<= 250 ms"),
        ("export_1m_rss_growth_mib", f"{export_what}: RSS growth (flat)", "<=", "<= 64 MiB"),
        (
            "scope_first_page_vs_id_query",
            "scope=all first page / the same 10,000 sessions by ids, cold gateways (upstream at 50 ms)",
            "<=",
            "<= 2.0x",
        ),
        (
            "scope_rss_growth_mib",
            f"{scope_what}: RSS growth, MiB",
            "<=",
            "<= 128 MiB",
        ),
        ("metrics_100k_ms", f"{metrics_what}: wall time (median)", "<=", "<= 150 ms"),
        ("metrics_rss_growth_mib", f"{metrics_what}: RSS growth over the warm cache, MiB", "<=", "<= 32 MiB"),
        ("redis_miss_cpu_vs_memory", "miss CPU per request, Redis tier / memory only", "<=", "<= 1.2x"),
        ("redis_hit_ms_p50", "hit served from Redis (local tier expired), p50", "<=", "<= 2 ms"),
    ]
    rows = []
    for key, what, direction, target in checks:
        value = r.get(key)
        limit = t[key]
        met: bool | None
        if value is None:
            met = None
        elif direction == ">=":
            met = value >= limit
        elif direction == ">":
            met = value > limit
        else:
            met = value <= limit
        if key.startswith("export_") and r.get("export_1m_complete") is False:
            met = None
        if key == "scope_rss_growth_mib" and r.get("scope_paging_complete") is False:
            met = None
        if key.startswith("metrics_") and False in (r.get("metrics_complete"), r.get("metrics_from_cache")):
            met = None
        rows.append(
            {
                "key": key,
                "what": what,
                "target": target,
                "value": value,
                "met": met,
                "direction": direction,
                "limit": limit,
            }
        )
    return rows


def shortfall(v: dict[str, Any]) -> str:
    """By how much a verdict misses its target, in words (``""`` if it cannot say)."""
    value, limit, direction = v.get("value"), v.get("limit"), v.get("direction")
    if value is None or not limit or direction is None:
        return ""
    if direction == "<=":
        over = value - limit
        return f"{value / limit:.2f}x the limit ({over:+,.{2 if limit < 10 else 0}f} over)"
    if not value:
        return ""
    return f"{limit / value:.2f}x short of it"


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _why(row: dict[str, Any] | None) -> str:
    row = row or {}
    return str(row.get("skipped") or row.get("error") or "not run")


def _throughput(res: dict[str, Any]) -> list[str]:
    out = [
        "| scenario | req/s | p50 ms | p99 ms | CPU ms/req | peak RSS MiB | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key, label in _LABELS.items():
        row = res.get(key)
        if not row or "rps" not in row:
            out.append(f"| {label} | {_why(row)} | | | | | |")
            continue
        errors = sum(row["errors"].values())
        out.append(
            f"| {label} | {fmt(row['rps'], 0)} | {fmt(row['p50_ms'])} | {fmt(row['p99_ms'])} | "
            f"{fmt(row['cpu_ms_per_request'], 3)} | {fmt(row['peak_rss_mib'], 1)} | {errors} |"
        )
    out += [
        "",
        "req/s, p50 and p99 are those of the best of the interleaved rounds (the one least disturbed "
        "by other load on the machine); CPU ms/req is the median over the rounds. Errors = wrk's "
        "connect/read/write/timeout errors plus non-2xx answers, over all rounds.",
        "",
        "Every round (req/s · CPU ms/req · other processes' share of core 0 · wrk's own CPU on core 1):",
        "",
    ]
    for key, label in _LABELS.items():
        rounds = (res.get(key) or {}).get("rounds") or []
        if rounds:
            cells = "; ".join(
                f"{fmt(r['rps'], 0)} · {fmt(r['cpu_ms_per_request'], 3)} · "
                f"{fmt(r['core0_foreign_pct'], 0)} % · {fmt(r.get('wrk_cpu_pct'), 0)} %"
                for r in rounds
            )
            out.append(f"- {label}: {cells}")
    for key in ("reference", "cache_miss"):
        row = res.get(key) or {}
        if row.get("upstream_cpu_ms_per_request"):
            parts = ", ".join(f"{k} {v:.3f}" for k, v in row["upstream_cpu_ms_per_request"].items())
            out.append(f"\n`{key}` upstream CPU ms per request (same core): {parts}.")
    for key in ("cache_hit", "cache_miss", "reference"):
        row = res.get(key) or {}
        if "upstream_calls_per_request" in row:
            calls = row["upstream_calls_per_request"]
            out.append(
                f"\n`{key}` upstream calls per request: Phoenix {calls['phoenix']:.2f}, "
                f"Datadog {calls['datadog']:.2f}."
            )
        if "answer" in row:
            a = row["answer"]
            sources = ", ".join(
                f"{s['source']} {s['status']} cached={s['cached']}" for s in a.get("sources", [])
            )
            out.append(
                f"\n`{key}` answer: {a.get('annotations')} annotations {a.get('by_provider')}, "
                f"partial={a.get('partial')}, {fmt(a.get('bytes'))} bytes; sources: {sources}; "
                f"Server-Timing: `{row.get('server_timing_sample')}`"
            )
    return out


def _overhead(res: dict[str, Any]) -> list[str]:
    over = res.get("overhead")
    out = ["", "## Overhead (both upstreams answer in 100 ms, 16 concurrent clients, no-cache)", ""]
    if not over or "p50_ms" not in over:
        return [*out, _why(over)]
    st = over["server_timing_under_load"]
    out.append(
        f"wrk: {fmt(over['rps'], 0)} req/s, p50 {fmt(over['p50_ms'])} ms, p90 {fmt(over['p90_ms'])} ms, "
        f"p99 {fmt(over['p99_ms'])} ms, max {fmt(over['max_ms'])} ms, errors {over['errors']}, "
        f"CPU {fmt(over['cpu_ms_per_request'], 3)} ms/request."
    )
    floor = over.get("reference") or {}
    if over.get("rounds") and floor.get("rounds"):
        out.append(
            f"\nThe median of {len(over['rounds'])} rounds alternated with the reference fan-out (by "
            "p50; each 8-s run's p50 moves by about a millisecond): p50 / p99 of every round, the gateway "
            + ", ".join(f"{fmt(r['p50_ms'])} / {fmt(r['p99_ms'])}" for r in over["rounds"])
            + " ms; the reference "
            + ", ".join(f"{fmt(r['p50_ms'])} / {fmt(r['p99_ms'])}" for r in floor["rounds"])
            + " ms."
        )
    upstream = over.get("upstream_cpu_ms_per_request") or {}
    where = over.get("upstreams_on_cpu")
    if where is not None:
        out.append(
            f"\nThe two upstream stand-ins ran on core {where} (the client core: real upstreams are "
            "other machines), using "
            + ", ".join(f"{name} {fmt(ms, 3)}" for name, ms in upstream.items())
            + " ms of CPU a request."
        )
    alone = over.get("upstreams_alone") or {}
    if alone:
        out.append(
            "Each stand-in alone under the same load (16 wrk connections straight at it, the "
            "hot query's request): "
            + ", ".join(
                f"{name} p50 {fmt(a['p50_ms'])} ms, p99 {fmt(a['p99_ms'])} ms" for name, a in alone.items()
            )
            + " (`overhead_upstream_<vendor>_p50_ms`): the floor under the figures above."
        )
    shared = over.get("shared_core") or {}
    if "p50_ms" in shared:
        shared_upstream = shared.get("upstream_cpu_ms_per_request") or {}
        out.append(
            f"With them on the gateway's core 0 (as before): p50 {fmt(shared['p50_ms'])} ms, p99 "
            f"{fmt(shared['p99_ms'])} ms, {fmt(shared['rps'], 0)} req/s, gateway CPU "
            f"{fmt(shared['cpu_ms_per_request'], 3)} ms/request, the stand-ins' "
            + ", ".join(f"{name} {fmt(ms, 3)}" for name, ms in shared_upstream.items())
            + " ms (`overhead_shared_core_p50_ms` / `_p99_ms`)."
        )
    if "p50_ms" in floor:
        out.append(
            f"The reference fan-out under the same load and set-up (stand-ins on core {where}): "
            f"p50 {fmt(floor['p50_ms'])} ms, p99 {fmt(floor['p99_ms'])} ms, max "
            f"{fmt(floor['max_ms'])} ms, {fmt(floor['rps'], 0)} req/s, CPU "
            f"{fmt(floor['cpu_ms_per_request'], 3)} ms/request "
            "(`overhead_reference_p50_ms` / `_p99_ms`)."
        )
    out.append(
        f"\nThe gateway's own time (`Server-Timing: gateway;dur=`, wall time minus the slowest "
        f"source), {st['samples']} responses sampled during the load: p50 "
        f"{fmt(st['gateway_p50_ms'])} ms, p99 {fmt(st['gateway_p99_ms'])} ms, max "
        f"{fmt(st['gateway_max_ms'])} ms. Example: `{st['example']}`."
    )
    seq = over["sequential_single_client"]
    out.append(f"\nOne client alone: p50 {fmt(seq['p50_ms'])} ms; Server-Timing {seq['server_timing']}.")
    return out


def _naive(res: dict[str, Any]) -> list[str]:
    naive = res.get("naive")
    out = ["", "## Versus a naive sequential script (Phoenix, then Datadog, with httpx)", ""]
    if not naive or "upstream_100ms" not in naive:
        return [*out, _why(naive)]
    out += [
        "| upstream latency | naive p50 ms | gateway miss p50 ms | gateway hit p50 ms "
        "| miss speed-up | hit speed-up |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, row in naive.items():
        if not isinstance(row, dict) or "naive_p50_ms" not in row:
            continue
        out.append(
            f"| {key.removeprefix('upstream_')} | {fmt(row['naive_p50_ms'])} | "
            f"{fmt(row['gateway_miss_p50_ms'])} | {fmt(row['gateway_hit_p50_ms'])} | "
            f"{fmt(row['miss_speedup'])}x | {fmt(row['hit_speedup'], 1)}x |"
        )
    out.append(
        "\nOne client, requests one after the other (the latency a script user feels); the naive "
        "script (`bench/naive_sequential.py`) runs on the client core and returns the same "
        "annotations, flattened and sorted."
    )
    return out


def _search_rounds(search: dict[str, Any]) -> str:
    """How the first page's figure was taken: the median of cold gateways, after a priming run."""
    walls = search.get("wall_ms_rounds") or []
    if len(walls) < 2:
        return ""
    text = f", the median of {len(walls)} cold gateways ({', '.join(fmt(w, 0) for w in walls)} ms"
    if search.get("priming_wall_ms") is not None:
        text += f"; a priming search before them, not counted: {fmt(search['priming_wall_ms'], 0)} ms"
    return text + ")"


def _search(search: dict[str, Any]) -> list[str]:
    up = search["upstream"]
    a = search["answer"]
    sources = ", ".join(f"{s['source']} {s['status']} count={s['count']}" for s in a.get("sources", []))
    out = [
        f"\n`POST /v1/annotations/search` with {fmt(search['subject_ids'])} subject ids (1,000 "
        f"sessions with 100 annotations each, 9,000 with none; upstreams answering in "
        f"{search['upstream_latency_ms']:.0f} ms): HTTP {a.get('status')}, first page of "
        f"{fmt(a.get('annotations'))} annotations in **{fmt(search['wall_ms'], 0)} ms**"
        + _search_rounds(search)
        + (
            f" (the upstream stand-ins on core {search['upstreams_on_cpu']} meanwhile: real upstreams "
            "are other machines)."
            if search.get("upstreams_on_cpu") is not None
            else "."
        ),
        f"\nUpstream calls: Phoenix **{up['phoenix_calls']}** (at most {up['phoenix_max_in_flight']} "
        f"in flight), Datadog **{up['datadog_calls']}** (at most {up['datadog_max_in_flight']} in "
        f"flight); one after the other their latency alone would be "
        f"~{fmt(search['sequential_estimate_ms'], 0)} ms. Sources: {sources}.",
    ]
    line = (
        f"\nGateway RSS: {search['rss_before_mib']} MiB before, {search['rss_after_mib']} MiB after "
        f"caching the answer of the 10,000 ids (100,000 annotations)"
    )
    if "rss_after_paging_mib" in search:
        line += f", {search['rss_after_paging_mib']} MiB after paging through all of it"
    if "peak_rss_mib" in search:
        line += f"; peak {search['peak_rss_mib']} MiB"
    out.append(line + ".")
    if "paging" in search:
        p = search["paging"]
        out.append(
            f"\nPaging the whole result (limit 1000, from the cache): {p['pages']} pages, "
            f"{fmt(p['annotations'])} annotations, complete={p['complete']}, page p50 "
            f"{fmt(p['page_p50_ms'])} ms, max {fmt(p['page_max_ms'])} ms."
        )
    if "paging_error" in search:
        out.append(f"\nPaging stopped on an error: {search['paging_error']}")
    if "cached_memory" in search:
        c = search["cached_memory"]
        out.append(
            f"\nMemory per cached annotation: RSS {c['rss_before_mib']} MiB before the search (after "
            f"one warm-up search of an unknown id) → {c['rss_cached_mib']} MiB after "
            f"{c['measured_after']} = +{c['growth_mib']} MiB for {fmt(c['annotations'])} annotations "
            f"= **{fmt(c['bytes_per_annotation'])} bytes per annotation** (target ≤ 1,024)."
        )
    return out


def _export(export: dict[str, Any]) -> list[str]:
    if "cold" not in export:
        return [
            f"\nExport of 100,000 annotations: {export.get('status')} "
            f"(probe HTTP {export.get('probe_status')})."
        ]
    out = []
    for key in ("cold", "warm"):
        e = export.get(key)
        if not e:
            continue
        if e.get("status") != 200:
            out.append(f"\nExport ({key}): HTTP {e.get('status')} {e.get('body', '')}")
            continue
        label = "cold cache" if key == "cold" else "second run (an export caches nothing: cold again)"
        out.append(
            f"\nExport, {label} (`GET /v1/annotations/export?format=jsonl`, the 1,000 sessions): "
            f"{fmt(e['lines'])} lines, {fmt(e['bytes'])} bytes in {e['wall_s']} s "
            f"({fmt(e['annotations_per_s'])} annotations/s, first byte after {e['first_byte_ms']} ms); "
            f"RSS {e['rss_before_mib']} MiB before → peak {e['rss_peak_mib']} MiB (growth "
            f"{e['rss_growth_mib']} MiB) → {e['rss_after_mib']} MiB after."
        )
    return out


def _export_1m(res: dict[str, Any]) -> list[str]:
    row = res.get("export_1m") or {}
    expected = row.get("annotations_expected")
    title = f"{expected:,} annotations" if expected else "1,000,000 annotations"
    out = ["", f"## Cold export of {title} (Phoenix only)", ""]
    cold = row.get("cold")
    if not cold:
        return [*out, str(row.get("status") or _why(row))]
    if cold.get("status") != 200:
        return [*out, f"HTTP {cold.get('status')}: {cold.get('body', '')}"]
    seed = row.get("seed") or {}
    out.append(
        f"`GET /v1/annotations/export?format=jsonl&source=phoenix-bench` for {fmt(row.get('sessions'))} "
        f"sessions of {fmt((expected or 0) // max(1, row.get('sessions') or 1))} annotations "
        f"(generated in the stand-in when read; lazy seed in {seed.get('seconds')} s), on a fresh "
        f"gateway (nothing cached; an export caches nothing), streamed over HTTP by one client."
    )
    stand_in = ", ".join(f"{k} {v} s" for k, v in (cold.get("others_cpu_s") or {}).items())
    hwm = cold.get("rss_hwm_growth_mib")
    out.append(
        f"\n{fmt(cold['annotations'])} annotations ({fmt(cold['bytes'])} bytes) in **{cold['wall_s']} s** "
        f"= **{fmt(cold['annotations_per_s'])} annotations/s**; first byte after "
        f"**{cold['first_byte_ms']} ms**; complete={cold.get('complete')}, "
        f"truncated={cold.get('truncated')}, trailer={cold.get('trailer')}."
    )
    out.append(
        f"\nGateway RSS {cold['rss_before_mib']} MiB before → peak {cold['rss_peak_mib']} MiB "
        f"(sampled every 50 ms: growth **{cold['rss_growth_mib']} MiB**; VmHWM growth "
        f"{'n/a (VmHWM did not rise)' if hwm is None else f'{hwm} MiB'}) → {cold['rss_after_mib']} MiB "
        f"after. CPU: gateway {cold.get('gateway_cpu_s')} s; {stand_in or 'upstreams n/a'}."
    )
    series = cold.get("rss_series_mib") or []
    if series:
        points = ", ".join(f"{t:g} s {m:g}" for t, m in series[:: max(1, len(series) // 12)])
        out.append(f"\nRSS over time (MiB): {points}.")
    return out


def _scale(res: dict[str, Any]) -> list[str]:
    out = ["", "## Scale", ""]
    scale = res.get("scale") or {}
    if "seed" in scale:
        sd = scale["seed"]
        out.append(
            f"Seeded in {sd['seconds']} s: Phoenix {fmt(sd['phoenix_rows'])} rows, Datadog {sd['datadog']}."
        )
    if "search_10k" in scale:
        out += _search(scale["search_10k"])
    if "export_100k" in scale:
        out += _export(scale["export_100k"])
    for key in ("scale", "export"):
        row = res.get(key) or {}
        if "skipped" in row or "error" in row:
            out.append(f"\n{key}: {_why(row)}")
    return out


def _scope(res: dict[str, Any]) -> list[str]:
    row = res.get("scope") or {}
    out = ["", "## Scope: `scope=all` over 10,000 sessions and 100,000 annotations (Phoenix only)", ""]
    first = row.get("first_page")
    if not first:
        return [*out, _why(row)]
    seed = row.get("seed") or {}
    sessions = row.get("sessions") or 0
    per_session = (row.get("annotations_expected") or 0) // max(1, sessions)
    out.append(
        f"Data: {fmt(sessions)} sessions x {fmt(per_session)} session annotations in the "
        f"stand-in's project `{row.get('project')}` (seeded in {seed.get('seconds')} s), "
        f"the stand-in answering every call (listings and annotation reads) after "
        f"{fmt(row.get('upstream_latency_ms'), 0)} ms, as in `scale`. The gateway's config has the "
        f"**Phoenix source alone** ({', '.join(row.get('gateway_sources') or [])}): a Datadog "
        "source would add its own queue discovery and reads to the scope walk, which is not what "
        "is measured here."
    )
    out.append(
        "\n**First page, cold.** Each measurement runs on a **fresh gateway process** (empty "
        "annotation and discovery caches); its only earlier request is one search of an id that "
        "exists nowhere (as in `scale`: one-off first-request costs stay out of both). "
        f"`GET /v1/annotations?scope=all&subject_kind=session` (page size {row.get('page_size')}, the "
        "default) against `POST /v1/annotations/search` with the 10,000 session ids, "
        "`subject_kinds=[session]`, the same page size. A priming round first (reported, not "
        "used) lets the stand-in memoize its answers, so both queries find it equally ready; "
        "then the rounds alternate which query goes first; the ratio is of the medians. "
        "Target: scope ÷ ids **≤ 2.0**. The listing window is the time from the first listing "
        "call's arrival at the stand-in to the last one's answer: the scope's discovery, cursor "
        "paging one listing page after the other."
    )
    out += [
        "",
        "| query | first page ms (median) | every round ms | Phoenix listings (their window ms) "
        "| Phoenix annotation reads | gateway CPU s | annotations | scanned subjects |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for kind, label in (("scope", "`scope=all`"), ("ids", "10,000 ids")):
        rows = (first.get("rounds") or {}).get(kind) or []
        last = rows[-1] if rows else {}
        up = last.get("upstream") or {}
        answer = last.get("answer") or {}
        scanned = ", ".join(
            str(s.get("scanned_subjects"))
            for s in answer.get("sources", [])
            if s.get("scanned_subjects") is not None
        )
        walls = ", ".join(fmt(w, 0) for w in first.get(f"{kind}_ms_all") or [])
        out.append(
            f"| {label} | **{fmt(first.get(f'{kind}_ms'), 0)}** | {walls} | {fmt(up.get('listing_calls'))} "
            f"({fmt(up.get('listing_window_ms'), 0)}) | "
            f"{fmt(up.get('annotation_reads'))} | {fmt(last.get('gateway_cpu_s'))} | "
            f"{fmt(answer.get('annotations'))} (status {answer.get('status')}) | {scanned or '—'} |"
        )
    out.append(
        f"\nRatio scope ÷ ids = **{fmt(first.get('ratio'), 3)}** (per round: "
        f"{', '.join(fmt(x, 3) for x in first.get('ratio_by_round') or [])}). Upstream calls and CPU "
        "are the last round's; Server-Timing of that round: "
        f"scope `{((first.get('rounds') or {}).get('scope') or [{}])[-1].get('server_timing')}`, "
        f"ids `{((first.get('rounds') or {}).get('ids') or [{}])[-1].get('server_timing')}`."
    )
    priming = row.get("priming") or {}
    if priming:
        parts = ", ".join(f"{k} {fmt(v.get('wall_ms'), 0)} ms" for k, v in priming.items())
        out.append(f"\nPriming round (stand-in not yet memoized, not used): {parts}.")
    paging = row.get("paging")
    memory = row.get("memory")
    if paging and memory:
        up = paging.get("upstream") or {}
        out.append(
            f"\n**Paging the whole scope** on the gateway of the last measured scope round, right after "
            f"its first page: `limit={1000}` from the start, following `next_cursor` — "
            f"{fmt(paging['pages'])} pages, {fmt(paging['annotations'])} annotations "
            f"({fmt(paging['distinct_annotations'])} distinct), complete={paging['complete']}, in "
            f"{paging['wall_s']} s (page p50 {fmt(paging['page_p50_ms'])} ms, "
            f"max {fmt(paging['page_max_ms'])} ms; "
            f"gateway CPU {paging['gateway_cpu_s']} s; Phoenix {fmt(up.get('listing_calls'))} listings, "
            f"{fmt(up.get('annotation_reads'))} annotation reads)."
        )
        out.append(
            f"\nGateway RSS (`VmRSS`, measured like `cached_bytes_per_annotation`): "
            f"{memory['rss_before_mib']} MiB before the scope's first page → "
            f"{memory['rss_after_first_page_mib']} MiB after it → **{memory['rss_after_paging_mib']} MiB** "
            f"after the last page = growth **{memory['growth_mib']} MiB** "
            f"({fmt(memory['bytes_per_annotation'])} bytes per annotation paged; target ≤ 128 MiB). "
            f"Sampled every 50 ms: peak {memory['sampled_peak_mib']} MiB "
            f"(+{memory['sampled_peak_growth_mib']} MiB); "
            f"peak RSS (`VmHWM`) {memory['peak_rss_mib']} MiB."
        )
        series = paging.get("rss_series_mib") or []
        if series:
            points = ", ".join(f"{t:g} s {m:g}" for t, m in series[:: max(1, len(series) // 12)])
            out.append(f"\nRSS while paging (MiB): {points}.")
        if paging.get("error"):
            out.append(f"\nPaging stopped on an error: {paging['error']}")
    if row.get("profile_requests"):
        out.append(
            f"\nProfile `scope_first_page` (below): py-spy over {row['profile_requests']} more first "
            f"page(s) ({', '.join(fmt(w, 0) for w in row.get('profile_request_ms') or [])} ms under "
            "py-spy, which pauses the process for every sample) "
            "asked with `Cache-Control: no-cache` on that gateway (discovery and the first chunk's "
            "read go upstream again, as on a cold gateway): an unmeasured run. It counts threads on "
            "CPU only: the time the first page spends waiting for the stand-in's listing pages, one "
            "after the other, is not in it (see the listing window above)."
        )
    return out


def _metrics(res: dict[str, Any]) -> list[str]:
    row = res.get("metrics") or {}
    out = ["", "## Metrics: 100,000 cached annotations grouped by name x source x day", ""]
    warm = row.get("warm")
    if not warm:
        return [*out, _why(row)]
    out.append(
        f"Data: `scale`'s data set — {fmt(row.get('subject_ids'))} session ids (1,000 sessions with "
        "50 Phoenix + 50 Datadog annotations each, 9,000 with none), "
        f"{fmt(row.get('annotations_expected'))} annotations; the upstreams answer after "
        f"{fmt(row.get('upstream_latency_ms'), 0)} ms (any read that missed the cache would show)."
    )
    out.append(
        f"\n**Warming the cache** on a fresh gateway: one search of an unknown id "
        f"({fmt(warm.get('warm_up_ms'))} ms), then `POST /v1/annotations/search` with the "
        f"10,000 ids, `subject_kinds=[session]`, limit 1,000, paged to the end: {fmt(warm['pages'])} "
        f"pages, {fmt(warm['annotations'])} annotations, complete={warm['complete']} in "
        f"{warm['wall_s']} s (first page {fmt(warm.get('first_page_ms'), 0)} ms, later pages p50 "
        f"{fmt(warm.get('page_p50_ms'))} ms). RSS {warm['rss_before_mib']} MiB before → "
        f"**{warm['rss_warm_mib']} MiB warm** (VmHWM {warm['peak_rss_mib']} MiB)."
        + (f" Stopped on: {warm['error']}" if warm.get("error") else "")
    )
    if not row.get("runs"):
        return [*out, "\nNo metrics request was measured (the cache was not warmed completely)."]
    answer = row.get("answer") or {}
    sources = ", ".join(
        f"{s.get('source')} {s.get('status')} count={fmt(s.get('count'))} cached={s.get('cached')}"
        for s in answer.get("sources") or []
    )
    up = row.get("upstream") or {}
    out.append(
        f"\n**Measured**: {len(row['runs'])} sequential `POST /v1/annotations/metrics` with the same "
        f"10,000 ids, `subject_kinds=[session]`, `group_by=[{', '.join(row.get('group_by') or [])}]`, "
        f"`interval={row.get('interval')}` — median wall time **{fmt(row.get('wall_ms'))} ms** "
        f"(every run: {', '.join(fmt(w, 1) for w in row.get('wall_ms_all') or [])} ms); server side "
        f"(`Server-Timing: gateway;dur=`) median **{fmt(row.get('server_ms'))} ms** "
        f"({', '.join(fmt(w, 1) for w in row.get('server_ms_all') or [])} ms); gateway CPU "
        f"{fmt(row.get('gateway_cpu_ms_per_request'))} ms per request (each run: "
        f"{', '.join(fmt(c, 0) for c in row.get('gateway_cpu_ms_all') or [])} ms, in 10 ms ticks); "
        f"fastest run {fmt(row.get('wall_ms_min'))} ms. Other processes' share of core 0 during "
        f"each run: {', '.join(f'{fmt(c, 0)} %' for c in row.get('core0_foreign_pct_all') or [])} "
        "(no upstream call: the request is the gateway's CPU work, and wall time beyond its CPU "
        "time is time core 0 spent on something else)."
    )
    out.append(
        f"\nAnswer checked on every run (status 200, `partial` false, Σ `count` = "
        f"{fmt(row.get('annotations_expected'))}): complete={row.get('complete')}. Last answer: "
        f"{fmt(answer.get('rows'))} rows, Σ count {fmt(answer.get('count'))}, Σ score_count "
        f"{fmt(answer.get('score_count'))}, buckets {', '.join(answer.get('buckets') or [])}, "
        f"{fmt(answer.get('bytes'))} bytes; sources: {sources}. Upstream calls during the runs: "
        f"Phoenix {fmt(up.get('phoenix_calls'))}, Datadog {fmt(up.get('datadog_calls'))} "
        f"(all from the cache: {row.get('all_from_cache')})."
    )
    memory = row.get("memory") or {}
    if memory:
        out.append(
            f"\nGateway RSS across the metrics requests, relative to the warm level (VmHWM was "
            f"already {memory['hwm_warm_mib']} MiB from the warm-up, so RSS is sampled every 10 ms "
            f"during the requests, {fmt(memory.get('samples'))} samples): warm "
            f"{memory['rss_warm_mib']} MiB → sampled peak {memory['sampled_peak_mib']} MiB → "
            f"{memory['rss_after_mib']} MiB after (after each run: "
            f"{', '.join(fmt(x, 1) for x in memory.get('rss_after_each_mib') or [])}); VmHWM "
            f"{memory['hwm_after_mib']} MiB (rose: {memory['hwm_rose']}). Growth = the largest of "
            f"peak - warm, after - warm and (VmHWM - warm, when it rose): **{memory['growth_mib']} MiB**."
        )
        series = memory.get("rss_series_mib") or []
        if series:
            points = ", ".join(f"{t:g} s {m:g}" for t, m in series[:: max(1, len(series) // 12)])
            out.append(f"\nRSS during the requests (MiB): {points}.")
    if row.get("profile_requests"):
        profiled = ", ".join(fmt(w, 0) for w in row.get("profile_request_ms") or [])
        out.append(
            f"\nProfile `metrics_100k` (below): py-spy over {row['profile_requests']} more of the same "
            f"request on the same warm gateway ({profiled} "
            "ms under py-spy, which pauses the process for every sample): an unmeasured run."
        )
    return out


def _misses(report: dict[str, Any], profiles: dict[str, ProfileSummary]) -> list[str]:
    """For each target not met: the figure, and what the profile of that scenario shows."""
    missed = [v for v in report["verdicts"] if v["met"] is False]
    if not missed:
        return []
    profile_of = {
        "cache_hit_vs_hello": "cache_hit",
        "miss_cpu_vs_reference": "cache_miss",
        "overhead_p50_ms": "overhead",
        "overhead_p99_ms": "overhead",
        "naive_miss_speedup": "cache_miss",
        "naive_hit_speedup": "cache_hit",
        "search_10k_first_page_ms": "search_10k",
        "cached_bytes_per_annotation": "search_10k",
        "export_first_byte_ms": "export_1m",
        "export_1m_rss_growth_mib": "export_1m",
        "scope_first_page_vs_id_query": "scope_first_page",
        "scope_rss_growth_mib": "scope_first_page",
        "metrics_100k_ms": "metrics_100k",
        "metrics_rss_growth_mib": "metrics_100k",
    }
    out = ["", "## Targets not met", ""]
    for v in missed:
        name = profile_of.get(v["key"], "")
        by = shortfall(v)
        line = f"- **{v['what']}**: measured {fmt(v['value'])}, target {v['target']}" + (
            f": {by}." if by else "."
        )
        summary = profiles.get(name)
        if summary is not None and not summary.error:
            top = ", ".join(f"`{n}` {p:.0f}%" for n, p in summary.by_category[:6])
            line += f" Profile `{name}` (below): leaf-frame time by package — {top}."
            if v["key"] in MEMORY_KEYS:
                line += " (A CPU profile: it shows what builds the memory, not what holds it.)"
        out.append(line)
    return out


def markdown(report: dict[str, Any], profiles: dict[str, ProfileSummary]) -> str:
    res = report["results"]
    meta = report["meta"]
    out: list[str] = ["# annotation-gateway benchmark", ""]
    out.append(
        f"Run {meta['date']} on {meta['machine']} ({meta['cpus']} cores), commit `{meta['commit']}`, "
        f"Python {meta['python']}. Servers pinned to core 0, wrk to core 1; "
        f"{meta['duration_s']:.0f} s per measured wrk run ({meta.get('rounds', 1)} interleaved rounds "
        f"for the throughput scenarios, warm-up before each), {meta['connections']} connections "
        f"unless stated; the whole run took {meta['elapsed_s']:.0f} s."
    )
    runs = meta.get("scenario_runs") or {}
    if meta.get("carried_over"):
        carried = "; ".join(
            f"`{name}` ({runs.get(name, {}).get('date', '?')}, "
            f"commit `{runs.get(name, {}).get('commit', '?')}`)"
            for name in meta["carried_over"]
        )
        ran = ", ".join(f"`{n}`" for n in meta.get("scenarios", []) if n not in meta["carried_over"])
        out.append(
            f"\nThis run measured {ran} only (`--only`); the other sections are carried over from "
            f"earlier runs: {carried}."
        )
    if meta.get("code_snapshot"):
        out.append(
            f"\nThe gateway (and the Datadog simulator) ran from a snapshot of commit "
            f"`{meta['commit']}`'s `src/` (`--gateway-commit`, `git archive`), not from the "
            "working tree."
        )
    if meta.get("worktree_changes"):
        out.append(
            "\nThe working tree had uncommitted changes outside `bench/` when this run started "
            f"(the code measured is commit `{meta['commit']}` plus them): "
            + ", ".join(f"`{p}`" for p in meta["worktree_changes"][:20])
            + "."
        )
    out += ["", "## Targets", "", "| check | measured | target | met |", "|---|---:|---:|:---:|"]
    for v in report["verdicts"]:
        mark = "—" if v["met"] is None else ("yes" if v["met"] else "**no**")
        out.append(f"| {v['what']} | {fmt(v['value'])} | {v['target']} | {mark} |")
    r = report["ratios"]
    diag = []
    if "cache_hit_vs_same_bytes" in r:
        size = (res.get("cache_hit") or {}).get("answer", {}).get("bytes")
        diag.append(
            f"cache hit / a bare endpoint sending the same {fmt(size)} "
            f"bytes = **{fmt(r['cache_hit_vs_same_bytes'])}** (what the gateway's own work costs on a hit, "
            f"the payload's size aside)"
        )
    if "cache_hit_vs_hello_by_cpu" in r:
        diag.append(
            f"cache hit vs hello by CPU per request (1/CPU = what each could serve on a core of its "
            f"own, robust to other load) = **{fmt(r['cache_hit_vs_hello_by_cpu'])}**"
        )
    if "miss_rps_vs_reference" in r:
        diag.append(f"cache miss req/s / reference fan-out req/s = {fmt(r['miss_rps_vs_reference'])}")
    if "workers_2_vs_1_hit_throughput" in r:
        diag.append(
            "cache-hit req/s of `serve --workers 2` / `--workers 1` (both on both cores, wrk "
            f"sharing core 1: see the notes) = **{fmt(r['workers_2_vs_1_hit_throughput'])}**"
        )
    if diag:
        out += ["", "Diagnostics: " + "; ".join(diag) + "."]
    out += _misses(report, profiles)
    out += ["", "## Throughput scenarios", "", *_throughput(res)]
    out += _overhead(res)
    out += _naive(res)
    out += _scale(res)
    out += _export_1m(res)
    out += _scope(res)
    out += _metrics(res)
    failed = {k: v for k, v in res.items() if isinstance(v, dict) and "error" in v}
    if failed:
        out += ["", "## Scenario errors", ""]
        out += [f"- `{k}`: {v['error'][:1500]}" for k, v in failed.items()]
    if profiles:
        out += ["", "## Profiles", ""]
        for name, summary in profiles.items():
            out += [f"### {name}", "", summary.markdown()]
    if report.get("analysis"):
        out += ["", "## Analysis", "", report["analysis"]]
    out += ["", "## Set-up and caveats", ""]
    out += [f"- {note}" for note in meta["notes"]]
    return "\n".join(out) + "\n"
