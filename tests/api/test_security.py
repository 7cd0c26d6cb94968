"""API-key auth, security headers, CORS, docs switch and secret hygiene.

Built on a tiny FastAPI app with the same installers the factory uses, so these tests pin the
security layer's behaviour independently of the routes; `test_real_app_*` repeat the key checks
against `create_app` itself.
"""

from __future__ import annotations

import hmac
import io
import json
import logging
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from carbon_optimizer.api.edge import EdgeMiddleware
from carbon_optimizer.api.security import ApiKeyStore, client_id_for
from carbon_optimizer.app import create_app
from carbon_optimizer.logging_config import ACCESS_LOGGER_NAME, JsonFormatter, settings_secrets
from carbon_optimizer.settings import Settings
from tests.api._edge import client_for, tiny_edge

KEY_A = "test-key-alpha-0123456789abcdef"
KEY_B = "test-key-bravo-0123456789abcdef"


def make_settings(**overrides: object) -> Settings:
    base: dict[str, object] = {"_env_file": None, "rate_limit": "1000/minute"}
    base.update(overrides)
    return Settings(**base)  # type: ignore[arg-type]


def tiny_app(settings: Settings) -> FastAPI:
    app = FastAPI()

    @app.get("/v1/ping")
    async def ping() -> dict[str, str]:
        return {"pong": "ok"}

    @app.post("/v1/echo")
    async def echo(payload: dict[str, str]) -> dict[str, str]:
        return payload

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics() -> dict[str, str]:
        return {"metrics": "here"}

    return tiny_edge(app, settings)


@pytest.fixture
def keyed_settings() -> Settings:
    return make_settings(api_keys=f"{KEY_A},{KEY_B}")


async def test_missing_key_is_401_problem_with_challenge(keyed_settings: Settings) -> None:
    async with client_for(tiny_app(keyed_settings)) as client:
        response = await client.get("/v1/ping")
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"].startswith("Bearer")
    body = response.json()
    assert body["status"] == 401
    assert body["title"] == "Unauthorized"
    assert set(body) == {"type", "title", "status", "detail"}


async def test_wrong_key_is_401_invalid_token_and_not_echoed(keyed_settings: Settings) -> None:
    wrong = "not-a-valid-key-but-long-enough-xyz"
    async with client_for(tiny_app(keyed_settings)) as client:
        response = await client.get("/v1/ping", headers={"Authorization": f"Bearer {wrong}"})
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert wrong not in response.text
    assert KEY_A not in response.text


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {KEY_A}"},
        {"Authorization": f"bearer {KEY_B}"},
        {"X-API-Key": KEY_A},
    ],
    ids=["bearer", "bearer-lowercase", "x-api-key"],
)
async def test_valid_key_in_either_header_passes(keyed_settings: Settings, headers: dict[str, str]) -> None:
    async with client_for(tiny_app(keyed_settings)) as client:
        response = await client.get("/v1/ping", headers=headers)
    assert response.status_code == 200
    assert response.json() == {"pong": "ok"}


async def test_other_auth_scheme_is_rejected(keyed_settings: Settings) -> None:
    async with client_for(tiny_app(keyed_settings)) as client:
        response = await client.get("/v1/ping", headers={"Authorization": f"Basic {KEY_A}"})
    assert response.status_code == 401


@pytest.mark.parametrize("path", ["/healthz", "/metrics", "/docs", "/openapi.json"])
async def test_probe_metrics_and_docs_paths_are_exempt(keyed_settings: Settings, path: str) -> None:
    async with client_for(tiny_app(keyed_settings)) as client:
        response = await client.get(path)
    assert response.status_code == 200


async def test_no_keys_configured_means_open_api() -> None:
    async with client_for(tiny_app(make_settings())) as client:
        response = await client.get("/v1/ping")
    assert response.status_code == 200


