"""The request edge's header-only checks and its bounded body read (called by api/edge.py).

These used to be three middleware classes (`RequestEdgeMiddleware`, `BodyReadMiddleware`,
`MetricsPortMiddleware`); issue 12 folded every edge layer into the one `EdgeMiddleware`, which
calls these functions in the same order the layers ran:

- `scan_headers`: one pass over the request headers for the request id, Content-Type,
  Content-Length and the size of the header block;
- `bounds_problem`: 414 / 431 for a URL or header block over the configured bounds (the production
  worker's HTTP protocol rejects them even earlier, while parsing; this covers any other server),
  415 for a body-carrying request whose Content-Type is not JSON, 413 for a declared
  Content-Length over the limit; all before anything costs work;
- `metrics_port_refuses`: with a metrics port configured, `/metrics` answers only there, and only
  `/metrics` does (the Ingress routes the public port; Prometheus scrapes the metrics port);
- `read_body`: the body read once, bounded in size (413) and time (408), *after* the API-key
  check (an unauthenticated client never makes us buffer anything) and before FastAPI reads it,
  because FastAPI turns body-read errors into a 400; `replay` hands it to the app;
- `relative_location`: redirects carry a relative `Location`, so a client's Host header is never
  reflected.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, MutableMapping
from contextvars import ContextVar
from http import HTTPStatus
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import orjson

from carbon_optimizer.api.errors import PROBLEM_MEDIA_TYPE

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

REQUEST_ID_HEADER = b"x-request-id"
_VALID_ID = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
HEAD_AS_GET = frozenset({"/healthz", "/readyz"})
request_id_var: ContextVar[str] = ContextVar("request_id", default="-")
_PROBLEM_TYPE = PROBLEM_MEDIA_TYPE.encode()


class RequestHeaders(NamedTuple):
    """What the edge needs from the request headers, read in one pass."""

    request_id: bytes  # as sent (validated by `valid_request_id`), b"" when absent
    content_type: bytes
    content_length: int | None  # None when absent or not a number
    header_bytes: int  # the header block's size as the bound counts it (name + value + 4 each)


def scan_headers(headers: list[tuple[bytes, bytes]]) -> RequestHeaders:
    """Read the request id, Content-Type, Content-Length and the header block's size at once."""
    incoming_id = b""
    content_type = b""
    content_length: int | None = None
    size = 0
    for name, value in headers:
        size += len(name) + len(value) + 4
        if name == REQUEST_ID_HEADER:
            incoming_id = value
        elif name == b"content-type":
            content_type = value
        elif name == b"content-length":
            try:
                content_length = int(value)
            except ValueError:
                content_length = None
    return RequestHeaders(incoming_id, content_type, content_length, size)


def valid_request_id(incoming: bytes) -> str | None:
    """The caller's `X-Request-ID` when well formed (echoed), else None (the edge mints one)."""
    return incoming.decode("ascii") if _VALID_ID.match(incoming) else None


def _is_json(content_type: bytes) -> bool:
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))


def bounds_problem(
    scope: Scope, headers: RequestHeaders, *, max_url_bytes: int, max_header_bytes: int, max_body_bytes: int
) -> tuple[int, str] | None:
    """(status, detail) of the first header-only bound the request breaks, or None: 414, 431, 415, 413."""
    url_bytes = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
    if url_bytes > max_url_bytes:
        return 414, f"The URL exceeds the {max_url_bytes}-byte limit"
    if headers.header_bytes > max_header_bytes:
        return 431, f"The request headers exceed the {max_header_bytes}-byte limit"
    if scope["method"] in BODY_METHODS:
        length = headers.content_length
        has_body = length != 0 and (length is not None or headers.content_type)
        if has_body and not _is_json(headers.content_type):
            return 415, "Content-Type must be application/json"
        if length is not None and length > max_body_bytes:
            return 413, f"Request body exceeds the {max_body_bytes}-byte limit"
    return None


def metrics_port_refuses(scope: Scope, metrics_port: int | None, metrics_path: str = "/metrics") -> bool:
    """True when a metrics port is configured and this request is on the wrong side of the split."""
    if metrics_port is None:
        return False
    server = scope.get("server")
    on_metrics_port = server is not None and int(server[1]) == metrics_port
    path: str = scope["path"]
    return on_metrics_port != (path == metrics_path)


def relative_location(location: bytes) -> bytes:
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
            "headers": [(b"content-type", _PROBLEM_TYPE), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def read_body(receive: Receive, *, max_body_bytes: int, timeout_s: float) -> bytes | int:
    """The whole body (small JSON here), or the status refusing it: 413 over the limit, 408 too slow."""
    try:
        async with asyncio.timeout(timeout_s):
            chunks: list[bytes] = []
            seen = 0
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    break  # client went away; let the app see an empty body
                chunk = message.get("body", b"")
                seen += len(chunk)
                if seen > max_body_bytes:
                    return 413
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
    except TimeoutError:
        return 408
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """A receive callable that hands the buffered body to the app once, then defers to the server."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
