"""The simulator's control API.

Contract: the control API under ``/_simulator`` (package docstring): health, switches, reset,
seed and the request log; never behind Datadog auth, never failing.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from annotation_gateway.simulators.datadog.state import SimulatorState
from annotation_gateway.simulators.datadog.store import (
    SimApiError,
)


def _control_json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


async def _control_body(request: Request) -> Any:
    raw = await request.body()
    return orjson.loads(raw) if raw.strip() else {}


async def control_health(request: Request) -> Response:
    return _control_json({"ok": True})


async def control_config(request: Request) -> Response:
    state: SimulatorState = request.app.state.simulator
    if request.method == "POST":
        try:
            changes = await _control_body(request)
            if not isinstance(changes, dict):
                raise ValueError("the body must be an object of switches")
            state.configure(**changes)
        except ValueError as exc:  # pydantic's ValidationError and orjson's errors are ValueErrors
            return _control_json({"detail": str(exc)}, 400)
    return _control_json(state.switches.model_dump(mode="json"))


async def control_reset(request: Request) -> Response:
    state: SimulatorState = request.app.state.simulator
    try:
        body = await _control_body(request)
    except ValueError as exc:
        return _control_json({"detail": str(exc)}, 400)
    state.reset(data=bool(body.get("data", True)), switches=bool(body.get("switches", True)))
    return _control_json({"ok": True})


async def control_seed(request: Request) -> Response:
    state: SimulatorState = request.app.state.simulator
    try:
        doc = await _control_body(request)
        return _control_json(state.load_seed(doc))
    except SimApiError as exc:
        return _control_json({"errors": exc.errors}, exc.status)
    except ValueError as exc:
        return _control_json({"detail": str(exc)}, 400)


async def control_requests(request: Request) -> Response:
    state: SimulatorState = request.app.state.simulator
    if request.method == "DELETE":
        state.clear_requests()
        return Response(status_code=204)
    return _control_json(
        {
            "max_in_flight": state.max_in_flight,
            "requests": [
                {"method": r.method, "path": r.path, "query": r.raw_query, "status": r.status}
                for r in state.requests
            ],
        }
    )
