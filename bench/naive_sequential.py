"""What a user would write instead of the gateway: Phoenix, then Datadog, then merge.

A plain script with one ``httpx.Client``: read every page of the Phoenix session annotations,
then every page of the Datadog annotated interactions, flatten both into one list of
``{source, subject, name, label, score, updated_at}`` dicts and sort it newest first. No cache, no
concurrency. The bench runs it as ``python -m bench.naive_sequential ... --repeat N --json`` on
the client core and compares its time per query with the gateway's (miss and hit).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

import httpx

MAX_PAGES = 10_000  # every paging loop is bounded


def fetch_phoenix(
    client: httpx.Client, base_url: str, project: str, subject_ids: list[str]
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(MAX_PAGES):
        params: list[tuple[str, str | int | float | bool | None]] = [("session_ids", s) for s in subject_ids]
        params.append(("limit", "1000"))
        if cursor:
            params.append(("cursor", cursor))
        response = client.get(f"{base_url}/v1/projects/{project}/session_annotations", params=params)
        if response.status_code == 404:
            break
        response.raise_for_status()
        page = response.json()
        for row in page["data"]:
            result = row.get("result") or {}
            out.append(
                {
                    "source": "phoenix",
                    "subject": row["session_id"],
                    "name": row["name"],
                    "label": result.get("label"),
                    "score": result.get("score"),
                    "updated_at": row["updated_at"],
                }
            )
        cursor = page.get("next_cursor")
        if not cursor:
            break
    return out


def fetch_datadog(
    client: httpx.Client, base_url: str, headers: dict[str, str], subject_ids: list[str]
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    offset = 0
    for _ in range(MAX_PAGES):
        params: list[tuple[str, str | int | float | bool | None]] = [("contentIds", s) for s in subject_ids]
        params += [("offset", str(offset)), ("limit", "100")]
        response = client.get(
            f"{base_url}/api/v2/llm-obs/v1/annotated-interactions", params=params, headers=headers
        )
        response.raise_for_status()
        attributes = response.json()["data"]["attributes"]
        interactions = attributes["annotated_interactions"]
        for interaction in interactions:
            for annotation in interaction.get("annotations", []):
                values = annotation.get("label_values") or []
                if isinstance(values, dict):
                    values = [{"name_when_saved": k, "value": v} for k, v in values.items()]
                for value in values:
                    v = value.get("value")
                    out.append(
                        {
                            "source": "datadog",
                            "subject": interaction["content_id"],
                            "name": value.get("name_when_saved") or value.get("label_schema_id"),
                            "label": v if isinstance(v, str) else None,
                            "score": v if isinstance(v, int | float) and not isinstance(v, bool) else None,
                            "updated_at": annotation.get("modified_at") or interaction.get("modified_at"),
                        }
                    )
        offset += len(interactions)
        if not interactions or offset >= attributes["total_count"]:
            break
    return out


def query(
    client: httpx.Client,
    *,
    phoenix_url: str,
    project: str,
    datadog_url: str,
    dd_headers: dict[str, str],
    subject_ids: list[str],
) -> list[dict[str, Any]]:
    """One merged answer: Phoenix first, then Datadog, newest first."""
    merged = fetch_phoenix(client, phoenix_url, project, subject_ids)
    merged += fetch_datadog(client, datadog_url, dd_headers, subject_ids)
    merged.sort(key=lambda a: a["updated_at"] or "", reverse=True)
    return merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Naive sequential Phoenix-then-Datadog query.")
    parser.add_argument("--phoenix-url", required=True)
    parser.add_argument("--project", default="bench")
    parser.add_argument("--datadog-url", required=True)
    parser.add_argument("--dd-api-key", default="bench-api-key")
    parser.add_argument("--dd-app-key", default="bench-app-key")
    parser.add_argument("--subject-id", action="append", required=True)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--json", action="store_true", help="print timings as one JSON object")
    args = parser.parse_args(argv)
    headers = {"DD-API-KEY": args.dd_api_key, "DD-APPLICATION-KEY": args.dd_app_key}
    times_ms: list[float] = []
    count = 0
    with httpx.Client(timeout=30.0, trust_env=False) as client:
        for _ in range(max(1, min(args.repeat, 1000))):
            start = time.perf_counter()
            merged = query(
                client,
                phoenix_url=args.phoenix_url.rstrip("/"),
                project=args.project,
                datadog_url=args.datadog_url.rstrip("/"),
                dd_headers=headers,
                subject_ids=args.subject_id,
            )
            times_ms.append((time.perf_counter() - start) * 1000)
            count = len(merged)
    summary = {
        "annotations": count,
        "repeat": len(times_ms),
        "p50_ms": statistics.median(times_ms),
        "min_ms": min(times_ms),
        "max_ms": max(times_ms),
        "times_ms": times_ms,
    }
    if args.json:
        import json

        print(json.dumps(summary))
    else:
        print(f"{count} annotations; median {summary['p50_ms']:.1f} ms over {len(times_ms)} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
