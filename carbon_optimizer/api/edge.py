"""The whole request edge as ONE pure-ASGI layer (issue 12): one `send` wrapper, one body read.

Why one layer: the edge used to be nine middleware classes (access log, request id and bounds,
metrics port, the Prometheus instrumentator, security headers, CORS, rate limit, API key,
upstream budget, body read), each with its own coroutine frame and most with their own `send`
wrapper, so every response header list was copied and re-scanned four times. Their own cost was
~5–8 % of the CPU of a fresh /v1/optimize answer (docs/performance.md). `EdgeMiddleware` does the
same things in the same order, calling the modules that own each rule:

outer part (every HTTP response passes `_Exchange.send`):
  1. request id (echoed when well formed, else 32 random hex characters) in `scope["state"]`,
     the log context and on every response; `HEAD /healthz|/readyz` answered as the GET without a body;
  2. header-only bounds, before anything costs work: 414 URL, 431 headers, 415 type, 413 by
     Content-Length (api/middleware.py); then the metrics-port split (404);
  3. on the way out: security headers (api/security.py), a relative `Location` on redirects,
     the request id; the access log line (logging_config.py) and the Prometheus HTTP series
     (api/http_metrics.py) once the response is done — 401/429/413/414 included;
CORS (api/security.py's `ProblemCORSMiddleware`, only when origins are configured) sits between
the two parts, so preflights (no credentials) are answered and 401/429 carry CORS headers;
inner part (`_checked`):
  4. rate limit (api/ratelimit.py), outside the key check so floods of bad keys are throttled:
     an invalid key counts against the IP's bucket (401 until it is spent, then 429);
  5. API key (api/security.py): 401 before any body byte is read;
  6. upstream budget (api/upstream_budget.py) for `/v1/` requests, in the request's context;
  7. the body read once, bounded in bytes (413) and time (408), replayed to FastAPI — or, for
     a route that validates the bytes itself (POST /v1/optimize), handed to it directly, past
     FastAPI's inner layers (api/json_route.py's `DirectRoutes`).

Probes and `/metrics` are exempt from the key and the limit; the docs paths from the key.
"""

from __future__ import annotations

import os
import time
from typing import Any, Final

from carbon_optimizer.api.http_metrics import HttpMetrics
from carbon_optimizer.api.json_route import DirectRoutes
from carbon_optimizer.api.middleware import (
    BODY_METHODS,
    HEAD_AS_GET,
    REQUEST_ID_HEADER,
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    bounds_problem,
    metrics_port_refuses,
    read_body,
    relative_location,
    replay,
    request_id_var,
    scan_headers,
    send_problem_bytes,
    valid_request_id,
)
from carbon_optimizer.api.ratelimit import RateGate, RateLimiting
from carbon_optimizer.api.security import (
    PROBE_PATHS,
    ApiKeyGate,
    ApiKeyStore,
    SecurityHeaders,
    cors_layer,
)
from carbon_optimizer.api.upstream_budget import UpstreamBudgets
from carbon_optimizer.logging_config import AccessLog
from carbon_optimizer.providers.budget import request_budget
from carbon_optimizer.settings import Settings

_START: Final = "http.response.start"
_BODY: Final = "http.response.body"


class _Exchange:
    """One request's view from the edge: what its `send` saw, for the log line and the metrics.

    A small object with a bound `send` rather than a closure over nonlocals: the same cost per
    request, and the state is readable in one place when the response is done.
    """

    __slots__ = (
        "_csp", "_edge", "_head", "_rid_header", "_send", "response_bytes", "response_length", "status",
    )  # fmt: skip

    def __init__(self, edge: EdgeMiddleware, send: Send, request_id: str, csp: bytes, head: bool) -> None:
        self._edge = edge
        self._send = send
        self._rid_header = (REQUEST_ID_HEADER, request_id.encode("ascii"))
        self._csp = csp
        self._head = head
        self.status = 500  # what the log and metrics say if no response ever started
        self.response_length = 0  # the response's Content-Length header (the metric's rule)
        self.response_bytes = 0  # body bytes actually sent (the access log's rule)

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == _START:
            status = message.get("status", 200)
            self.status = int(status)
            raw = list(message.get("headers") or ())
            present: set[bytes] = set()
            redirect = 300 <= self.status < 400
            for index, (name, value) in enumerate(raw):
                lowered = name.lower()
                present.add(lowered)
                if lowered == b"content-length":
                    try:
                        self.response_length = int(value)
                    except ValueError:
                        self.response_length = 0
                elif redirect and lowered == b"location":
                    raw[index] = (name, relative_location(value))
            self._edge.headers.add(raw, present, self._csp)
            raw.append(self._rid_header)
            message["headers"] = raw
        elif kind == _BODY:
            if self._head:
                message = {**message, "body": b""}
            self.response_bytes += len(message.get("body", b""))
        await self._send(message)


