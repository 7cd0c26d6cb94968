"""The Dockerfile's HEALTHCHECK, run as the container would run it, follows the port setting.

Before, it asked 127.0.0.1:8000 whatever `CARBON_OPTIMIZER_SERVER__PORT` said, so a container
started on another port was reported unhealthy forever.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.deployment.harness import free_port

ROOT = Path(__file__).resolve().parents[2]


def healthcheck_command() -> list[str]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    match = re.search(r"^HEALTHCHECK .*?CMD (\[.*\])\s*$", text, re.M)
    assert match, "no exec-form HEALTHCHECK in the Dockerfile"
    command: list[str] = json.loads(match.group(1))
    return command


class _Healthz(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()
        self.wfile.write(b'{"status": "ok"}')

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server_port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Healthz)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def run_probe(env_port: str | None) -> int:
    command = healthcheck_command()
    assert command[0] == "python"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARBON_OPTIMIZER_")}
    if env_port is not None:
        env["CARBON_OPTIMIZER_SERVER__PORT"] = env_port
    argv = [sys.executable, *command[1:]]
    done = subprocess.run(argv, env=env, capture_output=True, timeout=30, check=False)
    return done.returncode


def test_healthcheck_asks_the_configured_port(server_port: int) -> None:
    assert run_probe(str(server_port)) == 0


def test_healthcheck_fails_when_nothing_listens_on_the_configured_port() -> None:
    assert run_probe(str(free_port())) != 0  # a port nobody listens on


def test_healthcheck_defaults_to_8000_like_settings() -> None:
    from carbon_optimizer.settings import ServerSettings

    command = " ".join(healthcheck_command())
    assert f"or '{ServerSettings().port}'" in command  # empty or unset → the Settings default
