"""Issue 11 item 9: a token echoed by the upstream never reaches /health or the shared cache.

Real Redis (the cache every replica reads), the real carbon stack, and the upstream mocked at the
network boundary (httpx.MockTransport) answering 401 with our own token quoted in its body.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import orjson
import pytest
import redis

from carbon_optimizer.errors import ProviderAuthError
from carbon_optimizer.providers.carbon.offline import OfflineCarbonProvider
from carbon_optimizer.providers.carbon.stack import build_carbon_stack
from carbon_optimizer.providers.store import build_store
from carbon_optimizer.redact import MASK, redact
from carbon_optimizer.settings import Settings
from tests.deployment.harness import start_redis

TOKEN = "em-live-token-7Hq2mZ8vR4xK9pL3"


def echoing_upstream(request: httpx.Request) -> httpx.Response:
    sent = request.headers.get("auth-token", "")
    body = {"error": f"Invalid auth-token: {sent}", "message": f"token={sent} rejected; Bearer {sent}"}
    return httpx.Response(401, json=body)


@pytest.mark.integration
async def test_echoed_token_is_masked_in_health_and_in_redis() -> None:
    server = start_redis()
    settings = Settings(
        _env_file=None,
        electricitymaps={"api_key": TOKEN, "base_url": "https://em.test/v3", "max_retries": 0},
        redis={"url": server.url},
    )
    try:
        async with httpx.AsyncClient(transport=httpx.MockTransport(echoing_upstream)) as http:
            store = build_store(settings.redis)  # what runtime() passes: the one shared store
            stack = await build_carbon_stack(
                settings, http=http, offline=OfflineCarbonProvider(), store=store
            )
            try:
                now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
                errors: list[str] = []
                for start in (now, now - timedelta(days=2)):
                    try:
                        await stack.provider.series("DE", start, start + timedelta(hours=6))
                    except ProviderAuthError as exc:
                        errors.append(exc.message)
                health = orjson.dumps(stack.health()).decode()
            finally:
                await stack.aclose()
                if store is not None:
                    await store.aclose()
        stored = [
            redis.Redis(port=server.port).get(k) or b"" for k in redis.Redis(port=server.port).keys("*")
        ]
    finally:
        server.kill()
    assert "401" in health or "rejected" in health or MASK in health  # the failure is reported...
    assert TOKEN not in health  # ...without the token
    assert not any(TOKEN in message for message in errors)
    assert stored, "the negative entry should be in the shared cache"
    assert not any(TOKEN.encode() in value for value in stored)


@pytest.mark.parametrize(
    "text",
    [
        f"Invalid auth-token: {TOKEN}",
        f'{{"auth-token": "{TOKEN}"}}',
        f"Authorization: Bearer {TOKEN}",
        f"https://api.example/v3/x?zone=DE&token={TOKEN}",
        f"redis://default:{TOKEN}@redis:6379/0",
        "api_key=short1 password: hunter2",
    ],
)
def test_redact_masks_credential_shapes(text: str) -> None:
    masked = redact(text)
    assert TOKEN not in masked
    assert "short1" not in masked
    assert "hunter2" not in masked
    assert MASK in masked


def test_redact_keeps_ordinary_upstream_words() -> None:
    text = "electricitymaps history: no data for zone DE (HTTP 404); retry after 2.0 s"
    assert redact(text) == text
    assert redact("token rejected (abcd)", secrets=("abcd",)) == f"token rejected ({MASK})"
