"""The bare FastAPI endpoints the gateway's cache hit is compared with.

- ``GET /hello`` returns ``{"message": "hello"}``: the framework's own ceiling on this machine.
  The cache-hit ratio of issue 7 is the gateway's throughput divided by this endpoint's.
- ``GET /answer`` returns fixed pre-serialized bytes — the gateway's real cache-hit answer, which
  the bench captures into ``BENCH_ANSWER_FILE`` before starting this app: the ceiling for *any*
  implementation that must send that many bytes, so the report can tell the cost of the payload
  size from the cost of the gateway's own work.

Both are served by :mod:`bench.serve` (the gateway's uvicorn configuration) and loaded by the
same wrk command as the gateway.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import Response

app = FastAPI(title="bench hello", docs_url=None, redoc_url=None, openapi_url=None)

_ANSWER_FILE = os.environ.get("BENCH_ANSWER_FILE")
_ANSWER = Path(_ANSWER_FILE).read_bytes() if _ANSWER_FILE else b"{}"


@app.get("/hello")
async def hello() -> dict[str, str]:
    return {"message": "hello"}


@app.get("/answer")
async def answer() -> Response:
    return Response(_ANSWER, media_type="application/json")
