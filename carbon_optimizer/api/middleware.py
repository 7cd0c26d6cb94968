"""Pure-ASGI middleware for the request edge (no BaseHTTPMiddleware: it costs a task per request).

`RequestEdgeMiddleware` (outermost, before auth) does cheap header-only things in one pass:
- request id: echo a well-formed incoming `X-Request-ID`, else mint one; expose it in
  `scope["state"]["request_id"]` and on every response (including errors from inner layers);
- 414 / 431 for a URL or header block over the configured bounds (the production worker's HTTP
  protocol rejects them even earlier, while parsing; this covers any other server);
- 415 for a body-carrying request whose Content-Type is not JSON;
- 413 for a declared Content-Length over the limit;
- redirects carry a relative `Location`, so a client's Host header is never reflected;
- `HEAD /healthz` and `HEAD /readyz` are answered as their GET without a body.

`BodyReadMiddleware` (innermost, *after* the API-key check, so an unauthenticated client never
makes us buffer anything) reads the body once, bounded in size (413) and time (408), before
FastAPI reads it, because FastAPI turns body-read errors into a 400.

`MetricsPortMiddleware` keeps `/metrics` off the public port when a metrics port is configured.

`RouteNameMemoMiddleware` is the Prometheus instrumentator with its per-request route lookup
memoised (the route table is fixed once the app is built).
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from contextvars import ContextVar
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

import orjson
from prometheus_fastapi_instrumentator.middleware import PrometheusInstrumentatorMiddleware
from starlette.requests import Request

from carbon_optimizer.api.errors import PROBLEM_MEDIA_TYPE

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

REQUEST_ID_HEADER = b"x-request-id"
_VALID_ID = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_HEAD_AS_GET = frozenset({"/healthz", "/readyz"})
request_id_var: ContextVar[str] = ContextVar("request_id", default="-")


def _is_json(content_type: bytes) -> bool:
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive callable that hands the buffered body to the app once, then defers to the server."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class RequestEdgeMiddleware:
    """Request id, URL/header bounds, content-type and declared body-size checks."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        max_url_bytes: int = 8 * 1024,
        max_header_bytes: int = 16 * 1024,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_url_bytes = max_url_bytes
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection scope."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
        incoming_id = b""
        content_type = b""
        content_length: int | None = None
        for name, value in headers:
            if name == REQUEST_ID_HEADER:
                incoming_id = value
            elif name == b"content-type":
                content_type = value
            elif name == b"content-length":
                try:
                    content_length = int(value)
                except ValueError:
                    content_length = None
        request_id = incoming_id.decode("ascii") if _VALID_ID.match(incoming_id) else uuid.uuid4().hex
        # A per-request copy of the lifespan state, as uvicorn makes: some servers and test harnesses
        # (asgi-lifespan) hand every request the same dict, and per-request values must not leak.
        state = dict(scope.get("state") or {})
        state["request_id"] = request_id
        scope["state"] = state
        token = request_id_var.set(request_id)
        rid_header = (REQUEST_ID_HEADER, request_id.encode("ascii"))

        head = scope["method"] == "HEAD" and scope["path"] in _HEAD_AS_GET
        if head:
            # Load balancers probe with HEAD: answer it as the GET it stands for, without a body.
            # A copy: the server keeps its own scope saying HEAD (uvicorn then writes no body).
            scope = {**scope, "method": "GET"}

        async def send_with_id(message: Message) -> None:
            if head and message["type"] == "http.response.body":
                message = {**message, "body": b""}
            if message["type"] == "http.response.start":
                raw = list(message.get("headers") or ())
                if 300 <= message.get("status", 200) < 400:
                    raw = [(n, _relative(v)) if n.lower() == b"location" else (n, v) for n, v in raw]
                message["headers"] = [*raw, rid_header]
            await send(message)

        try:
            url_bytes = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
            if url_bytes > self.max_url_bytes:
                await send_problem_bytes(
                    send_with_id, 414, f"The URL exceeds the {self.max_url_bytes}-byte limit"
                )
                return
            if sum(len(n) + len(v) + 4 for n, v in headers) > self.max_header_bytes:
                await send_problem_bytes(
                    send_with_id, 431, f"The request headers exceed the {self.max_header_bytes}-byte limit"
                )
                return
            if scope["method"] in _BODY_METHODS:
                has_body = content_length != 0 and (content_length is not None or content_type)
                if has_body and not _is_json(content_type):
                    await send_problem_bytes(send_with_id, 415, "Content-Type must be application/json")
                    return
                if content_length is not None and content_length > self.max_body_bytes:
                    await send_problem_bytes(
                        send_with_id, 413, f"Request body exceeds the {self.max_body_bytes}-byte limit"
                    )
                    return
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)


