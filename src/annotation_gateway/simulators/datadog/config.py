"""The simulator's settings and switches.

Contract: the simulator's settings — :class:`SimulatorConfig` (keys, seed, port; :func:`make_config`)
and the run-time :class:`Switches` (label value form, zero times, latency, faults, :class:`RateLimit`)
— and the constants of the wire (paths, the JSON:API content type).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

API_PREFIX = "/api/v2/llm-obs/v1"
CONTROL_PREFIX = "/_simulator"
DEFAULT_PORT = 8780
JSONAPI_CONTENT_TYPE = "application/vnd.api+json"
RATE_LIMIT_NAME = "llmobs_annotations"
REQUEST_LOG_SIZE = 20_000
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

_PERIOD_UNITS = {"": 1.0, "s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0}
_PERIOD_UNITS |= {"h": 3600.0, "hour": 3600.0}
_RATE_LIMIT_PATTERN = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*([a-z]*)\s*$")


class RateLimit(BaseModel):
    """A fixed window: at most ``limit`` API requests per ``period_s`` seconds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    limit: int = Field(ge=1)
    period_s: float = Field(gt=0, le=86_400)

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        """``"10/60"``, ``"10/60s"``, ``"100/1m"``, ``"5/second"`` → a RateLimit."""
        match = _RATE_LIMIT_PATTERN.match(text.lower())
        if (
            match is None
            or match.group(3) not in _PERIOD_UNITS
            or (not match.group(2) and not match.group(3))
        ):
            raise ValueError(f"rate limit {text!r} is not N/period (e.g. 10/60s, 100/1m, 5/second)")
        amount = float(match.group(2) or 1)
        return cls(limit=int(match.group(1)), period_s=amount * _PERIOD_UNITS[match.group(3)])


class Switches(BaseModel):
    """What the simulator does differently at run time; every one can be flipped live."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    label_values: Literal["array", "object"] = "array"
    """``array``: what Datadog sends today; ``object``: the legacy ``{label name: value}`` form."""
    zero_time: bool = False
    """Send annotation ``created_at``/``modified_at`` as ``0001-01-01T00:00:00Z``."""
    name_when_saved: bool = True
    """False: leave ``name_when_saved`` out of label values (older data has none)."""
    latency_ms: float = Field(default=0.0, ge=0, le=60_000)
    fail_rate: float = Field(default=0.0, ge=0, le=1)
    """Probability that an API request answers ``fail_status`` (seeded RNG: reproducible)."""
    fail_status: int = Field(default=500, ge=500, le=599)
    fail_next: int = Field(default=0, ge=0)
    """The next N API requests answer ``fail_status``; counts down."""
    rate_limit: RateLimit | None = None

    @field_validator("rate_limit", mode="before")
    @classmethod
    def _parse_rate_limit(cls, value: Any) -> Any:
        return RateLimit.parse(value) if isinstance(value, str) else value


class SimulatorConfig(BaseModel):
    """How a simulator starts. ``reset`` returns to exactly this."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    api_key: str | None = None
    """Accepted ``DD-API-KEY``; None accepts any non-empty key."""
    app_key: str | None = None
    """Accepted ``DD-APPLICATION-KEY``; None accepts any non-empty key."""
    seed_file: Path | None = None
    seed: dict[str, Any] | None = None
    """An inline seed document, loaded after ``seed_file``."""
    random_seed: int = 0
    """Seeds the RNG behind ``fail_rate``, so a failure pattern is reproducible."""
    switches: Switches = Field(default_factory=Switches)


def make_config(
    *,
    api_key: str | None = None,
    app_key: str | None = None,
    seed: str | Path | None = None,
    label_values: Literal["array", "object"] = "array",
    zero_time: bool = False,
    latency_ms: float = 0.0,
    fail_rate: float = 0.0,
    rate_limit: str | RateLimit | None = None,
    environ: Mapping[str, str] | None = None,
) -> SimulatorConfig:
    """A config from command-line style switches; keys not given come from DD_API_KEY/DD_APP_KEY."""
    env = os.environ if environ is None else environ
    return SimulatorConfig(
        api_key=api_key if api_key is not None else (env.get("DD_API_KEY") or None),
        app_key=app_key if app_key is not None else (env.get("DD_APP_KEY") or None),
        seed_file=Path(seed) if seed is not None else None,
        switches=Switches(
            label_values=label_values,
            zero_time=zero_time,
            latency_ms=latency_ms,
            fail_rate=fail_rate,
            rate_limit=RateLimit.parse(rate_limit) if isinstance(rate_limit, str) else rate_limit,
        ),
    )
