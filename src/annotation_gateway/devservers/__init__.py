"""Real vendor servers started locally for the tests, the demo and the benchmarks.

Contract: everything here listens on 127.0.0.1 only, in a temporary working directory of its
own, with the vendor's outbound calls (telemetry, external resources) switched off, and is
stopped (process group terminated and waited for) by ``stop()`` or on leaving its ``with``
block. Nothing in the gateway's serving path imports this package.
"""

from __future__ import annotations

from annotation_gateway.devservers.phoenix import (
    PhoenixNotInstalledError,
    PhoenixSeeder,
    PhoenixServer,
    PhoenixStartError,
    phoenix_python,
)

__all__ = [
    "PhoenixNotInstalledError",
    "PhoenixSeeder",
    "PhoenixServer",
    "PhoenixStartError",
    "phoenix_python",
]
