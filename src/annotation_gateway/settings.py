"""Gateway settings: a TOML file plus ``GATEWAY_*`` environment variables (pydantic-settings).

Precedence, highest first: explicit keyword arguments, environment (``GATEWAY_SERVER__PORT=9000``,
nested with ``__``), the TOML file, defaults. Secrets never come from the file: a source names
the environment variable that holds its key, and is read when the provider is built.

:func:`load_settings` turns every problem into a :class:`ConfigError` whose message names the
offending key (``sources[1].base_url: ...``) or the TOML line.
"""

from __future__ import annotations

import hashlib
import ipaddress
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from annotation_gateway.providers import SourceConfig
from annotation_gateway.providers.config import PLACEHOLDER_SECRETS, ConfigError, valid_rate_limit
from annotation_gateway.webhooks.config import WebhookConfig

__all__ = [
    "ApiKeyConfig",
    "AuthConfig",
    "CacheConfig",
    "ConfigError",
    "GatewaySettings",
    "ServerConfig",
    "hash_key",
    "is_loopback",
    "load_settings",
]

DEFAULT_CONFIG_PATH = Path("config/gateway.toml")


def hash_key(key: str) -> str:
    """The SHA-256 hex digest under which a gateway key is configured."""
    return hashlib.sha256(key.encode()).hexdigest()


