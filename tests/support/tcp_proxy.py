"""A TCP proxy that can reset every connection on command (an RST, not a clean close).

Why: a pooled Redis connection that receives a TCP RST surfaces under uvloop as a `RuntimeError`
("… handler is closed"), where the stdlib loop raises `ConnectionError`; the store must treat both
as an outage. The proxy runs on its own thread and loop so any test loop (uvloop or not) can use it.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from concurrent.futures import Future


class ResettingProxy:
    """127.0.0.1:<port> → target; `reset()` aborts every live connection with SO_LINGER 0."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def start(self) -> ResettingProxy:
        """Listen on a free port (returns self)."""
        self._thread.start()
        self._server = self._call(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def _call(self, coro: object) -> asyncio.Server:
        future: Future[asyncio.Server] = asyncio.run_coroutine_threadsafe(coro, self._loop)  # type: ignore[arg-type]
        return future.result(timeout=5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}

    def reset(self) -> None:
        """Send an RST on every client connection (and drop the upstream side)."""

        async def abort_all() -> None:
            for writer in list(self._writers):
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
            self._writers.clear()

        asyncio.run_coroutine_threadsafe(abort_all(), self._loop).result(timeout=5)

    def stop(self) -> None:
        """Close the listener and stop the thread."""
        if self._server is not None:
            self._server.close()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            for task in asyncio.all_tasks(self._loop):
                task.cancel()
            self._loop.run_until_complete(asyncio.sleep(0))
            self._loop.close()
