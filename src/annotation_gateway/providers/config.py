"""Configuration shared by every source, and secret lookup from the environment.

Contract: a source's secrets never sit in the config file: the file names an environment variable
(``api_key_env = "PHOENIX_API_KEY"``) and :func:`read_secret` reads it, refusing empty values and
obvious placeholders so that a forgotten ``changeme`` fails at start-up, not at 3 a.m.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from limits import parse_many
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

__all__ = ["PLACEHOLDER_SECRETS", "BaseSourceConfig", "ConfigError", "read_secret", "valid_rate_limit"]

SOURCE_NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"

PLACEHOLDER_SECRETS = frozenset(
    {
        "changeme",
        "changethis",
        "change-me",
        "secret",
        "password",
        "xxx",
        "todo",
        "placeholder",
        "your-api-key",
        "your_api_key",
        "api-key",
        "apikey",
        "<api-key>",
        "...",
    }
)


class ConfigError(ValueError):
    """The configuration is wrong; the message names the key (``sources[1].base_url``)."""


def valid_rate_limit(value: str | None) -> str | None:
    """Check a rate limit string in the ``limits`` library's notation (``"600/minute"``,
    ``"10/second;500/hour"``) and return it unchanged; ``None`` means no limit."""
    if value is None:
        return None
    try:
        parsed = parse_many(value)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a rate limit such as '600/minute' or '10/second'") from exc
    if not parsed or any(item.amount < 1 for item in parsed):
        raise ValueError(f"{value!r} must allow at least one request per period")
    return value


class BaseSourceConfig(BaseModel):
    """Fields every source has, whatever its vendor."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=SOURCE_NAME_PATTERN, description="Unique source name.")
    enabled: bool = True
    timeout_s: float = Field(default=5.0, gt=0, le=120, description="Per-request timeout.")
    max_concurrency: int = Field(
        default=16, ge=1, le=512, description="Upstream requests in flight at once, at most."
    )
    retry_attempts: int = Field(default=3, ge=1, le=10, description="Tries for an idempotent read.")
    max_retry_after_s: float = Field(
        default=5.0, ge=0, le=60, description="Cap on a vendor's requested wait before a retry."
    )
    rate_limit: str | None = Field(
        default=None,
        description="The vendor's budget for this source, shared by every replica through Redis "
        "when [cache] backend = 'redis' (moving window, e.g. '600/minute'); none when absent.",
    )

    @field_validator("rate_limit")
    @classmethod
    def _rate_limit_ok(cls, value: str | None) -> str | None:
        return valid_rate_limit(value)


def read_secret(
    env_name: str | None, *, key: str, environ: Mapping[str, str] | None = None
) -> SecretStr | None:
    """Read the secret named by ``env_name``; ``None`` when no variable is configured.

    ``key`` is the config key that named the variable, used in error messages.
    """
    if env_name is None:
        return None
    env = os.environ if environ is None else environ
    value = env.get(env_name)
    if value is None:
        raise ConfigError(f"{key}: environment variable {env_name} is not set")
    stripped = value.strip()
    if not stripped:
        raise ConfigError(f"{key}: environment variable {env_name} is empty")
    if stripped.lower() in PLACEHOLDER_SECRETS:
        raise ConfigError(f"{key}: environment variable {env_name} holds a placeholder, not a secret")
    return SecretStr(stripped)
