"""An APIRoute whose JSON body is validated by pydantic-core straight from the request bytes.

Why (issue 12): for a well-formed body FastAPI's own request handler costs more than the
validation itself: it parses the Content-Type with `email.message`, decodes the body with
`json.loads` into dicts and lists, solves the dependencies (one `Request` parameter and the body)
and then validates those Python objects, inside two `AsyncExitStack`s and an exception wrapper.
`OptimizeRequest.model_validate_json` parses and validates the same bytes in one pass in Rust.

The route stays an `APIRoute` declared with the body model, so the OpenAPI document, the
operation id, the 405 for other methods and every error answer are FastAPI's, unchanged:

- the fast path is taken only for what FastAPI would parse as JSON, validate and accept: a
  non-empty body, a first `Content-Type` of exactly `application/json` (parameters allowed), no
  FastAPI telemetry in the scope, a route without dependencies, and a body pydantic-core
  accepts;
- anything else (invalid JSON, a field pydantic rejects, `+json` media types, an empty body, a
  non-UTF-8 encoding `json.loads` would still decode) is handed, with the body replayed, to
  FastAPI's unchanged request handler, so every 422 carries exactly the `loc`, `msg` and `type`
  it always did (and a body only `json.loads` can read is still accepted);
- a body both accept is the same model either way: `tests/api/test_json_route.py` checks that
  property on generated bodies, field by field, against FastAPI's own validation of
  `json.loads` output.

Exceptions raised by the endpoint on the fast path propagate to Starlette's
`ExceptionMiddleware`, which maps them with the very handlers FastAPI's wrapper would have used
(the app's `exception_handlers`), so a 422/409/503 problem reads the same on both paths.

Two ways in: through the app as usual (`JsonBodyRoute.handle`, which reads the body itself), or
called by the edge, which has already read the body (`DirectRoutes` + `answer_direct`), past
FastAPI's `ExceptionMiddleware`, `AsyncExitStackMiddleware` and router walk; an exception there
is re-raised by `handle` inside those layers, so it is mapped by them, not by a copy of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Final

from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match

from carbon_optimizer.api.middleware import Message, Receive, Scope, Send, replay

_JSON: Final = b"application/json"
_TELEMETRY: Final = "fastapi.telemetry"
_RAISED: Final = "carbon_optimizer.raised"  # answer_direct's exception, for `handle` to raise


def _first_content_type(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The first Content-Type value, as Starlette's `request.headers.get` (which FastAPI reads) finds it."""
    for name, value in headers:
        if name == b"content-type":
            return value
    return None


def _plain_json(content_type: bytes | None) -> bool:
    """True for `application/json` with or without parameters, the case FastAPI surely parses as JSON.

    FastAPI reads the media type through `email.message` (stripped, lower-cased); this test is
    narrower on purpose (no surrounding whitespace, no `+json` suffix): anything it refuses
    simply takes FastAPI's own path.
    """
    if content_type is None:
        return False
    return content_type.split(b";", 1)[0].lower() == _JSON


class _Replay:
    """A receive callable that hands the recorded messages back once, then defers to the server's."""

    __slots__ = ("_messages", "_receive")

    def __init__(self, messages: list[Message], receive: Receive) -> None:
        self._messages = messages
        self._receive = receive

    async def __call__(self) -> Message:
        if self._messages:
            return self._messages.pop(0)
        return await self._receive()


async def _read_body(receive: Receive) -> tuple[bytes | None, list[Message]]:
    """(the whole body, or None when the client went away; the messages read, to replay them)."""
    messages: list[Message] = []
    chunks: list[bytes] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return None, messages
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return (chunks[0] if len(chunks) == 1 else b"".join(chunks)), messages


