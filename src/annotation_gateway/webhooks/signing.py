"""Standard Webhooks signatures (https://www.standardwebhooks.com/).

Contract: :func:`signed_headers` gives the three headers of one attempt: ``webhook-id`` (the
message's id, the same on every retry so receivers can drop duplicates), ``webhook-timestamp``
(unix seconds of *this* attempt: receivers refuse timestamps more than a few minutes off, so a
retried message is signed anew) and ``webhook-signature``: ``v1,`` and the base64 HMAC-SHA256,
under the secret's decoded bytes, of ``{id}.{timestamp}.{body}`` — the body's exact bytes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

__all__ = ["sign", "signed_headers"]


def sign(secret: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``."""
    to_sign = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret, to_sign, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signed_headers(secret: bytes, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, message_id, timestamp, body),
    }
