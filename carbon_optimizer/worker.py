"""The gunicorn worker: uvicorn's, plus the HTTP-level edge bounds uvicorn itself does not enforce.

`gunicorn.conf.py` runs `carbon_optimizer.worker.EdgeUvicornWorker`. It is the maintained
`uvicorn_worker.UvicornWorker` (uvloop + httptools, the app factory per worker) with one change:
its HTTP protocol is `EdgeHttpToolsProtocol`, which adds what only the protocol can do, because
it happens before there is an ASGI request to hand to the app (issue 11, items 7, 10 and 11):

- a header deadline: the request line and headers must arrive within `edge.header_timeout_s` of
  the connection (or of the first byte of the next keep-alive request), else 408 and close —
  slow-loris clients no longer hold a connection slot forever (the body deadline is the app's
  edge, `api/edge.py`);
- URL and header-block size bounds while parsing: 414 / 431 before anything is buffered further;
- a per-worker bound on open connections + running requests (`edge.max_connections`, uvicorn's
  `limit_concurrency`), answered with a problem+json 503 instead of uvicorn's plain text;
- malformed HTTP answered as a problem+json 400 instead of uvicorn's plain text;
- draining on shutdown and on `max_requests` recycling: an idle keep-alive connection is not
  closed at once (a request already on the wire would be reset) but kept for
  `edge.drain_grace_s`; a request arriving meanwhile is answered with `Connection: close`.

What stays uvicorn's: the keep-alive idle timeout, HTTP/1.1 parsing itself, WebSocket upgrades
(unused here). Responses the protocol writes carry no request id: no ASGI request exists yet.
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from typing import Any, ClassVar

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn_worker import UvicornWorker

from carbon_optimizer.settings import EdgeSettings, Settings


def problem_http_response(status: int, detail: str, *, extra: tuple[tuple[bytes, bytes], ...] = ()) -> bytes:
    """A complete HTTP/1.1 problem+json response that closes the connection."""
    phrase = HTTPStatus(status).phrase
    body = orjson.dumps({"type": "about:blank", "title": phrase, "status": status, "detail": detail})
    head = [
        f"HTTP/1.1 {status} {phrase}".encode(),
        b"content-type: application/problem+json",
        b"content-length: " + str(len(body)).encode(),
        b"cache-control: no-store",
        b"connection: close",
        *(name + b": " + value for name, value in extra),
    ]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


async def _over_capacity(scope: Any, receive: Any, send: Any) -> None:
    """ASGI app for requests beyond the worker's connection bound (uvicorn's is plain text)."""
    body = orjson.dumps(
        {
            "type": "about:blank",
            "title": "Service Unavailable",
            "status": 503,
            "detail": "This worker is at its connection limit; retry shortly.",
        }
    )
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", b"1"),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class _Reject(Exception):
    """Raised inside a parser callback to stop parsing; the status goes out via send_400_response."""


class EdgeHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header deadline, size bounds, capacity and drain."""

    edge: ClassVar[EdgeSettings] = EdgeSettings()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # We check the concurrency bound ourselves, to answer it as problem+json.
        self._capacity = self.limit_concurrency
        self.limit_concurrency = None
        self._app = self.app
        self._header_timer: asyncio.TimerHandle | None = None
        self._idle_close: asyncio.TimerHandle | None = None
        self._header_bytes = 0
        self._reject: tuple[int, str] | None = None
        self._draining = False

    # ----- connection -----

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Accept, and start the clock for the first request's headers."""
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the timers with the connection."""
        self._cancel_timers()
        super().connection_lost(exc)

    def _cancel_timers(self) -> None:
        for timer in (self._header_timer, self._idle_close):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._idle_close = None

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.edge.header_timeout_s, self._header_timeout)

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a request is being served: the header phase is over
        detail = f"The request headers did not arrive within {self.edge.header_timeout_s:g} s"
        self.transport.write(problem_http_response(408, detail))
        self.transport.close()

    # ----- parser callbacks -----

    def on_message_begin(self) -> None:
        """A request starts: its headers are on the clock."""
        super().on_message_begin()
        self._header_bytes = 0
        self._arm_header_timer()

    def on_url(self, url: bytes) -> None:
        """Collect the target, bounded."""
        super().on_url(url)
        if len(self.url) > self.edge.max_url_bytes:
            self._reject = (414, f"The URL exceeds the {self.edge.max_url_bytes}-byte limit")
            raise _Reject

    def on_header(self, name: bytes, value: bytes) -> None:
        """Collect one header, bounded in total."""
        super().on_header(name, value)
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > self.edge.max_header_bytes:
            self._reject = (431, f"The request headers exceed the {self.edge.max_header_bytes}-byte limit")
            raise _Reject

    def on_headers_complete(self) -> None:
        """Headers are in: stop their clock; refuse beyond capacity; no keep-alive while draining."""
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        over = self._capacity is not None and (
            len(self.connections) > self._capacity or len(self.tasks) >= self._capacity
        )
        self.app = _over_capacity if over else self._app
        super().on_headers_complete()
        if (over or self._draining) and self.cycle is not None:
            self.cycle.keep_alive = False

    def send_400_response(self, msg: str) -> None:
        """Uvicorn's reject of a request it cannot parse, as problem+json (or our 414/431)."""
        status, detail = self._reject or (400, "The request is not valid HTTP/1.1.")
        self._reject = None
        self.transport.write(problem_http_response(status, detail))
        self.transport.close()

    # ----- shutdown / recycling -----

    def shutdown(self) -> None:
        """Graceful stop: busy connections close after their response; idle ones after a grace."""
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False
            return
        grace = self.edge.drain_grace_s
        if grace <= 0 or self.transport.is_closing():
            self.transport.close()
            return
        self._draining = True
        self._idle_close = self.loop.call_later(grace, self._close_if_idle)

    def _close_if_idle(self) -> None:
        self._idle_close = None
        if self.cycle is None or self.cycle.response_complete:
            self.transport.close()
        # else: the request that arrived in the grace period has keep_alive=False and closes after


class EdgeUvicornWorker(UvicornWorker):  # type: ignore[misc]
    """`UvicornWorker` with `EdgeHttpToolsProtocol` and the per-worker connection bound."""

    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {"loop": "auto", "http": EdgeHttpToolsProtocol}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        edge = Settings().edge
        EdgeHttpToolsProtocol.edge = edge
        self.config.limit_concurrency = edge.max_connections
        # Only used if uvicorn falls back to h11: its own bound on an incomplete request head.
        self.config.h11_max_incomplete_event_size = edge.max_url_bytes + edge.max_header_bytes
