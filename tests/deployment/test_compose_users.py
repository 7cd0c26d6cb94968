"""Hardened compose services run as non-root users, and Redis really starts with what the file leaves it.

There is no Docker engine on the build machines, so the check that would have caught the day-one
failure is done with the pieces the container would use: the steps of the official Redis image's
entrypoint (`docker-entrypoint.sh` of redis:7.2-alpine: when started as root it chowns its working
directory to `redis` and re-executes itself through `su-exec redis`, all under `set -e`) are run
under `setpriv` with exactly the user and the capabilities docker-compose.yml gives the service, in
a directory standing in for its /data tmpfs, and the real `redis-server` must then answer PING.
The old file (root, `cap_drop: [ALL]`) must fail the same reproduction.
"""

from __future__ import annotations

import importlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.deployment.harness import free_port

ROOT = Path(__file__).resolve().parents[2]
yaml: Any = importlib.import_module("yaml")

# The official image's entrypoint logic, with the image's names made numeric for the host:
# `chown redis` → `chown $REDIS_UID`, `su-exec redis` → `setpriv --reuid/--regid` (the same
# setuid/setgid calls, the same capabilities needed).
ENTRYPOINT = """\
set -e
if [ "$1" = 'redis-server' -a "$(id -u)" = '0' ]; then
    find . \\! -user "$REDIS_UID" -exec chown "$REDIS_UID" '{}' +
    exec setpriv --reuid="$REDIS_UID" --regid="$REDIS_GID" --clear-groups sh "$0" "$@"
fi
um="$(umask)"
if [ "$um" = '0022' ]; then
    umask 0077
fi
exec "$@"
"""
REDIS_UID, REDIS_GID = 999, 1000


def compose_services() -> dict[str, dict[str, Any]]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services: dict[str, dict[str, Any]] = data["services"]
    return services


def hardened(service: dict[str, Any]) -> bool:
    return "ALL" in [str(cap).upper() for cap in service.get("cap_drop", [])]


def uid_gid(service: dict[str, Any]) -> tuple[int, int | None]:
    user = str(service["user"])
    uid, _, gid = user.partition(":")
    assert uid.isdigit(), f"user {user!r}: use numeric ids (names may not exist in the image)"
    assert not gid or gid.isdigit(), f"user {user!r}: use numeric ids"
    return int(uid), int(gid) if gid else None


def test_every_hardened_service_sets_a_non_root_user() -> None:
    services = compose_services()
    hardened_names = [name for name, service in services.items() if hardened(service)]
    assert {"app", "redis"} <= set(hardened_names)
    for name in hardened_names:
        assert "user" in services[name], f"{name}: cap_drop ALL without a non-root `user:`"
        uid, gid = uid_gid(services[name])
        assert uid != 0, f"{name} runs as root with no capabilities"
        assert gid != 0, f"{name} runs with the root group"


def test_app_user_matches_the_dockerfile() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"USER {compose_services()['app']['user']}" in dockerfile


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def run_entrypoint(data_dir: Path, user: str | None, cap_add: list[str]) -> tuple[int | None, bool, str]:
    """(exit code or None if still running, answered PING, output) of the entrypoint under setpriv."""
    service = compose_services()["redis"]
    port = free_port()
    caps = ",".join(["-all", *(f"+{cap.lower()}" for cap in cap_add)])
    command = [
        "setpriv",
        f"--inh-caps={caps}",
        f"--bounding-set={caps}",
    ]
    if user is not None:
        uid, _, gid = user.partition(":")
        command += [f"--reuid={uid}", f"--regid={gid or uid}", "--clear-groups"]
    redis_args = [str(arg) for arg in service["command"]]
    # The entrypoint tests `$1 = redis-server` by name, so the name stays and PATH finds the binary.
    assert redis_args[0] == "redis-server"
    script = data_dir.parent / "docker-entrypoint.sh"
    script.write_text(ENTRYPOINT)
    script.chmod(0o755)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "REDIS_UID": str(REDIS_UID),
        "REDIS_GID": str(REDIS_GID),
    }
    command += ["sh", str(script), *redis_args, "--port", str(port), "--bind", "127.0.0.1"]
    log = data_dir.parent / "entrypoint.log"
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=data_dir, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if _ping(port):
                return None, True, log.read_text()
            if process.poll() is not None:
                break
            time.sleep(0.05)
        return process.poll(), False, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


needs_setpriv = pytest.mark.skipif(
    shutil.which("setpriv") is None or shutil.which("redis-server") is None or os.geteuid() != 0,
    reason="needs setpriv (util-linux), redis-server and root to switch users",
)


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """Stands in for the /data tmpfs: root-owned, mode as the compose file mounts it.

    Outside pytest's tmp_path, whose parents are private to root: the redis user must reach it.
    """
    service = compose_services()["redis"]
    options = next(str(t) for t in service["tmpfs"] if str(t).startswith("/data")).partition(":")[2]
    # Docker's tmpfs default mode is 1777 when the file gives none.
    mode = next((o.partition("=")[2] for o in options.split(",") if o.startswith("mode=")), "1777")
    with tempfile.TemporaryDirectory(prefix="compose-redis-") as parent:
        Path(parent).chmod(0o755)
        path = Path(parent) / "data"
        path.mkdir()
        path.chmod(int(mode, 8))
        yield path


@needs_setpriv
def test_redis_entrypoint_starts_with_the_compose_user_and_capabilities(data_dir: Path) -> None:
    service = compose_services()["redis"]
    code, answered, output = run_entrypoint(data_dir, service.get("user"), service.get("cap_add", []))
    assert answered, f"redis did not start under the compose settings (exit {code}): {output}"


@needs_setpriv
def test_the_reproduction_catches_root_without_capabilities(data_dir: Path) -> None:
    # The day-one file: no `user:`, every capability dropped → chown fails, `set -e` exits.
    code, answered, output = run_entrypoint(data_dir, None, [])
    assert not answered
    assert code not in (None, 0), output
