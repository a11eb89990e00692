"""Fences around the libraries the providers build on (issue 10, item 5).

- No provider module touches a library's private attributes or private modules, or imports the
  adapter library the transport replaced (``httpx-aiohttp``).
- Every provider class derived from a library class is listed here, with the members it
  overrides, and overrides only public ones: a copied private method cannot come back unseen.
- The one behaviour borrowed from httpx — its client reads the cookie jar through the public
  ``cookies`` property — is checked, so an httpx release that changes it fails here rather than
  silently losing the optimisation (or, worse, storing cookies in a jar nobody reads).
- The reference cycle httpx 0.28 puts every response in (encode/httpx#3733) is broken by the
  providers' ``send`` once the body is read: a response it returns is freed as soon as it is
  dropped; and the cycle itself is pinned, so the release that fixes it upstream says so here.
"""

from __future__ import annotations

import ast
import gc
import weakref
from pathlib import Path

import httpx
import pytest

import annotation_gateway
from annotation_gateway.providers.http.client import SetCookieOnlyJar, SourceClient, make_client, send

PROVIDERS = Path(annotation_gateway.__file__).parent / "providers"
SOURCES = sorted(PROVIDERS.rglob("*.py"))
OWN = "annotation_gateway"

LIBRARY_SUBCLASSES: dict[str, tuple[str, set[str]]] = {
    # class → (library base, members it defines)
    "AiohttpTransport": (
        "httpx.AsyncBaseTransport",
        {"__init__", "_open", "exchange", "handle_async_request", "aclose"},
    ),
    "SourceClient": ("httpx.AsyncClient", {"__init__", "cookies", "aclose"}),
    "DirectResponse": ("httpx.Response", {"__init__", "request"}),
    "SetCookieOnlyJar": ("httpx.Cookies", {"extract_cookies"}),
}
"""The provider classes derived from an HTTP library's classes (pydantic models, TypedDicts and
exceptions are the libraries' documented ways to declare things, not overrides)."""
HTTP_LIBRARIES = ("httpx", "aiohttp")


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_the_scan_sees_every_provider_module() -> None:
    names = {p.relative_to(PROVIDERS).as_posix() for p in SOURCES}
    assert {"base.py", "http/transport.py", "http/client.py", "http/outcomes.py"} <= names


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.relative_to(PROVIDERS).as_posix())
def test_no_private_attribute_of_another_object(path: Path) -> None:
    """``x._name`` only on ``self``/``cls``: never a library object's private state."""
    found = [
        f"{path.name}:{node.lineno}: {ast.unparse(node)}"
        for node in ast.walk(_tree(path))
        if isinstance(node, ast.Attribute)
        and _is_private(node.attr)
        and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
    ]
    assert found == []


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.relative_to(PROVIDERS).as_posix())
def test_no_private_library_module_and_no_httpx_aiohttp(path: Path) -> None:
    found: list[str] = []
    for node in ast.walk(_tree(path)):
        modules: list[str] = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules = [node.module]
        for module in modules:
            if module.startswith(OWN) or module == "__future__":
                continue
            if module.split(".")[0] == "httpx_aiohttp" or any(_is_private(p) for p in module.split(".")):
                found.append(f"{path.name}:{node.lineno}: {module}")
    assert found == []


def test_library_subclasses_are_declared_and_override_only_public_members() -> None:
    seen: dict[str, tuple[str, set[str]]] = {}
    for path in SOURCES:
        for node in ast.walk(_tree(path)):
            if not isinstance(node, ast.ClassDef):
                continue
            bases = [ast.unparse(base) for base in node.bases]
            library = [b for b in bases if b.split(".")[0] in HTTP_LIBRARIES]
            if not library:
                continue
            members = {
                item.name for item in node.body if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
            }
            seen[node.name] = (library[0], members)
    assert seen == LIBRARY_SUBCLASSES
    bases = {"AiohttpTransport": httpx.AsyncBaseTransport, "SourceClient": httpx.AsyncClient}
    bases["SetCookieOnlyJar"] = httpx.Cookies
    bases["DirectResponse"] = httpx.Response
    for name, (_, members) in seen.items():
        base = bases[name]
        overridden = {m for m in members if hasattr(base, m)}
        assert all(not _is_private(m) for m in overridden), (name, overridden)


async def test_the_client_reads_its_jar_through_the_public_property(monkeypatch: pytest.MonkeyPatch) -> None:
    extracted: list[str] = []
    original = httpx.Cookies.extract_cookies

    def counting(self: httpx.Cookies, response: httpx.Response) -> None:
        extracted.append(response.url.path)
        original(self, response)

    monkeypatch.setattr(httpx.Cookies, "extract_cookies", counting)

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/sets":
            return httpx.Response(200, headers={"Set-Cookie": "session=abc; Path=/"}, content=b"{}")
        return httpx.Response(200, headers={"Content-Type": "application/json"}, content=b"{}")

    client = make_client("http://vendor.test", transport=httpx.MockTransport(answer))
    try:
        assert isinstance(client, SourceClient)
        assert isinstance(client.cookies, SetCookieOnlyJar)
        await client.get("/plain")
        assert extracted == []  # no Set-Cookie: httpx's cookiejar machinery never ran
        await client.get("/sets")
        assert extracted == ["/sets"]
        assert client.cookies.get("session") == "abc"  # kept where the client reads cookies from
        sent = await client.get("/plain")
        assert sent.request.headers.get("cookie") == "session=abc"  # and sent back, as httpx does
    finally:
        await client.aclose()


def test_setting_cookies_keeps_the_jar_that_skips() -> None:
    client = SourceClient(base_url="http://vendor.test", cookies={"a": "1"})
    assert isinstance(client.cookies, SetCookieOnlyJar)
    assert client.cookies.get("a") == "1"
    client.cookies = {"b": "2"}
    assert isinstance(client.cookies, SetCookieOnlyJar)
    assert dict(client.cookies) == {"b": "2"}


BODY = b"x" * 4096


def _mock_client() -> httpx.AsyncClient:
    # A body as a stream, as the providers' transport answers (content= would be read up front).
    answer = lambda request: httpx.Response(200, stream=httpx.ByteStream(BODY))  # noqa: E731
    return httpx.AsyncClient(transport=httpx.MockTransport(answer))


async def test_a_response_the_providers_read_is_freed_when_dropped(no_cyclic_gc: None) -> None:
    client = _mock_client()
    response = await send(client, client.build_request("GET", "http://127.0.0.1/r"), source="s")
    assert response.content == BODY
    assert response.elapsed.total_seconds() >= 0  # set when httpx closed the stream
    freed = weakref.ref(response)
    del response
    assert freed() is None
    await client.aclose()


async def test_httpx_still_puts_a_read_response_in_a_reference_cycle(no_cyclic_gc: None) -> None:
    """Pinned: when this fails, httpx frees responses by itself and ``send``'s release can go."""
    client = _mock_client()
    response = await client.send(client.build_request("GET", "http://127.0.0.1/r"))
    await response.aread()
    kept = weakref.ref(response)
    del response
    assert kept() is not None
    gc.collect()
    assert kept() is None
    await client.aclose()
