"""The bench's data sets, the same on both upstreams, and the gateway config that reads them.

- **hot**: 5 sessions (``hot-0`` .. ``hot-4``). Phoenix: 10 session annotations each (50 rows);
  Datadog: one interaction per session in queue ``bench-hot``, annotated by one user with 10
  label values (4 score, 3 categorical, 2 boolean, 1 text) = 10 canonical annotations each (50).
  A query for the five sessions therefore answers 100 annotations, 50 from each vendor.
- **big**: 1,000 sessions (``b-0000`` ..). Phoenix: 50 annotations each (50,000 rows); Datadog:
  one interaction each in queue ``bench-big``, annotated by 5 users with 10 label values each
  (50 canonical per session, 50,000 in all): 100,000 annotations.
- **empty**: 9,000 more session ids that exist nowhere (most ids a dashboard asks about have no
  annotation): the 10,000-id search is big + empty.
- **export**: 1,000 sessions (``x-00000`` ..) with 1,000 Phoenix annotations each: the
  1,000,000-annotation export (``--export-annotations`` scales it: sessions = annotations //
  1,000). Phoenix only, generated lazily inside the stand-in (``"lazy": true``: its rows are
  built when read, so the data set costs no memory and no seeding time); the export asks for
  ``source=phoenix-bench``. Loading a million annotations into the Datadog simulator through its
  seed format would take minutes and gigabytes, more than the bench's time budget allows.

- **scope** (``scope`` only): 10,000 sessions (``s-00000`` ..) with 10 Phoenix session annotations
  each (100,000 annotations) in a project of their own, ``bench-scope``, so that ``scope=all``
  enumerates exactly them whatever other scenario seeded project ``bench`` before. Phoenix only,
  read by a gateway whose config has the Phoenix source alone (:func:`write_gateway_config` with
  ``datadog=False``): a Datadog source would add its own queue discovery and reads to the scope
  walk, which is not what the scenario measures.

Phoenix data are generated inside the stand-in (``POST /_bench/seed``); Datadog data are loaded
through the simulator's seed document format (``POST /_simulator/seed``), which goes through the
same validation as Datadog's own API.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

PROJECT = "bench"
GATEWAY_KEY = "bench-gateway-key-0123456789"
DD_API_KEY = "bench-dd-api-key-0123456789"
DD_APP_KEY = "bench-dd-app-key-0123456789"
PHOENIX_SOURCE = "phoenix-bench"
DATADOG_SOURCE = "datadog-bench"

HOT_IDS = [f"hot-{i}" for i in range(5)]
BIG_IDS = [f"b-{i:04d}" for i in range(1000)]
EMPTY_IDS = [f"e-{i:04d}" for i in range(9000)]
PHOENIX_HOT_PER_SUBJECT = 10
PHOENIX_BIG_PER_SUBJECT = 50
DATADOG_BIG_USERS = 5
SCOPE_PROJECT = "bench-scope"
SCOPE_IDS = [f"s-{i:05d}" for i in range(10_000)]
SCOPE_PER_SUBJECT = 10
EXPORT_ANNOTATIONS = 1_000_000
EXPORT_PER_SUBJECT = 1000
PHOENIX_PAGE_SIZE = 10_000
"""Rows per Phoenix page the gateway asks for: the stand-in's (and Phoenix's) ``limit`` maximum."""

LABEL_SCHEMAS: list[dict[str, Any]] = [
    {"name": "accuracy", "type": "score", "min": 0, "max": 5, "is_integer": True, "has_reasoning": True},
    {"name": "helpfulness", "type": "score", "min": 0, "max": 5},
    {"name": "tone", "type": "score", "min": 0, "max": 10},
    {"name": "latency_ok", "type": "score", "min": 0, "max": 1},
    {"name": "topic", "type": "categorical", "values": ["billing", "bug", "how-to", "other"]},
    {"name": "intent", "type": "categorical", "values": ["ask", "complain", "praise"]},
    {"name": "language", "type": "categorical", "values": ["en", "fr", "de"]},
    {"name": "resolved", "type": "boolean", "has_assessment": True},
    {"name": "escalated", "type": "boolean"},
    {"name": "feedback", "type": "text"},
]
BASE_TIME = datetime(2026, 2, 1, tzinfo=UTC)


def _rfc3339(offset_s: int) -> str:
    return (BASE_TIME + timedelta(seconds=offset_s)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _label_values(n: int) -> dict[str, Any]:
    return {
        "accuracy": n % 6,
        "helpfulness": round((n % 50) / 10, 1),
        "tone": n % 11,
        "latency_ok": n % 2,
        "topic": [["billing", "bug", "how-to", "other"][n % 4]],
        "intent": [["ask", "complain", "praise"][n % 3]],
        "language": [["en", "fr", "de"][n % 3]],
        "resolved": n % 3 != 0,
        "escalated": n % 5 == 0,
        "feedback": f"bench feedback {n}",
    }


def datadog_seed(queue: str, content_ids: list[str], users: int) -> dict[str, Any]:
    """A simulator seed document: one session interaction per content id, ``users`` annotations."""
    interactions = []
    n = 0
    for index, content_id in enumerate(content_ids):
        annotations = []
        for user in range(users):
            n += 1
            annotations.append(
                {
                    "user": f"bench-user-{user}",
                    "created_at": _rfc3339(n),
                    "modified_at": _rfc3339(n + 10),
                    "label_values": _label_values(n),
                }
            )
        interactions.append(
            {
                "type": "session",
                "content_id": content_id,
                "created_at": _rfc3339(index),
                "annotations": annotations,
            }
        )
    return {
        "queues": [
            {
                "name": queue,
                "project_id": PROJECT,
                "label_schemas": LABEL_SCHEMAS,
                "interactions": interactions,
            }
        ]
    }


def phoenix_seed(subject_ids: list[str], per_subject: int, *, project: str = PROJECT) -> dict[str, Any]:
    return {"project": project, "kind": "session", "subject_ids": subject_ids, "per_subject": per_subject}


def export_plan(annotations: int) -> tuple[list[str], int]:
    """The export data set's session ids and annotations per session for ``annotations``
    (rounded down to a whole number of sessions of 1,000; fewer than 1,000: one session)."""
    per_subject = max(1, min(EXPORT_PER_SUBJECT, annotations))
    sessions = max(1, annotations // per_subject)
    return [f"x-{i:05d}" for i in range(sessions)], per_subject


def phoenix_lazy_seed(subject_ids: list[str], per_subject: int) -> dict[str, Any]:
    """A stand-in seed whose rows are generated when read (``bench/phoenix_standin.py``)."""
    return phoenix_seed(subject_ids, per_subject) | {"lazy": True}


def key_sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def write_gateway_config(
    path: Path,
    *,
    port: int,
    phoenix_url: str,
    datadog_url: str,
    ttl_s: float = 600.0,
    max_stale_s: float | None = None,
    timeout_s: float = 10.0,
    max_concurrency: int = 64,
    project: str = PROJECT,
    datadog: bool = True,
) -> Path:
    """The gateway's TOML for the bench: auth on with a known key, both loopback upstreams
    (``datadog=False``: the Phoenix source alone, reading ``project``)."""
    datadog_source = f"""
