"""``[[webhooks]]`` settings, the secret's form, and the signature against ``standardwebhooks``.

- filters are validated at load time by building the query; errors name the key;
- names and state files are unique; filter sources exist; the URL is http(s);
- secrets: ``whsec_<base64 of 24-64 bytes>``, read from the environment, errors never quote them;
- the commented example in ``config/gateway.toml`` loads once uncommented;
- the signature is what the reference implementation computes and verifies.
"""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from annotation_gateway.providers.config import ConfigError
from annotation_gateway.settings import hash_key, load_settings
from annotation_gateway.webhooks.config import parse_secret, public_url
from annotation_gateway.webhooks.deliver import WebhookService
from annotation_gateway.webhooks.signing import sign, signed_headers
from tests.webhooks.conftest import SECRET, SECRET_BYTES, SECRET_ENV

REPO = Path(__file__).resolve().parents[2]

BASE = f"""
[auth]
enabled = true
[[auth.keys]]
name = "ci"
sha256 = "{hash_key("correct horse battery staple")}"

[[sources]]
name = "dd"
provider = "datadog"
base_url = "http://127.0.0.1:9"
api_key_env = "UNUSED_DD_API_KEY"
app_key_env = "UNUSED_DD_APP_KEY"
"""


def write(tmp_path: Path, hooks: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(BASE + hooks, encoding="utf-8")
    return path


def hook(filters: str = '{ scope = "all" }', name: str = "h", extra: str = "") -> str:
    return (
        f'\n[[webhooks]]\nname = "{name}"\nurl = "http://127.0.0.1:9/in"\n'
        f'secret_env = "{SECRET_ENV}"\nfilters = {filters}\n{extra}'
    )


def test_a_webhook_loads_with_its_defaults(tmp_path: Path) -> None:
    settings = load_settings(
        write(tmp_path, hook('{ scope = "all", names = ["quality"], sources = ["dd"] }'))
    )
    [webhook] = settings.webhooks
    query = webhook.filters.query()
    assert (query.scope, query.names, query.sources, query.partial) == ("all", ("quality",), ("dd",), "deny")
    assert query.use_cache is False
    assert webhook.batch_size == 100
    assert webhook.state_file == Path("data/webhooks/h.sqlite3")
    assert webhook.max_attempts is None


@pytest.mark.parametrize(
    ("hooks", "message"),
    [
        (hook('{ names = ["quality"] }'), r"webhooks\[0\]\.filters: .*subject_ids"),
        (hook('{ scope = "all", subject_ids = ["s1"] }'), r"webhooks\[0\]\.filters: .*scope"),
        (hook('{ scope = "all", name = ["quality"] }'), r"webhooks\[0\]\.filters\.name: Extra inputs"),
        (hook('{ scope = "everything" }'), r"webhooks\[0\]\.filters\.scope"),
        (hook('{ scope = "all", providers = ["langfuse"] }'), r"webhooks\[0\]\.filters\.providers\[0\]"),
        (
            hook(
                '{ scope = "all", updated_after = 2026-02-01T00:00:00Z, '
                "updated_before = 2026-01-01T00:00:00Z }"
            ),
            r"webhooks\[0\]\.filters: updated_after",
        ),
        (
            hook('{ scope = "all", sources = ["nope"] }'),
            r"webhooks\[0\]\.filters\.sources names unknown sources: nope",
        ),
        (hook() + hook(), r"webhook names must be unique; repeated: h"),
        (hook() + hook(name="other", extra='state_path = "data/webhooks/h.sqlite3"\n'), r"a state_path each"),
        (hook(extra="batch_size = 1001\n"), r"webhooks\[0\]\.batch_size"),
        (hook(extra="max_backoff_s = 0.5\n"), r"webhooks\[0\]: .*max_backoff_s"),
        (hook(name="no spaces"), r"webhooks\[0\]\.name"),
        (hook().replace("http://127.0.0.1:9/in", "ftp://127.0.0.1/in"), r"webhooks\[0\]\.url: .*http"),
        (hook(extra='secret = "whsec_abc"\n'), r"webhooks\[0\]\.secret: Extra inputs"),
    ],
)
def test_a_bad_webhook_is_refused_naming_the_key(tmp_path: Path, hooks: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(write(tmp_path, hooks))


def test_the_commented_example_loads_once_uncommented(tmp_path: Path) -> None:
    text = (REPO / "config" / "gateway.toml").read_text(encoding="utf-8")
    start = text.index("# [[webhooks]]")
    block = "\n".join(
        line[2:] for line in text[start:].splitlines() if line.startswith("# ") and not line.startswith("# #")
    )
    block = "\n".join(line for line in block.splitlines() if not line.lstrip().startswith("#"))
    settings = load_settings(
        write(tmp_path, block.replace('["phoenix-prod"]', '["dd"]')),
    )
    [webhook] = settings.webhooks
    assert webhook.name == "labels-to-warehouse"
    assert webhook.filters.query().names == ("resolution",)


def test_the_secret_is_a_standard_webhooks_secret() -> None:
    assert parse_secret(SECRET, key="k") == SECRET_BYTES
    assert parse_secret(SECRET.rstrip("="), key="k") == SECRET_BYTES  # unpadded, as some tools print
    bare = base64.b64encode(SECRET_BYTES).decode()
    for value, why in (
        (bare, "must look like whsec_"),
        ("whsec_not*base64!", "not valid base64"),
        ("whsec_" + base64.b64encode(b"short").decode(), "decodes to 5 bytes"),
    ):
        with pytest.raises(ConfigError, match=why) as caught:
            parse_secret(value, key="webhooks[0].secret_env")
        assert "webhooks[0].secret_env" in str(caught.value)
        assert value not in str(caught.value)


async def test_secrets_come_from_the_environment(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, hook()))
    assert WebhookService(settings.webhooks, environ={SECRET_ENV: SECRET}).secrets() == {"h": SECRET_BYTES}
    for environ, why in (({}, "is not set"), ({SECRET_ENV: "changeme"}, "placeholder")):
        with pytest.raises(ConfigError, match=rf"webhooks\[0\]\.secret_env: .*{why}"):
            WebhookService(settings.webhooks, environ=environ).secrets()


def test_the_url_is_shown_without_credentials_or_query() -> None:
    assert (
        public_url("https://user:pw@hooks.example.com:8443/in/x?token=t#f")
        == "https://hooks.example.com:8443/in/x"
    )
    assert public_url("http://127.0.0.1:9/in") == "http://127.0.0.1:9/in"


def test_the_signature_is_the_reference_implementations() -> None:
    body = b'{"type":"annotations.changed","data":[]}'
    now = int(time.time())
    reference = Webhook(SECRET)
    assert sign(SECRET_BYTES, "msg_1", now, body) == reference.sign(
        "msg_1", datetime.fromtimestamp(now, tz=UTC), body
    )
    headers = signed_headers(SECRET_BYTES, "msg_1", now, body)
    assert reference.verify(body, headers) == {"type": "annotations.changed", "data": []}
    with pytest.raises(WebhookVerificationError):
        reference.verify(body + b" ", headers)
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + base64.b64encode(bytes(32)).decode()).verify(body, headers)
