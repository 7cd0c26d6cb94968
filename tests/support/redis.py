"""One launcher of real `redis-server` processes for tests and benches (no Docker needed).

`RedisServer().start()` runs `redis-server --save "" --appendonly no` on a free port; it can be
killed, restarted on the same port (empty), stalled with SIGSTOP and resumed with SIGCONT. The
pytest fixtures `redis_factory` / `redis_server` (tests/integration/conftest.py) wrap it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time

REDIS_BINARY = shutil.which("redis-server")


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """One redis-server process on a fixed port: start, kill, restart, stall (SIGSTOP), resume."""

    def __init__(self, port: int | None = None) -> None:
        if REDIS_BINARY is None:
            raise RuntimeError("redis-server binary not found")
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.stalled = False

    @property
    def url(self) -> str:
        """redis:// URL of this server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start (or restart) the server and wait until it answers PING."""
        assert REDIS_BINARY is not None
        self.process = subprocess.Popen(
            [
                REDIS_BINARY,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.stalled = False
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self._pings():
                return self
            time.sleep(0.01)
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def _pings(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL (resuming a stalled process first) and reap it."""
        if self.process is None:
            return
        if self.stalled:
            self.resume()
        self.process.kill()
        self.process.wait(timeout=5)
        self.process = None

    def restart(self) -> None:
        """Kill if running, then start again on the same port."""
        self.kill()
        self.start()

    def stall(self) -> None:
        """SIGSTOP: the port still accepts TCP connections, but nothing is answered."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)
        self.stalled = True

    def resume(self) -> None:
        """SIGCONT after `stall`."""
        if self.process is not None and self.stalled:
            os.kill(self.process.pid, signal.SIGCONT)
        self.stalled = False
