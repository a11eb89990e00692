"""Settings: TOML plus environment, errors that name the key, secrets only from the environment."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from annotation_gateway.api.app import cursor_secret
from annotation_gateway.errors import SourceUnavailableError
from annotation_gateway.federation import FederatedQuery, Federation
from annotation_gateway.providers.config import ConfigError, read_secret
from annotation_gateway.providers.datadog import DatadogSourceConfig
from annotation_gateway.providers.phoenix import PhoenixSourceConfig
from annotation_gateway.settings import ResilienceConfig, hash_key, is_loopback, load_settings
from tests.fakes import FakeProvider

REPO = Path(__file__).resolve().parents[1]
DIGEST = hash_key("correct horse battery staple")

BASE = f"""
[auth]
enabled = true
[[auth.keys]]
name = "ci"
sha256 = "{DIGEST}"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_example_config_loads() -> None:
    settings = load_settings(REPO / "config" / "gateway.toml")
    kinds = {type(source) for source in settings.sources}
    assert kinds == {PhoenixSourceConfig, DatadogSourceConfig}
    assert settings.server.host == "127.0.0.1"


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_SERVER__PORT", "9123")
    settings = load_settings(write(tmp_path, BASE + "[server]\nport = 8000\n"))
    assert settings.server.port == 9123


def test_bad_value_names_the_key(tmp_path: Path) -> None:
    text = BASE + '[[sources]]\nname = "px"\nprovider = "phoenix"\nbase_url = "not a url"\nproject = "p"\n'
    with pytest.raises(ConfigError, match=r"sources\[0\]\.base_url"):
        load_settings(write(tmp_path, text))


def test_project_with_path_characters_is_refused(tmp_path: Path) -> None:
    text = (
        BASE
        + '[[sources]]\nname = "px"\nprovider = "phoenix"\nbase_url = "http://127.0.0.1:1"\nproject = "a/b"\n'
    )
    with pytest.raises(ConfigError, match=r"sources\[0\]\.project.*may not contain /"):
        load_settings(write(tmp_path, text))


def test_unknown_provider_is_refused(tmp_path: Path) -> None:
    text = BASE + '[[sources]]\nname = "x"\nprovider = "langfuse"\n'
    with pytest.raises(ConfigError, match=r"sources\[0\]"):
        load_settings(write(tmp_path, text))


def test_unknown_datadog_site_is_refused(tmp_path: Path) -> None:
    text = BASE + (
        '[[sources]]\nname = "dd"\nprovider = "datadog"\nsite = "datadoghq.org"\n'
        'api_key_env = "A"\napp_key_env = "B"\n'
    )
    with pytest.raises(ConfigError, match=r"unknown site 'datadoghq\.org'"):
        load_settings(write(tmp_path, text))


def test_invalid_toml_says_where(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not valid TOML.*line 2"):
        load_settings(write(tmp_path, "[server]\nport = = 1\n"))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_duplicate_source_names(tmp_path: Path) -> None:
    source = (
        '[[sources]]\nname = "px"\nprovider = "phoenix"\nbase_url = "http://127.0.0.1:1"\nproject = "p"\n'
    )
    with pytest.raises(ConfigError, match="repeated: px"):
        load_settings(write(tmp_path, BASE + source + source))


def test_auth_off_only_on_loopback(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, "[auth]\nenabled = false\n")).auth.enabled is False
    with pytest.raises(ConfigError, match="only when listening on loopback"):
        load_settings(write(tmp_path, '[auth]\nenabled = false\n[server]\nhost = "0.0.0.0"\n'))


def test_key_digest_must_be_a_digest_not_a_key(tmp_path: Path) -> None:
    text = '[auth]\n[[auth.keys]]\nname = "x"\nsha256 = "changeme"\n'
    with pytest.raises(ConfigError, match=r"auth\.keys\[0\]\.sha256.*placeholder"):
        load_settings(write(tmp_path, text))
    text = '[auth]\n[[auth.keys]]\nname = "x"\nsha256 = "my-plain-key"\n'
    with pytest.raises(ConfigError, match="64 hex characters"):
        load_settings(write(tmp_path, text))


def test_key_limited_to_unknown_source(tmp_path: Path) -> None:
    text = f'[auth]\n[[auth.keys]]\nname = "x"\nsha256 = "{DIGEST}"\nsources = ["ghost"]\n'
    with pytest.raises(ConfigError, match="unknown sources: ghost"):
        load_settings(write(tmp_path, text))


