"""Fixtures for the caller-facing features: a real uvicorn server and an in-process app.

The live server is a real `uvicorn` process on a free loopback port (API keys on, rate limit off,
no Electricity Maps key, so bundled data answers), shared by the whole session: starting it costs
about a second and a half.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from carbon_optimizer.app import AppOverrides, create_app
from carbon_optimizer.settings import Settings
from tests.deployment.harness import ROOT, free_port
from tests.fakes import fixed_clock

LIVE_API_KEY = "callers-test-key-0123456789abcdef"


@dataclass
class LiveServer:
    url: str
    api_key: str
    process: subprocess.Popen[bytes]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any CARBON_OPTIMIZER_* setting of the developer's shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARBON_OPTIMIZER_")}
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def live_server() -> Iterator[LiveServer]:
    port = free_port()
    env = clean_env(
        CARBON_OPTIMIZER_API_KEYS=LIVE_API_KEY,
        CARBON_OPTIMIZER_RATE_LIMIT_ENABLED="false",
        CARBON_OPTIMIZER_RESULT_CACHE_TTL_S="0",
    )
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "carbon_optimizer.app:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(url + "/readyz", timeout=1.0).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            log.seek(0)
            stderr = log.read().decode(errors="replace")
            log.close()
            pytest.fail(f"uvicorn did not become ready: {stderr[-2000:]}")
        time.sleep(0.1)
    try:
        yield LiveServer(url=url, api_key=LIVE_API_KEY, process=process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


@pytest.fixture
async def asgi_app() -> AsyncIterator[FastAPI]:
    """The real app (bundled data, fixed clock) with its lifespan running, for ASGITransport."""
    app = create_app(Settings(_env_file=None), AppOverrides(clock=fixed_clock()))
    async with LifespanManager(app) as manager:
        yield manager.app  # type: ignore[misc]