[[sources]]
name = "{DATADOG_SOURCE}"
provider = "datadog"
base_url = "{datadog_url}"
api_key_env = "BENCH_DD_API_KEY"
app_key_env = "BENCH_DD_APP_KEY"
timeout_s = {timeout_s}
max_concurrency = {max_concurrency}
"""
    path.write_text(
        f"""# generated by bench/run.py
[server]
host = "127.0.0.1"
port = {port}
access_log = false

[auth]
enabled = true
[[auth.keys]]
name = "bench"
sha256 = "{key_sha256(GATEWAY_KEY)}"

[cache]
enabled = true
ttl_s = {ttl_s}
max_stale_s = {max_stale_s if max_stale_s is not None else max(ttl_s, 300.0)}
max_entries = 200000

[[sources]]
name = "{PHOENIX_SOURCE}"
provider = "phoenix"
base_url = "{phoenix_url}"
project = "{project}"
timeout_s = {timeout_s}
max_concurrency = {max_concurrency}
page_size = {PHOENIX_PAGE_SIZE}
{datadog_source if datadog else ""}""",
        encoding="utf-8",
    )
    return path


def gateway_env() -> dict[str, str]:
    """Environment of the gateway process: the Datadog keys its config names."""
    return {"BENCH_DD_API_KEY": DD_API_KEY, "BENCH_DD_APP_KEY": DD_APP_KEY}