class EdgeMiddleware:
    """Request id, bounds, metrics, access log, security headers, CORS, rate limit, key, budget, body."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        settings: Settings,
        key_store: ApiKeyStore,
        rate: RateGate,
        docs_paths: frozenset[str] = frozenset(),
        metrics: HttpMetrics | None = None,
        direct: DirectRoutes | None = None,
    ) -> None:
        self.app = app
        self.direct = direct
        edge = settings.edge
        self.max_body_bytes = settings.max_body_bytes
        self.max_url_bytes = edge.max_url_bytes
        self.max_header_bytes = edge.max_header_bytes
        self.body_timeout_s = edge.body_timeout_s
        self.metrics_port = edge.metrics_port
        self.headers = SecurityHeaders(hsts=settings.environment == "production", docs_paths=docs_paths)
        self.access_log = AccessLog(skip_paths=PROBE_PATHS)
        self.metrics = metrics or HttpMetrics()
        self.rate = rate
        self.auth = ApiKeyGate(key_store, exempt_paths=PROBE_PATHS | docs_paths)
        self.budgets = UpstreamBudgets(settings)
        cors = cors_layer(settings, self._checked)
        self._inner: ASGIApp = cors if cors is not None else self._checked

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection scope."""
        kind = scope["type"]
        if kind != "http":
            if kind == "lifespan":  # closes the limiter's Redis pool at shutdown
                send = self.rate.closing_send(send)
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        headers = scan_headers(scope.get("headers") or [])
        # Minted: 128 random bits as 32 hex characters (`uuid4().hex`'s shape at a fifth of its cost).
        request_id = valid_request_id(headers.request_id) or os.urandom(16).hex()
        # A per-request copy of the lifespan state, as uvicorn makes: some servers and test harnesses
        # (asgi-lifespan) hand every request the same dict, and per-request values must not leak.
        state = dict(scope.get("state") or {})
        state["request_id"] = request_id
        scope["state"] = state
        method = logged_method = scope["method"]
        path = scope["path"]
        head = method == "HEAD" and path in HEAD_AS_GET
        if head:
            # Load balancers probe with HEAD: answer it as the GET it stands for, without a body.
            # A copy: the server keeps its own scope saying HEAD (uvicorn then writes no body).
            scope = {**scope, "method": "GET"}
            method = "GET"
        handler, unmeasured = self.metrics.handler(scope)
        exchange = _Exchange(self, send, request_id, self.headers.csp_for(path), head)
        token = request_id_var.set(request_id)
        try:
            problem = bounds_problem(
                scope,
                headers,
                max_url_bytes=self.max_url_bytes,
                max_header_bytes=self.max_header_bytes,
                max_body_bytes=self.max_body_bytes,
            )
            if problem is not None:
                await send_problem_bytes(exchange.send, *problem)
            elif metrics_port_refuses(scope, self.metrics_port):
                await send_problem_bytes(exchange.send, 404, "Not Found")
            else:
                await self._inner(scope, receive, exchange.send)
        finally:
            request_id_var.reset(token)
            seconds = max(time.perf_counter() - start, 0.0)
            status = exchange.status
            if not unmeasured:
                self.metrics.record(
                    method, handler, status, headers.content_length or 0, exchange.response_length, seconds
                )
            if self.access_log.wanted(path, status):
                self.access_log.write(
                    scope,
                    method=logged_method,
                    status=status,
                    request_id=request_id,
                    latency_s=seconds,
                    response_bytes=exchange.response_bytes,
                )

    async def _checked(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Rate limit → API key → upstream budget → bounded body read → the app."""
        if self.rate.applies(scope) and await self.rate.refused(scope, send):
            return
        if self.auth.applies(scope["path"]) and await self.auth.refused(scope, send):
            return
        budget = self.budgets.for_request(scope)
        if budget is None:
            await self._with_body(scope, receive, send)
            return
        with request_budget(budget):
            await self._with_body(scope, receive, send)

    async def _with_body(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        body = await read_body(receive, max_body_bytes=self.max_body_bytes, timeout_s=self.body_timeout_s)
        if isinstance(body, bytes):
            # A route that validates the bytes itself is called directly (api/json_route.py).
            route = self.direct.route_for(scope) if self.direct is not None else None
            if route is None or not await route.answer_direct(scope, body, receive, send):
                await self.app(scope, replay(body, receive), send)
        elif body == 408:
            detail = f"The request body did not arrive within {self.body_timeout_s:g} s"
            await send_problem_bytes(send, 408, detail)
        else:
            await send_problem_bytes(send, 413, f"Request body exceeds the {self.max_body_bytes}-byte limit")


def edge_middleware_options(
    settings: Settings,
    key_store: ApiKeyStore,
    rate: RateLimiting,
    docs_paths: frozenset[str],
    direct: DirectRoutes | None = None,
) -> dict[str, Any]:
    """The keyword arguments of `Middleware(EdgeMiddleware, ...)` for an app built from `settings`.

    `direct`: the app's routes the edge may call without FastAPI's inner layers (`create_app`
    passes `DirectRoutes(app)`; a test app without such routes passes nothing).
    """
    return {
        "settings": settings,
        "key_store": key_store,
        "rate": rate.gate(key_store),
        "docs_paths": docs_paths,
        "direct": direct,
    }