def test_store_keeps_only_digests_and_compares_every_key(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = [KEY_A, KEY_B, "test-key-charlie-0123456789abcdef"]
    store = ApiKeyStore(keys)
    dumped = repr(vars(store))
    for key in keys:
        assert key not in dumped
    calls: list[int] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(1)
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    assert store.lookup(KEY_A) == client_id_for(KEY_A)  # match on the first key ...
    assert len(calls) == len(keys)  # ... still compares against every key
    calls.clear()
    assert store.lookup("nope") is None
    assert len(calls) == len(keys)


def test_client_id_is_stable_short_and_not_the_key() -> None:
    cid = client_id_for(KEY_A)
    assert cid == client_id_for(KEY_A)
    assert len(cid) == 12
    assert int(cid, 16) >= 0
    assert cid not in KEY_A
    assert cid != client_id_for(KEY_B)


async def test_security_headers_on_success_and_on_401(keyed_settings: Settings) -> None:
    async with client_for(tiny_app(keyed_settings)) as client:
        ok = await client.get("/v1/ping", headers={"X-API-Key": KEY_A})
        denied = await client.get("/v1/ping")
    for response in (ok, denied):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert "default-src 'none'" in response.headers["content-security-policy"]
        assert "strict-transport-security" not in response.headers  # development


async def test_hsts_in_production_and_docs_csp_allows_only_this_origin() -> None:
    # Production closes the docs unless they are enabled explicitly (docs/edge.md).
    settings = make_settings(environment="production", docs_enabled=True)
    async with client_for(tiny_app(settings)) as client:
        api = await client.get("/v1/ping")
        docs = await client.get("/docs")
    assert api.headers["strict-transport-security"].startswith("max-age=")
    docs_csp = docs.headers["content-security-policy"]
    assert "script-src 'self'" in docs_csp
    assert "cdn.jsdelivr.net" not in docs_csp  # assets come from the package (api/docs.py)


async def test_docs_switch_removes_docs_and_schema() -> None:
    settings = make_settings(docs_enabled=False)
    app = tiny_app(settings)
    async with client_for(app) as client:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert (await client.get(path)).status_code == 404
        assert (await client.get("/v1/ping")).status_code == 200
    assert app.openapi_url is None


async def test_cors_allowlist_preflight_and_actual_request(keyed_settings: Settings) -> None:
    settings = keyed_settings.model_copy(update={"cors_origins": ["https://app.example"]})
    preflight_headers = {
        "Origin": "https://app.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    async with client_for(tiny_app(settings)) as client:
        allowed = await client.options("/v1/echo", headers=preflight_headers)
        denied = await client.options(
            "/v1/echo", headers={**preflight_headers, "Origin": "https://evil.example"}
        )
        actual = await client.get("/v1/ping", headers={"Origin": "https://app.example", "X-API-Key": KEY_A})
        unauth = await client.get("/v1/ping", headers={"Origin": "https://app.example"})
    assert allowed.status_code == 200  # preflights carry no key and must not be 401
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    assert denied.status_code == 400
    assert "access-control-allow-origin" not in denied.headers
    assert actual.headers["access-control-allow-origin"] == "https://app.example"
    # A browser can read the 401 (CORS wraps auth).
    assert unauth.status_code == 401
    assert unauth.headers["access-control-allow-origin"] == "https://app.example"


async def test_no_cors_headers_without_allowlist(keyed_settings: Settings) -> None:
    async with client_for(tiny_app(keyed_settings)) as client:
        response = await client.get("/v1/ping", headers={"Origin": "https://app.example", "X-API-Key": KEY_A})
    assert "access-control-allow-origin" not in response.headers


def test_create_app_installs_the_whole_edge_as_one_layer(keyed_settings: Settings) -> None:
    """Issue 12: one pure-ASGI edge layer; the order of its checks is pinned in test_edge.py."""
    app = create_app(keyed_settings)
    layers: list[object] = [m.cls for m in app.user_middleware]
    assert layers == [EdgeMiddleware]


@pytest.fixture
def access_log() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(ACCESS_LOGGER_NAME)
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


async def test_access_log_is_json_with_client_id_and_never_the_key(
    keyed_settings: Settings, access_log: io.StringIO
) -> None:
    async with client_for(tiny_app(keyed_settings)) as client:
        await client.get("/v1/ping", headers={"Authorization": f"Bearer {KEY_A}"})
        await client.get("/v1/ping?token=abc", headers={"X-API-Key": "wrong-key-1234567890"})
    lines = [json.loads(line) for line in access_log.getvalue().splitlines()]
    assert len(lines) == 2
    ok, denied = lines
    assert ok["status"] == 200
    assert ok["method"] == "GET"
    assert ok["path"] == "/v1/ping"
    assert ok["client_id"] == client_id_for(KEY_A)
    assert isinstance(ok["latency_ms"], float)
    assert {"request_id", "pid", "ts", "level"} <= set(ok)
    assert denied["status"] == 401
    assert denied["client_id"] is None
    text = access_log.getvalue()
    assert KEY_A not in text
    assert "wrong-key-1234567890" not in text
    assert "token=abc" not in text  # query strings are not logged


def test_formatter_masks_every_secret_from_settings() -> None:
    settings = make_settings(
        api_keys=KEY_A,
        electricitymaps={"api_key": "em-token-secret-value"},
        redis={"url": "redis://:hunter2-password@redis:6379/0"},
    )
    secrets = settings_secrets(settings)
    formatter = JsonFormatter(secrets)
    record = logging.LogRecord(
        "x",
        logging.ERROR,
        __file__,
        1,
        "failed with %s %s %s",
        (KEY_A, "em-token-secret-value", "hunter2-password"),
        None,
    )
    text = formatter.format(record)
    for secret in (KEY_A, "em-token-secret-value", "hunter2-password"):
        assert secret not in text
    assert json.loads(text)["msg"].count("***") == 3


def test_settings_repr_never_contains_keys() -> None:
    settings = make_settings(api_keys=KEY_A)
    assert KEY_A not in repr(settings)
    assert settings.api_keys == [SecretStr(KEY_A)]


def test_openapi_documents_auth_429_and_exemptions(keyed_settings: Settings) -> None:
    schema = tiny_app(keyed_settings).openapi()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "API key as a bearer token",
    }
    assert schemes["apiKeyHeader"]["name"] == "X-API-Key"
    ping = schema["paths"]["/v1/ping"]["get"]
    assert ping["security"] == [{"bearerAuth": []}, {"apiKeyHeader": []}]
    assert "application/problem+json" in ping["responses"]["401"]["content"]
    assert "Retry-After" in ping["responses"]["429"]["headers"]
    health = schema["paths"]["/healthz"]["get"]
    assert health["security"] == []
    assert "401" not in health["responses"]
    assert "429" not in health["responses"]


def test_openapi_has_no_auth_when_no_keys() -> None:
    schema = tiny_app(make_settings()).openapi()
    assert "securitySchemes" not in schema.get("components", {})
    assert "401" not in schema["paths"]["/v1/ping"]["get"]["responses"]