def _relative(location: bytes) -> bytes:
    """`http://evil.example/v1/x?y` → `/v1/x?y`: our redirects never leave this host."""
    parts = urlsplit(location)
    if not parts.scheme and not parts.netloc:
        return location
    path = parts.path or b"/"
    return path + (b"?" + parts.query if parts.query else b"")


async def send_problem_bytes(send: Send, status: int, detail: str) -> None:
    """A complete problem+json response on a raw ASGI channel."""
    title = HTTPStatus(status).phrase
    body = orjson.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyReadMiddleware:
    """Buffer a request body once, bounded in bytes (413) and in time (408), for the app to replay.

    Installed inside the API-key check: the body of an unauthenticated request is never read.
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, timeout_s: float) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection scope."""
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        try:
            async with asyncio.timeout(self.timeout_s):
                body = await self._read_body(receive)
        except TimeoutError:
            await send_problem_bytes(
                send, 408, f"The request body did not arrive within {self.timeout_s:g} s"
            )
            return
        if body is None:
            await send_problem_bytes(send, 413, f"Request body exceeds the {self.max_body_bytes}-byte limit")
            return
        await self.app(scope, _replay(body, receive), send)

    async def _read_body(self, receive: Receive) -> bytes | None:
        """Read the whole body (bounded); None when it exceeds the limit. Bodies here are small JSON."""
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break  # client went away; let the app see an empty body
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


class MetricsPortMiddleware:
    """With a metrics port configured, `/metrics` answers only there, and only `/metrics` does.

    The Ingress routes the public port; Prometheus scrapes the metrics port inside the cluster.
    Everything else on the metrics port, and `/metrics` on any other port, is a 404.
    """

    def __init__(self, app: ASGIApp, *, metrics_port: int | None, metrics_path: str = "/metrics") -> None:
        self.app = app
        self.metrics_port = metrics_port
        self.metrics_path = metrics_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection scope."""
        if self.metrics_port is None or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        server = scope.get("server")
        on_metrics_port = server is not None and server[1] == self.metrics_port
        if on_metrics_port != (scope["path"] == self.metrics_path):
            await send_problem_bytes(send, 404, "Not Found")
            return
        await self.app(scope, receive, send)


class RouteNameMemoMiddleware(PrometheusInstrumentatorMiddleware):
    """The Prometheus instrumentator with its route-name lookup memoised per (method, path).

    Why: `prometheus-fastapi-instrumentator` resolves the templated route of every request by
    matching the whole route table again (its `get_route_name`), which measured ~3.5 % of a fresh
    /v1/optimize answer. The route table is fixed once the app is built, so the answer for a
    (method, path, root path) never changes; paths that match no route are not remembered, so a
    scan of random URLs cannot grow the memo, and the memo is bounded anyway.
    """

    _MAX_ENTRIES = 2048

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._handlers: dict[tuple[str, str, str], tuple[str, bool]] = {}

    def _get_handler(self, request: Request) -> tuple[str, bool]:
        scope = request.scope
        key = (scope.get("method", ""), scope.get("path", ""), scope.get("root_path", ""))
        found = self._handlers.get(key)
        if found is None:
            found = super()._get_handler(request)
            if found[1] and len(self._handlers) < self._MAX_ENTRIES:
                self._handlers[key] = found
        return found
