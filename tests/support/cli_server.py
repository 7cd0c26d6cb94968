"""`carbon-optimizer serve` as a real subprocess on a free port, for the CLI's end-to-end tests.

One launcher so every CLI test that needs a server starts it the same way: the embedded default
(every `CARBON_OPTIMIZER_*` variable of the developer's shell removed), plus whatever the test
sets, ready when `/readyz` answers 200, terminated on exit.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from tests.support.redis import free_port


@contextmanager
def running_server(extra_env: dict[str, str] | None = None, ready_s: float = 30.0) -> Iterator[str]:
    """Yield the base URL of a `carbon-optimizer serve` started with `extra_env` on top."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARBON_OPTIMIZER_")}
    env.update(extra_env or {})
    proc = subprocess.Popen(
        [sys.executable, "-m", "carbon_optimizer", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + ready_s
    try:
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            pytest.fail("server did not become ready")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
