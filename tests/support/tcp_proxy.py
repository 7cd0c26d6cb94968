"""A TCP proxy that can reset, stall and heal the connections it forwards (fault injection).

Self-contained (stdlib only) so tests and `bench/` can put it between the app and Redis:

    proxy = TcpProxy(("127.0.0.1", redis_port)).start()
    ... point the app at redis://127.0.0.1:{proxy.port}/0 ...
    proxy.reset_all()      # every open connection gets a TCP RST (SO_LINGER 0), both sides
    proxy.stall()          # keep accepting, forward nothing (a hung server); proxy.resume()
    proxy.refuse(True)     # new connections are reset at once (a dead server behind a live port)
    proxy.stop()

It runs its own asyncio loop in a daemon thread, so the process under test may use any event
loop (uvloop included) or live in another process entirely.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any


def _rst(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST instead of a FIN: linger on, timeout 0."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class TcpProxy:
    """Forward 127.0.0.1:<port> to `upstream`, with commands to break the forwarded connections."""

    def __init__(self, upstream: tuple[str, int], *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.upstream = upstream
        self.host = host
        self.port = port
        self.resets = 0
        self.connections_seen = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._flowing = asyncio.Event()
        self._refuse = False
        self._tasks: set[asyncio.Task[None]] = set()

    # ----- control (any thread) -----

    def start(self) -> TcpProxy:
        """Start listening; returns self once the port is bound."""
        self._thread.start()
        self._call(self._start).result(timeout=10)
        return self

    def stop(self) -> None:
        """Reset every connection, stop listening and end the thread."""
        with contextlib.suppress(Exception):
            self._call(self._stop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()

    def reset_all(self) -> int:
        """Send a TCP RST on every open forwarded connection (both sides); returns how many."""
        return int(self._call(self._reset_all).result(timeout=10))

    def stall(self) -> None:
        """Stop forwarding bytes (connections stay open): the upstream looks hung."""
        self._loop.call_soon_threadsafe(self._flowing.clear)

    def resume(self) -> None:
        """Forward bytes again."""
        self._loop.call_soon_threadsafe(self._flowing.set)

    def refuse(self, on: bool = True) -> None:
        """While on, reset every new connection as soon as it is accepted."""
        self._refuse = on

    @property
    def open_connections(self) -> int:
        """Forwarded connections currently open."""
        return len(self._pairs)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----- inside the proxy's loop -----

    def _call(self, factory: Callable[[], Any]) -> Future[Any]:
        return asyncio.run_coroutine_threadsafe(factory(), self._loop)

    async def _start(self) -> None:
        self._flowing.set()
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _stop(self) -> None:
        await self._reset_all()
        if self._server is not None:
            self._server.close()
        if self._tasks:  # the resets end every pipe; let the handlers return on their own
            await asyncio.wait(set(self._tasks), timeout=2)

    async def _reset_all(self) -> int:
        pairs = list(self._pairs)
        for client, upstream in pairs:
            _rst(client)
            _rst(upstream)
        self._pairs.clear()
        self.resets += len(pairs)
        return len(pairs)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self.connections_seen += 1
        if self._refuse:
            _rst(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            _rst(writer)
            return
        pair = (writer, up_writer)
        self._pairs.add(pair)
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self._pairs.discard(pair)
            for w in pair:
                if not w.transport.is_closing():
                    w.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, RuntimeError):
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                await self._flowing.wait()
                if writer.transport.is_closing():
                    break
                writer.write(data)
                await writer.drain()
        if not writer.transport.is_closing():
            with contextlib.suppress(OSError, RuntimeError):
                writer.write_eof()