def test_secrets_come_from_the_environment_and_refuse_placeholders() -> None:
    assert read_secret(None, key="k") is None
    secret = read_secret("PX_KEY", key="sources.px.api_key_env", environ={"PX_KEY": " s3cr3t-value "})
    assert secret is not None
    assert secret.get_secret_value() == "s3cr3t-value"
    assert "s3cr3t" not in repr(secret)
    with pytest.raises(
        ConfigError, match=r"sources\.px\.api_key_env: environment variable PX_KEY is not set"
    ):
        read_secret("PX_KEY", key="sources.px.api_key_env", environ={})
    with pytest.raises(ConfigError, match="placeholder"):
        read_secret("PX_KEY", key="k", environ={"PX_KEY": "changeme"})
    with pytest.raises(ConfigError, match="empty"):
        read_secret("PX_KEY", key="k", environ={"PX_KEY": "  "})


@pytest.mark.parametrize(
    ("host", "expected"),
    [("127.0.0.1", True), ("localhost", True), ("::1", True), ("127.3.4.5", True), ("0.0.0.0", False)],
)
def test_is_loopback(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected


def test_resilience_and_the_cursor_secret_come_from_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = BASE + (
        '[server]\ncursor_secret_env = "MY_CURSOR_KEY"\n'
        "[resilience]\nbreaker_failure_threshold = 2\nbreaker_reset_timeout_s = 7\n"
        "source_deadline_s = 3\nmax_inflight_per_source = 4\n"
    )
    settings = load_settings(write(tmp_path, text))
    assert settings.resilience.breaker_failure_threshold == 2
    assert settings.resilience.source_deadline_s == 3
    monkeypatch.setenv("MY_CURSOR_KEY", "shared-secret-of-every-replica")
    assert cursor_secret(settings.server.cursor_secret_env) == b"shared-secret-of-every-replica"
    # Two processes with the same secret accept each other's cursors; without it, they do not.
    monkeypatch.delenv("MY_CURSOR_KEY")
    assert cursor_secret(settings.server.cursor_secret_env) != cursor_secret(
        settings.server.cursor_secret_env
    )
    # The federation built from them opens a circuit after 2 failures, not the default 5.
    failing = FakeProvider("px", fail=SourceUnavailableError("px: down", source="px"))
    federation = Federation.from_settings([failing], settings, cursor_secret=b"k" * 32)
    query = FederatedQuery(subject_ids=("s1",), use_cache=False)
    for _ in range(2):
        assert federation.circuit_state("px") == "closed"
        with pytest.raises(SourceUnavailableError):
            asyncio.run(federation.query(query))
    assert federation.circuit_state("px") == "open"
    example = load_settings(REPO / "config" / "gateway.toml")
    assert example.resilience == ResilienceConfig()
    with pytest.raises(ConfigError, match=r"resilience\.breaker_failure_threshold"):
        load_settings(write(tmp_path, BASE + "[resilience]\nbreaker_failure_threshold = 0\n"))


def test_rate_limits_and_the_cache_backend_are_read_and_checked(tmp_path: Path) -> None:
    text = BASE.replace('sha256 = "', 'rate_limit = "100/second"\nsha256 = "') + (
        '[cache]\nbackend = "redis"\nredis_url_env = "MY_REDIS"\n'
        '[[sources]]\nprovider = "phoenix"\nname = "px"\nbase_url = "http://127.0.0.1:6006"\n'
        'project = "p"\nrate_limit = "600/minute"\n'
    )
    settings = load_settings(write(tmp_path, text))
    assert settings.auth.keys[0].rate_limit == "100/second"
    assert settings.cache.backend == "redis"
    assert settings.cache.redis_url_env == "MY_REDIS"
    assert settings.sources[0].rate_limit == "600/minute"

    with pytest.raises(ConfigError, match=r"sources\[0\]\.rate_limit: .*'lots/minute' is not a rate limit"):
        load_settings(write(tmp_path, text.replace("600/minute", "lots/minute")))
    with pytest.raises(ConfigError, match=r"auth\.keys\[0\]\.rate_limit: .*at least one request"):
        load_settings(write(tmp_path, text.replace("100/second", "0/second")))
    with pytest.raises(ConfigError, match=r"cache\.backend"):
        load_settings(write(tmp_path, text.replace('backend = "redis"', 'backend = "memcached"')))
