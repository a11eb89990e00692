"""The HTTP protocol of ``serve --workers N``'s worker processes, importable by name.

Contract: ``annotation_gateway.cli._worker_http:HeaderDeadlineProtocol`` is uvicorn's httptools
protocol with the request-head deadline of :func:`~annotation_gateway.api.protocol.header_deadline_protocol`,
built on first use from the seconds in :data:`HEADER_TIMEOUT_ENV` (which the parent sets from
``server.header_timeout_s``). uvicorn starts workers with ``spawn`` and pickles its ``Config``
for them; a protocol class made at run time (a closure) cannot be pickled, a name can.
"""

from __future__ import annotations

import os
from functools import cache

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from annotation_gateway.api.protocol import DEFAULT_HEADER_TIMEOUT_S, header_deadline_protocol

__all__ = ["HEADER_TIMEOUT_ENV", "PROTOCOL_IMPORT_STRING"]

HEADER_TIMEOUT_ENV = "ANNOTATION_GATEWAY_WORKER_HEADER_TIMEOUT_S"
PROTOCOL_IMPORT_STRING = f"{__name__}:HeaderDeadlineProtocol"


@cache
def _protocol() -> type[HttpToolsProtocol]:
    seconds = float(os.environ.get(HEADER_TIMEOUT_ENV, DEFAULT_HEADER_TIMEOUT_S))
    return header_deadline_protocol(seconds)


def __getattr__(name: str) -> type[HttpToolsProtocol]:
    # PEP 562: built when uvicorn's worker imports it by name, after the parent set the variable.
    if name == "HeaderDeadlineProtocol":
        return _protocol()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
