"""``GET /v1/webhooks``: each configured webhook's delivery status (SPEC §10).

Contract: authenticated like the other ``/v1`` routes. The answer is ``{"data": [...]}``, one
:class:`WebhookStatusModel` per configured webhook in configuration order, read from the
webhooks' SQLite state (so every worker of ``serve --workers N`` answers the same, whichever
one delivers). A key limited to some sources sees only the webhooks whose ``filters.sources``
lie within them (a webhook without that filter reads every source). Nothing secret is shown:
the URL without credentials, query or fragment; errors as ``HTTP <status>``, an exception's
class name or a problem code; never the signing secret or the variable's value.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from annotation_gateway.api.auth import BEARER_SECURITY, AuthDep
from annotation_gateway.api.schemas import PROBLEM_RESPONSES
from annotation_gateway.webhooks.deliver import WebhookService, WebhookStatus

__all__ = ["WebhookList", "WebhookStatusModel", "router"]

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])


class WebhookStatusModel(BaseModel):
    name: str
    url: str = Field(description="Where batches are POSTed: scheme, host, port and path only.")
    enabled: bool
    state: Literal["idle", "pending", "retrying", "suspended", "disabled"] = Field(
        description="`idle`: nothing waiting; `pending`: a message stored, not yet tried; "
        "`retrying`: its attempts failed so far; `suspended`: `max_attempts` failed, the message "
        "is kept and sent again after a restart; `disabled`: `enabled = false`."
    )
    delivered_messages: int = Field(description="Messages answered with a 2xx, ever.")
    delivered_annotations: int = Field(description="Annotations in those messages.")
    last_success_at: datetime | None = Field(description="When the last 2xx came.")
    last_error: str | None = Field(
        description="The last failure: `HTTP <status>`, `timeout (<class>)`, a transport error's "
        "class, or `feed: <problem code>` when reading the changes failed."
    )
    last_error_at: datetime | None
    pending_id: str | None = Field(description="The pending message's `webhook-id`.")
    pending_annotations: int | None
    pending_attempts: int = Field(description="Failed attempts of the pending message (0: none pending).")
    pending_since: datetime | None = Field(description="When the pending message was stored.")


class WebhookList(BaseModel):
    data: list[WebhookStatusModel]


def _time(at: float | None) -> datetime | None:
    return None if at is None else datetime.fromtimestamp(at, tz=UTC)


def _model(status: WebhookStatus) -> WebhookStatusModel:
    return WebhookStatusModel(
        name=status.name,
        url=status.url,
        enabled=status.enabled,
        state=status.state,
        delivered_messages=status.delivered_messages,
        delivered_annotations=status.delivered_annotations,
        last_success_at=_time(status.last_success_at),
        last_error=status.last_error,
        last_error_at=_time(status.last_error_at),
        pending_id=status.pending_id,
        pending_annotations=status.pending_annotations,
        pending_attempts=status.pending_attempts,
        pending_since=_time(status.pending_since),
    )


@router.get(
    "",
    operation_id="list_webhooks",
    summary="Each webhook's delivery status",
    description="Every configured `[[webhooks]]` entry: its URL (without credentials or query), "
    "state, last success, last error, the pending message's attempts and age, and how many "
    "messages were delivered. A key limited to some sources sees the webhooks within them.",
    response_model=WebhookList,
    responses={401: PROBLEM_RESPONSES[401], 429: PROBLEM_RESPONSES[429]},
    openapi_extra=BEARER_SECURITY,
)
async def list_webhooks(request: Request, principal: AuthDep) -> Response:
    service: WebhookService | None = getattr(request.app.state, "webhooks", None)
    statuses = [] if service is None else await service.status()
    allowed = principal.allowed_sources
    if allowed is not None:
        statuses = [s for s in statuses if s.sources and set(s.sources) <= allowed]
    answer = WebhookList(data=[_model(s) for s in statuses])
    return Response(answer.model_dump_json(), media_type="application/json")
