"""Keyset cursors, signed and bound to one query and one key.

Contract: a cursor is a position in the answer order, ascending
:func:`~annotation_gateway.records.sort_key` (``updated_at`` descending, then ``id`` ascending;
ids are unique, so the order is total) — or, for a scope answer, ascending
:func:`~annotation_gateway.federation.scopes.scope_key` (subject id first). A cursor is urlsafe
base64 (unpadded) of the compact JSON ``[version, binding, updated_at in µs, id]`` (scope:
``[2, binding, subject id, updated_at in µs, id]``) followed by a truncated HMAC-SHA256 of
it under the cursor secret. The binding (:func:`bind`) covers the query's fingerprint and the
audience (the caller's key name). :meth:`CursorCodec.decode` raises ``InvalidCursorError``
(422) for a bad length, encoding or signature, another version, or another binding, saying
which.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

import orjson

from annotation_gateway.errors import InvalidCursorError
from annotation_gateway.federation.limits import MAX_CURSOR_LENGTH, MAX_SINCE_LENGTH

__all__ = ["CursorCodec", "ScopeKey", "SortKey", "bind"]

_CURSOR_VERSION = 1
_SCOPE_CURSOR_VERSION = 2
_SINCE_VERSION = 4
_OLD_SINCE_VERSION = 3
"""A since token of the previous layout: its watermarks are kept, its remembered versions (a
layout that no longer reads) dropped — the overlap's changes may then come twice, never
skipped."""
_CURSOR_MAC_BYTES = 16
_FINGERPRINT_BYTES = 12


SortKey = tuple[int, str]
ScopeKey = tuple[str, int, str]
"""(subject id, -updated_at in µs, id): ascending is a scope answer's order."""


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    return base64.b64decode(padded.encode("ascii"), altchars=b"-_", validate=True)


class CursorCodec:
    """Signs and checks keyset cursors; see the module docstring for the format."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, payload, hashlib.sha256).digest()[:_CURSOR_MAC_BYTES]

    def encode(self, fingerprint: str, key: SortKey) -> str:
        payload = orjson.dumps([_CURSOR_VERSION, fingerprint, -key[0], key[1]])
        return _b64encode(payload + self._mac(payload))

    def encode_scope(self, fingerprint: str, key: ScopeKey) -> str:
        payload = orjson.dumps([_SCOPE_CURSOR_VERSION, fingerprint, key[0], -key[1], key[2]])
        return _b64encode(payload + self._mac(payload))

    def decode(self, cursor: str, fingerprint: str) -> SortKey:
        fields = self._open(cursor, fingerprint, _CURSOR_VERSION)
        if len(fields) != 2:
            raise InvalidCursorError("the cursor's content is malformed")
        micros, item_id = fields
        if type(micros) is not int or not isinstance(item_id, str):
            raise InvalidCursorError("the cursor's content is malformed")
        return (-micros, item_id)

    def decode_scope(self, cursor: str, fingerprint: str) -> ScopeKey:
        fields = self._open(cursor, fingerprint, _SCOPE_CURSOR_VERSION)
        if len(fields) != 3:
            raise InvalidCursorError("the cursor's content is malformed")
        subject_id, micros, item_id = fields
        if not isinstance(subject_id, str) or type(micros) is not int or not isinstance(item_id, str):
            raise InvalidCursorError("the cursor's content is malformed")
        return (subject_id, -micros, item_id)

    def encode_since(self, fingerprint: str, state: dict[str, tuple[int, bytes]]) -> str:
        """A change feed's ``next_since``: per source, its watermark (µs) and the packed
        versions already delivered near it (see :mod:`.changes`)."""
        body = {name: [watermark, _b64encode(seen)] for name, (watermark, seen) in sorted(state.items())}
        payload = orjson.dumps([_SINCE_VERSION, fingerprint, body])
        return _b64encode(payload + self._mac(payload))

    def decode_since(self, since: str, fingerprint: str) -> dict[str, tuple[int, bytes]]:
        version, fields = self._open_versions(
            since,
            fingerprint,
            (_SINCE_VERSION, _OLD_SINCE_VERSION),
            what="since",
            max_length=MAX_SINCE_LENGTH,
        )
        if len(fields) != 1 or not isinstance(fields[0], dict):
            raise InvalidCursorError("the since token's content is malformed")
        state: dict[str, tuple[int, bytes]] = {}
        try:
            for name, (watermark, seen) in fields[0].items():
                if type(watermark) is not int or not isinstance(seen, str):
                    raise InvalidCursorError("the since token's content is malformed")
                packed = _b64decode(seen)
                state[name] = (watermark, packed if version == _SINCE_VERSION else b"")
        except (binascii.Error, ValueError, TypeError) as exc:
            raise InvalidCursorError("the since token's content is malformed") from exc
        return state

    def _open(
        self,
        cursor: str,
        fingerprint: str,
        expected_version: int,
        *,
        what: str = "cursor",
        max_length: int = MAX_CURSOR_LENGTH,
    ) -> list[object]:
        return self._open_versions(
            cursor, fingerprint, (expected_version,), what=what, max_length=max_length
        )[1]

    def _open_versions(
        self,
        cursor: str,
        fingerprint: str,
        versions: tuple[int, ...],
        *,
        what: str = "cursor",
        max_length: int = MAX_CURSOR_LENGTH,
    ) -> tuple[int, list[object]]:
        """The version (one of ``versions``, the first being the current one) and the fields."""
        if not cursor or len(cursor) > max_length:
            raise InvalidCursorError(f"the {what} must be 1 to {max_length} characters")
        try:
            raw = _b64decode(cursor)
        except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
            raise InvalidCursorError("the cursor is not valid base64url; pass next_cursor unchanged") from exc
        payload, mac = raw[:-_CURSOR_MAC_BYTES], raw[-_CURSOR_MAC_BYTES:]
        if len(raw) <= _CURSOR_MAC_BYTES or not hmac.compare_digest(mac, self._mac(payload)):
            raise InvalidCursorError(
                "the cursor's signature does not match: it was altered or issued by another gateway"
            )
        try:
            version, bound_to, *fields = orjson.loads(payload)
        except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
            raise InvalidCursorError("the cursor's content is malformed") from exc
        if version not in versions:
            raise InvalidCursorError(
                f"the cursor has version {version!r}; this query's cursors have {versions[0]}"
            )
        if bound_to != fingerprint:
            raise InvalidCursorError(
                "the cursor belongs to a different query or key: filters, sources or options "
                "changed since it was issued (only limit may change), or it was issued to another "
                "gateway key; start again without a cursor"
            )
        return version, list(fields)


def bind(digest: bytes, audience: str | None) -> str:
    """What a cursor is bound to: the query's digest and, when given, the key it was issued to
    (so one key's cursor is refused for another, even when both may ask the same sources)."""
    if audience is None:
        return digest[:_FINGERPRINT_BYTES].hex()
    return (
        hashlib.sha256(digest + b"\x00" + audience.encode("utf-8", "surrogatepass"))
        .digest()[:_FINGERPRINT_BYTES]
        .hex()
    )