def is_loopback(host: str) -> bool:
    """True when ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    access_log: bool = Field(
        default=False, description="uvicorn's access log costs 40-50% CPU per request (SPEC §4)."
    )
    header_timeout_s: float = Field(
        default=10.0,  # nginx: 60 s, Apache: 20-40 s; real clients send a head in milliseconds
        gt=0,
        le=300,
        description="Seconds a client has to send a request's line and headers (then 408 and close).",
    )
    keep_alive_s: float = Field(
        default=5.0, gt=0, le=300, description="Idle keep-alive connections are closed after this."
    )
    cursor_secret_env: str = Field(
        default="GATEWAY_CURSOR_SECRET",
        min_length=1,
        description="The environment variable holding the key cursors are signed with; give every "
        "process and replica the same value so each accepts the others' cursors (unset: random "
        "per process).",
    )
    max_connections: int = Field(
        default=1000,
        ge=1,
        description="Open connections and requests at once; beyond it uvicorn answers 503 at once.",
    )
    malloc_mmap_threshold_bytes: int = Field(
        default=128 * 1024,
        ge=0,
        le=32 * 1024 * 1024,
        description="glibc's mmap threshold for the process: blocks this large are mapped and given back "
        "when freed, instead of glibc raising the threshold and leaving holes in the heap (allocator.py); "
        "0 leaves glibc's own behaviour.",
    )


class ApiKeyConfig(_Section):
    name: str = Field(min_length=1, description="Who holds the key (shown in logs, never the key).")
    sha256: str = Field(description="Hex SHA-256 of the key; `annotation-gateway hash-key` prints it.")
    sources: list[str] | None = Field(default=None, description="Sources this key may use; all when absent.")
    rate_limit: str | None = Field(
        default=None,
        description="Requests this key may make (e.g. '100/second'); beyond it 429 with Retry-After "
        "and RateLimit headers. Shared by every replica when [cache] backend = 'redis'.",
    )

    @field_validator("rate_limit")
    @classmethod
    def _rate_limit_ok(cls, value: str | None) -> str | None:
        return valid_rate_limit(value)

    @field_validator("sha256")
    @classmethod
    def _is_a_digest(cls, value: str) -> str:
        if value.lower() in PLACEHOLDER_SECRETS:
            raise ValueError("is a placeholder; put the SHA-256 of a real key here")
        if len(value) != 64 or any(c not in "0123456789abcdef" for c in value.lower()):
            raise ValueError("must be 64 hex characters (a SHA-256 digest), not the key itself")
        return value.lower()


class AuthConfig(_Section):
    enabled: bool = True
    keys: list[ApiKeyConfig] = Field(default_factory=list)


class CacheConfig(_Section):
    enabled: bool = True
    ttl_s: float = Field(default=30.0, ge=0, description="Fresh lifetime of a cached answer.")
    max_stale_s: float = Field(
        default=300.0, ge=0, description="How old a cached answer may be when served on error."
    )
    max_entries: int = Field(default=200_000, ge=1, description="Cached (source, subject) entries.")
    backend: Literal["memory", "redis"] = Field(
        default="memory",
        description="'memory': each process caches for itself; 'redis': a shared tier in Redis "
        "behind a short-lived local tier in each process (SPEC §9).",
    )
    redis_url_env: str = Field(
        default="GATEWAY_REDIS_URL",
        min_length=1,
        description="The environment variable holding the Redis URL (it may hold a password).",
    )
    local_ttl_s: float = Field(
        default=2.0,
        ge=0,
        description="backend='redis': how long a process keeps an answer in its own memory before "
        "asking Redis again (the bound on serving another replica's overwritten data; capped by ttl_s).",
    )
    redis_timeout_s: float = Field(
        default=0.5,
        gt=0,
        description="backend='redis': the time one Redis call may take (the cache tier's and the "
        "rate limiter's), this process's own event-loop delays included (a saturated process "
        "waits that long for its turn: lower makes it give Redis up under load); a slower Redis "
        "is treated as down (the gateway answers from memory and the vendors meanwhile, and "
        "counts rate limits in memory).",
    )
    redis_retry_s: float = Field(
        default=1.0,
        gt=0,
        description="backend='redis': how long a failing Redis is left alone before one trial call "
        "(doubling on each further failure, up to 30 s); the cache tier and the rate limiter each "
        "back off so.",
    )
    redis_lock_wait_s: float = Field(
        default=3.0,
        gt=0,
        description="backend='redis': how long a replica waits for another replica's identical "
        "upstream call before making its own (also the lock's expiry).",
    )
    redis_key_prefix: str = Field(
        default="agw",
        pattern=r"^[A-Za-z0-9_.-]{1,32}$",
        description="backend='redis': the prefix of every key and channel (several gateways may "
        "share one Redis under different prefixes).",
    )


class ResilienceConfig(_Section):
    """How each source is guarded (SPEC §4); one set of values for every source."""

    breaker_failure_threshold: int = Field(
        default=5, ge=1, description="Consecutive retryable failures that open a source's circuit."
    )
    breaker_reset_timeout_s: float = Field(
        default=30.0, gt=0, description="How long an open circuit fails fast before one trial call."
    )
    source_deadline_s: float | None = Field(
        default=30.0,
        gt=0,
        description="Whole-fetch deadline per source (chunks, pages and retries); null: none.",
    )
    max_inflight_per_source: int | None = Field(
        default=None,
        ge=1,
        description="Upstream calls in flight per source (a bulkhead above the pool); null: no cap.",
    )


class GatewaySettings(BaseSettings):
    """Everything the gateway is configured with."""

    model_config = SettingsConfigDict(
        env_prefix="GATEWAY_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    server: ServerConfig = Field(default_factory=ServerConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    resilience: ResilienceConfig = Field(default_factory=ResilienceConfig)
    sources: list[SourceConfig] = Field(default_factory=list)
    webhooks: list[WebhookConfig] = Field(
        default_factory=list, description="Signed batches of changes POSTed to URLs (SPEC §10)."
    )

    @model_validator(mode="after")
    def _consistent(self) -> GatewaySettings:
        names = [s.name for s in self.sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"source names must be unique; repeated: {', '.join(dupes)}")
        for key in self.auth.keys:
            unknown = sorted(set(key.sources or ()) - set(names))
            if unknown:
                raise ValueError(f"auth key {key.name!r} names unknown sources: {', '.join(unknown)}")
        hooks = [w.name for w in self.webhooks]
        dupes = sorted({n for n in hooks if hooks.count(n) > 1})
        if dupes:
            raise ValueError(f"webhook names must be unique; repeated: {', '.join(dupes)}")
        files = [w.state_file.resolve() for w in self.webhooks]
        shared = sorted({str(f) for f in files if files.count(f) > 1})
        if shared:
            # Each file holds one deliverer's lock: two webhooks on one file would exclude each other.
            raise ValueError(f"webhooks need a state_path each; shared: {', '.join(shared)}")
        for index, hook in enumerate(self.webhooks):
            unknown = sorted(set(hook.filters.sources) - set(names))
            if unknown:
                raise ValueError(
                    f"webhooks[{index}].filters.sources names unknown sources: {', '.join(unknown)}"
                )
        if self.auth.enabled and not self.auth.keys:
            raise ValueError("auth.enabled is true but auth.keys is empty")
        if not self.auth.enabled and not is_loopback(self.server.host):
            raise ValueError(f"auth may be off only when listening on loopback, not on {self.server.host!r}")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))


def _key_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("phoenix", "datadog", "function-after", "function-before"):
            continue  # discriminator tags pydantic puts in the location
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def format_validation_error(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        lines.append(f"{_key_path(tuple(err['loc']))}: {err['msg']}")
    return "; ".join(lines)


def load_settings(path: Path | str | None = None, **overrides: Any) -> GatewaySettings:
    """Load settings from ``path`` (TOML) and the environment; raise ``ConfigError`` if wrong."""
    toml_path = Path(path) if path is not None else None
    if toml_path is not None:
        if not toml_path.is_file():
            raise ConfigError(f"config file {toml_path} does not exist")
        try:
            tomllib.loads(toml_path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{toml_path}: not valid TOML: {exc}") from exc

    class _FromFile(GatewaySettings):
        model_config = SettingsConfigDict(toml_file=toml_path)

    try:
        loaded = _FromFile(**overrides)
    except ValidationError as exc:
        where = f"{toml_path}: " if toml_path else ""
        raise ConfigError(where + format_validation_error(exc)) from exc
    return GatewaySettings.model_construct(**{k: getattr(loaded, k) for k in GatewaySettings.model_fields})