class JsonBodyRoute(APIRoute):
    """`APIRoute` plus a fast path: the body model validated from the raw bytes (see the module doc).

    A subclass names `body_model` (the endpoint's body parameter's model) and implements
    `answer(request, body, raw)` for a body validated here; it is passed to
    `add_api_route(..., route_class_override=...)`. The declared endpoint is FastAPI's path and
    the OpenAPI document's source; both must answer alike (the optimize route's endpoint is a
    thin wrapper that reads the raw body and calls the same function as `answer`).
    """

    body_model: ClassVar[type[BaseModel]]

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        self._validate_json = self.body_model.model_validate_json
        # The fast path runs no dependencies: with any (the route's, its router's or the app's),
        # every request takes FastAPI's handler.
        self.fast = not self.dependant.dependencies

    async def answer(self, request: Request, body: Any, raw: bytes) -> Response:
        """The response to `body`, validated from `raw` by the fast path."""
        raise NotImplementedError

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer a valid JSON body directly; hand everything else to FastAPI's handler, body replayed."""
        raised = scope.pop(_RAISED, None)
        if raised is not None:  # `answer_direct`'s exception, raised where this route raises its own
            raise raised
        if not self.fast or _TELEMETRY in scope or scope["method"] not in (self.methods or ()):
            await super().handle(scope, receive, send)
            return
        raw, messages = await _read_body(receive)
        replayed = _Replay(messages, receive)
        body = self._validated(scope, raw)
        if body is None or raw is None:
            await super().handle(scope, replayed, send)
            return
        request = Request(scope, replayed, send)
        response = await self.answer(request, body, raw)
        await response(scope, replayed, send)

    async def answer_direct(self, scope: Scope, raw: bytes, receive: Receive, send: Send) -> bool:
        """Answer a body the edge has read, without FastAPI's inner layers; False when it did not.

        False means the caller must run the request through the app as usual (body replayed):
        either the body is not the fast case (FastAPI's handler answers it), or `answer` raised,
        and the exception is then re-raised by `handle` in the very place it would have been
        raised, so `ExceptionMiddleware` maps it exactly as it always does.
        """
        body = self._validated(scope, raw)
        if body is None:
            return False
        request = Request(scope, replay(raw, receive), send)
        try:
            response = await self.answer(request, body, raw)
        except Exception as exc:
            scope[_RAISED] = exc
            return False
        await response(scope, receive, send)
        return True

    def _validated(self, scope: Scope, raw: bytes | None) -> BaseModel | None:
        """The body model when this request is surely FastAPI's accepted JSON case, else None."""
        if not raw or not _plain_json(_first_content_type(scope["headers"])):
            return None
        try:
            return self._validate_json(raw)
        except Exception:  # FastAPI's path answers it: the same 422, or it accepts it
            return None


class DirectRoutes:
    """The app's `JsonBodyRoute`s by exact (method, path), for the edge to call them directly.

    Why (issue 12): between the edge and a route FastAPI runs `ExceptionMiddleware` (a `Request`
    and two closures per request, one more wrapper around every `send`),
    `AsyncExitStackMiddleware` (an exit stack per request) and the router's walk (each route's
    `matches`, scope updates). A body the edge has already read, for a route that needs none
    of them, is answered by `JsonBodyRoute.answer_direct`, which sets the scope keys the router
    would have set. Anything else takes the app as usual: other paths, a `root_path`, FastAPI
    telemetry, a body the fast path leaves to FastAPI, an exception to map.

    The table is built at the first request (every route exists by then) by asking the router's
    own routes, in order, which one a request to each path would reach: a path another route
    would answer first is never taken directly.
    """

    def __init__(self, app: FastAPI) -> None:
        self._app = app
        self._table: dict[tuple[str, str], tuple[JsonBodyRoute, Callable[..., Any]]] | None = None

    def route_for(self, scope: Scope) -> JsonBodyRoute | None:
        """The route to answer this request directly, or None (the app's usual path)."""
        if scope.get("root_path") or _TELEMETRY in scope:
            return None
        table = self._table if self._table is not None else self._build()
        found = table.get((scope["method"], scope["path"]))
        if found is None:
            return None
        route, endpoint = found
        # What the router's match would have put in the scope (Router.app + APIRoute.matches).
        scope.setdefault("router", self._app.router)
        scope["endpoint"] = endpoint
        scope["path_params"] = {}
        scope["route"] = route
        return route

    def _build(self) -> dict[tuple[str, str], tuple[JsonBodyRoute, Callable[..., Any]]]:
        table: dict[tuple[str, str], tuple[JsonBodyRoute, Callable[..., Any]]] = {}
        routes = self._app.router.routes
        for candidate in routes:
            if not isinstance(candidate, JsonBodyRoute) or not candidate.fast or candidate.param_convertors:
                continue
            for method in candidate.methods or ():
                probe = {
                    "type": "http",
                    "method": method,
                    "path": candidate.path,
                    "root_path": "",
                    "headers": [],
                }
                if _first_full_match(routes, probe) is candidate:
                    table[(method, candidate.path)] = (candidate, candidate.endpoint)
        self._table = table
        return table


def _first_full_match(routes: list[BaseRoute], scope: Scope) -> BaseRoute | None:
    """The route Starlette's router would hand `scope` to (the first full match), if any."""
    for route in routes:
        match, _ = route.matches(dict(scope))
        if match == Match.FULL:
            return route
    return None
