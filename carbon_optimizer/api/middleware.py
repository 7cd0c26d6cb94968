"""Pure-ASGI middleware for the request edge (no BaseHTTPMiddleware: it costs a task per request).

`RequestEdgeMiddleware` does three cheap things in one pass:
- request id: echo a well-formed incoming `X-Request-ID`, else mint one; expose it in
  `scope["state"]["request_id"]` and on every response (including errors from inner layers);
- 415 for a body-carrying request whose Content-Type is not JSON;
- 413 for a body over the configured limit, by Content-Length or by counting a streamed body
  (buffered here, before FastAPI reads it, because FastAPI turns body-read errors into a 400).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from contextvars import ContextVar
from typing import Any

from carbon_optimizer.api.errors import PROBLEM_MEDIA_TYPE, problem_bytes

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

REQUEST_ID_HEADER = b"x-request-id"
_VALID_ID = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
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
    """Request id, content-type and body-size checks."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

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

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], rid_header]
            await send(message)

        try:
            if scope["method"] in _BODY_METHODS:
                has_body = content_length != 0 and (content_length is not None or content_type)
                if has_body and not _is_json(content_type):
                    await self._reject(send_with_id, 415, "Content-Type must be application/json")
                    return
                if content_length is not None and content_length > self.max_body_bytes:
                    await self._reject(
                        send_with_id, 413, f"Request body exceeds the {self.max_body_bytes}-byte limit"
                    )
                    return
                body = await self._read_body(receive)
                if body is None:
                    await self._reject(
                        send_with_id, 413, f"Request body exceeds the {self.max_body_bytes}-byte limit"
                    )
                    return
                receive = _replay(body, receive)
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)

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

    @staticmethod
    async def _reject(send: Send, status: int, detail: str) -> None:
        body = problem_bytes(status, detail)
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
