"""Request body guard (size and media type), as a pure ASGI middleware in front of the routes.

Contract:
- a request whose body is larger than :data:`MAX_REQUEST_BODY_BYTES` is answered 413
  ``payload_too_large`` (problem+json naming the limit) — at once when ``Content-Length`` says
  so, otherwise as soon as the streamed body passes the limit — and the app never sees the rest
  of the body. This bounds the memory one request can make the JSON parser and pydantic use;
- every body the API takes is JSON: a request that declares another ``Content-Type``, or that
  has a body and declares none, is answered 415 ``unsupported_media_type`` naming the one it
  takes (a body without a media type is not known to be JSON; the parser's 422 would blame the
  content instead).
"""

from __future__ import annotations

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from annotation_gateway.api.problems import problem_response
from annotation_gateway.errors import PayloadTooLargeError, UnsupportedMediaTypeError

__all__ = ["MAX_REQUEST_BODY_BYTES", "BodyLimitMiddleware"]

MAX_REQUEST_BODY_BYTES = 8 * 1024 * 1024
"""Largest request body accepted: 10,000 subject ids or 5,000 write items fit with room to spare."""


def _is_json(content_type: bytes) -> bool:
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))


class _TooLarge(StarletteHTTPException):
    """Raised from ``receive``: FastAPI re-raises an HTTPException met while reading the body
    (any other exception would become its generic 400), and the problem handler maps 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=_too_large(limit).detail)


def _too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"the request body exceeds the limit of {limit} bytes")


class BodyLimitMiddleware:
    """413 for bodies over ``max_bytes``."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_REQUEST_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        typed = has_body = False
        for name, value in scope["headers"]:
            if name == b"content-type":
                typed = True
            elif name == b"transfer-encoding":
                has_body = True
            if name == b"content-type" and not _is_json(value):
                error = UnsupportedMediaTypeError(
                    f"send the body as application/json, not {value.decode('latin-1')[:100]}"
                )
                await problem_response(error, instance=scope["path"])(scope, receive, send)
                return
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                has_body = has_body or declared > 0
                if declared > self.max_bytes:
                    response = problem_response(_too_large(self.max_bytes), instance=scope["path"])
                    await response(scope, receive, send)
                    return
        if has_body and not typed:
            error = UnsupportedMediaTypeError("send the body as application/json (Content-Type is missing)")
            await problem_response(error, instance=scope["path"])(scope, receive, send)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if started:
                raise
            response = problem_response(_too_large(self.max_bytes), instance=scope["path"])
            await response(scope, receive, send)
