"""Gateway authentication: ``Authorization: Bearer <key>`` against SHA-256 digests from the config.

Contract:
- keys are configured only as hex SHA-256 digests (``annotation-gateway hash-key`` prints one);
  the presented key is hashed and its digest looked up in a dict of the configured digests.
  The lookup's timing depends only on the presented digest, and the digest of a key the caller
  does not know tells it nothing about the configured ones (it cannot choose a digest, only a
  key: finding a preimage is the hard part), so this leaks no more than a constant-time
  comparison against every digest did, at a fraction of its cost;
- no or malformed ``Authorization`` → :class:`UnauthorizedError` (401, ``WWW-Authenticate:
  Bearer``); an unknown key → the same 401 (a client cannot tell "missing" from "wrong" by timing);
- a key limited to some sources yields a :class:`Principal` whose ``allowed_sources`` the
  federation enforces (403 ``forbidden`` for a source outside it; only its sources otherwise);
- with ``auth.enabled = false`` (allowed by the settings only on a loopback listener) every
  request is the anonymous principal with access to every source;
- :func:`authenticate` then counts the request against the key's ``rate_limit``
  (:mod:`.ratelimit`: 429 ``rate_limited`` beyond it), for routed and fast-lane requests alike.

The key itself is never stored, logged or put in a metric label; only the key's configured
``name`` is (on ``request.state.principal``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from starlette.types import Scope

from annotation_gateway.api.ratelimit import ClientLimits
from annotation_gateway.errors import UnauthorizedError
from annotation_gateway.federation import Federation
from annotation_gateway.settings import AuthConfig

__all__ = [
    "BEARER_SCHEME_NAME",
    "BEARER_SECURITY",
    "BEARER_SECURITY_SCHEME",
    "AuthDep",
    "Authenticator",
    "FederationDep",
    "Principal",
    "authenticate",
    "authorize",
    "get_federation",
]

BEARER_PREFIX = "bearer "
BEARER_SCHEME_NAME = "gatewayKey"
BEARER_SECURITY: dict[str, Any] = {"security": [{BEARER_SCHEME_NAME: []}]}
"""``openapi_extra`` for a route that needs a gateway key (the scheme is added by the app)."""
BEARER_SECURITY_SCHEME: dict[str, Any] = {
    "type": "http",
    "scheme": "bearer",
    "description": "A gateway key; the config stores only its SHA-256 (`annotation-gateway hash-key`).",
}
# A longer "key" is certainly not one of ours; refuse before hashing megabytes of header.
MAX_KEY_CHARS = 512


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the configured key name and the sources it may use (``None`` = all)."""

    name: str
    allowed_sources: frozenset[str] | None


ANONYMOUS = Principal(name="anonymous", allowed_sources=None)


class Authenticator:
    """Checks bearer keys against the configured digests in constant time."""

    def __init__(self, config: AuthConfig) -> None:
        self.enabled = config.enabled
        self._keys: dict[bytes, Principal] = {}
        for key in config.keys:
            # The first of two keys with one digest wins, as the first match did before.
            self._keys.setdefault(
                bytes.fromhex(key.sha256),
                Principal(
                    name=key.name,
                    allowed_sources=frozenset(key.sources) if key.sources is not None else None,
                ),
            )

    def authenticate(self, authorization: str | None) -> Principal:
        """The principal for an ``Authorization`` header value, or raise ``UnauthorizedError``."""
        if not self.enabled:
            return ANONYMOUS
        if not authorization:
            raise UnauthorizedError("send Authorization: Bearer <gateway key>")
        if authorization[: len(BEARER_PREFIX)].lower() != BEARER_PREFIX:
            raise UnauthorizedError("the Authorization scheme must be Bearer")
        presented = authorization[len(BEARER_PREFIX) :].strip()
        if not presented or len(presented) > MAX_KEY_CHARS:
            raise UnauthorizedError("the gateway key is missing or unknown")
        digest = hashlib.sha256(presented.encode()).digest()
        principal = self._keys.get(digest)
        if principal is None:
            raise UnauthorizedError("the gateway key is missing or unknown")
        return principal


# The dependencies are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in a
# thread pool, which costs more than the whole cached query.
async def authenticate(request: Request) -> Principal:
    """FastAPI dependency: the caller's principal (also kept on ``request.state.principal``)."""
    return await authorize(request.scope, request.headers.get("authorization"))


async def authorize(scope: Scope, authorization: str | None) -> Principal:
    """:func:`authenticate` for an ``Authorization`` value already read from the request's head
    (the hot route reads the head once rather than through Starlette's ``Headers``)."""
    app_state = scope["app"].state
    authenticator: Authenticator = app_state.authenticator
    principal = authenticator.authenticate(authorization)
    # What request.state.principal reads (Starlette's State wraps scope["state"]).
    scope.setdefault("state", {})["principal"] = principal
    client_limits: ClientLimits | None = app_state.client_limits
    if client_limits is not None:
        await client_limits.check(principal.name)
    return principal


async def get_federation(request: Request) -> Federation:
    """FastAPI dependency: the app's federation (built in the lifespan)."""
    federation: Federation = request.app.state.federation
    return federation


AuthDep = Annotated[Principal, Depends(authenticate)]
FederationDep = Annotated[Federation, Depends(get_federation)]
