"""The bare FastAPI ``hello`` endpoint: the framework's own ceiling on this machine.

The cache-hit ratio of the bench is the gateway's throughput divided by this app's, both served
by :mod:`bench.serve` (same uvicorn configuration) and loaded by the same wrk command.
"""

from __future__ import annotations

from fastapi import FastAPI

app = FastAPI(title="bench hello", docs_url=None, redoc_url=None, openapi_url=None)


@app.get("/hello")
async def hello() -> dict[str, str]:
    return {"message": "hello"}
