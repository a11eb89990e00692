"""The minimal reference fan-out: what the gateway's miss path costs with nothing but plumbing.

One FastAPI endpoint, ``GET /fanout?subject_id=a&subject_id=b``, asks the Phoenix upstream
(``session_annotations``, every page) and the Datadog upstream (``annotated-interactions``, every
page) concurrently through one shared aiohttp session, parses both with orjson, concatenates the
rows and answers them as orjson bytes. No validation, no canonical mapping, no cache, no
ordering: the floor a fan-out gateway on this stack cannot go below. The bench compares the
gateway's CPU time per cache-miss request with this app's (target: at most 1.5x).

Configured from the environment (the bench sets these): ``BENCH_PHOENIX_URL``,
``BENCH_PHOENIX_PROJECT``, ``BENCH_PHOENIX_PAGE_SIZE`` (default 10000, like the provider),
``BENCH_DATADOG_URL``, ``BENCH_DATADOG_PAGE_SIZE`` (default 100, like the provider),
``BENCH_DD_API_KEY``, ``BENCH_DD_APP_KEY``. Served by :mod:`bench.serve`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import orjson
from fastapi import FastAPI, Query
from fastapi.responses import Response

MAX_PAGES = 10_000  # every paging loop is bounded


class Upstreams:
    """The two upstreams behind one shared aiohttp session."""

    def __init__(self) -> None:
        self.phoenix_url = os.environ.get("BENCH_PHOENIX_URL", "http://127.0.0.1:6106").rstrip("/")
        self.project = os.environ.get("BENCH_PHOENIX_PROJECT", "bench")
        self.phoenix_page = int(os.environ.get("BENCH_PHOENIX_PAGE_SIZE", "10000"))
        self.datadog_url = os.environ.get("BENCH_DATADOG_URL", "http://127.0.0.1:6107").rstrip("/")
        self.datadog_page = int(os.environ.get("BENCH_DATADOG_PAGE_SIZE", "100"))
        self.dd_headers = {
            "DD-API-KEY": os.environ.get("BENCH_DD_API_KEY", "bench-api-key"),
            "DD-APPLICATION-KEY": os.environ.get("BENCH_DD_APP_KEY", "bench-app-key"),
        }
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=128, keepalive_timeout=30)
        self.session = aiohttp.ClientSession(
            connector=connector, json_serialize=lambda o: orjson.dumps(o).decode()
        )

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def phoenix(self, subject_ids: list[str]) -> list[Any]:
        assert self.session is not None
        rows: list[Any] = []
        cursor: str | None = None
        url = f"{self.phoenix_url}/v1/projects/{self.project}/session_annotations"
        for _ in range(MAX_PAGES):
            params: list[tuple[str, str]] = [("session_ids", s) for s in subject_ids]
            params.append(("limit", str(self.phoenix_page)))
            if cursor:
                params.append(("cursor", cursor))
            async with self.session.get(url, params=params) as response:
                body = await response.read()
                if response.status == 404:
                    return rows
                response.raise_for_status()
            page = orjson.loads(body)
            rows.extend(page["data"])
            cursor = page.get("next_cursor")
            if not cursor:
                break
        return rows

    async def datadog(self, subject_ids: list[str]) -> list[Any]:
        assert self.session is not None
        interactions: list[Any] = []
        url = f"{self.datadog_url}/api/v2/llm-obs/v1/annotated-interactions"
        offset = 0
        for _ in range(MAX_PAGES):
            params: list[tuple[str, str]] = [("contentIds", s) for s in subject_ids]
            params += [("offset", str(offset)), ("limit", str(self.datadog_page))]
            async with self.session.get(url, params=params, headers=self.dd_headers) as response:
                body = await response.read()
                response.raise_for_status()
            attributes = orjson.loads(body)["data"]["attributes"]
            page = attributes["annotated_interactions"]
            interactions.extend(page)
            offset += len(page)
            if not page or offset >= attributes["total_count"]:
                break
        return interactions


upstreams = Upstreams()


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    await upstreams.start()
    try:
        yield
    finally:
        await upstreams.close()


app = FastAPI(
    title="bench reference fan-out", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
)


@app.get("/fanout")
async def fanout(subject_id: list[str] = Query(...)) -> Response:
    phoenix_rows, datadog_rows = await asyncio.gather(
        upstreams.phoenix(subject_id), upstreams.datadog(subject_id)
    )
    body = orjson.dumps({"data": phoenix_rows + datadog_rows})
    return Response(body, media_type="application/json")
