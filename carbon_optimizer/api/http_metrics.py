"""Prometheus HTTP metrics for the request edge: the instrumentator's default series, recorded directly.

Why not `PrometheusInstrumentatorMiddleware` any more (issue 12): per request it built a Starlette
`Request`, a `Response` and a `Headers` object just to read two `Content-Length` values, an `Info`
object, label lists by `getattr`, and resolved the templated route against the whole route table
(~5 % of a fresh /v1/optimize answer's CPU together). The edge (api/edge.py) already sees the
status and the headers in its one `send` wrapper, so it records the same series itself:

- the same names, help texts, label names and buckets as `prometheus_fastapi_instrumentator`'s
  `metrics.default()` with the options the app used (`http_requests_total{method,status,handler}`
  with the status grouped as `2xx`…, `http_request_size_bytes{handler}`,
  `http_response_size_bytes{handler}`, `http_request_duration_highr_seconds`,
  `http_request_duration_seconds{method,handler}`): the Grafana dashboards and alert rules in
  `deploy/` and `k8s/` query them;
- `handler` is the route template (`/v1/placements/{placement_id}`), `none` for a path no route
  matches; probes and `/metrics` are not counted (the instrumentator's `excluded_handlers`);
- the route lookup itself is still the instrumentator's (`routing.get_route_name`), memoised per
  (method, path, root path): the route table is fixed once the app is built.

The metrics are created once per process at import (as every other metric of the service), so
every app a test process builds records into them (the instrumentator's registered only once and
later apps recorded nothing). `/metrics` itself is still served by `Instrumentator.expose`
(multiprocess collection under gunicorn).
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any, Final

from prometheus_client import Counter, Histogram, Summary
from prometheus_fastapi_instrumentator.routing import get_route_name
from starlette.requests import HTTPConnection

EXCLUDED_HANDLERS: Final = ("/metrics", "/healthz", "/readyz")
UNTEMPLATED: Final = "none"
_INF: Final = float("inf")
_HIGHR_BUCKETS: Final = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5, 7.5, 10, 30, 60, _INF,
)  # fmt: skip
_LOWR_BUCKETS: Final = (0.1, 0.5, 1, _INF)

REQUESTS = Counter(
    "http_requests_total",
    "Total number of requests by method, status and handler.",
    ("method", "status", "handler"),
)
REQUEST_SIZE = Summary(
    "http_request_size_bytes",
    "Content length of incoming requests by handler. Only value of header is respected. "
    "Otherwise ignored. No percentile calculated. ",
    ("handler",),
)
RESPONSE_SIZE = Summary(
    "http_response_size_bytes",
    "Content length of outgoing responses by handler. Only value of header is respected. "
    "Otherwise ignored. No percentile calculated. ",
    ("handler",),
)
LATENCY_HIGHR = Histogram(
    "http_request_duration_highr_seconds",
    "Latency with many buckets but no API specific labels. Made for more accurate percentile calculations. ",
    buckets=_HIGHR_BUCKETS,
)
LATENCY = Histogram(
    "http_request_duration_seconds",
    "Latency with only few buckets by handler. Made to be only used if aggregation by handler is important. ",
    ("method", "handler"),
    buckets=_LOWR_BUCKETS,
)

_Children = tuple[Any, Any, Any, Any]  # REQUESTS, REQUEST_SIZE, RESPONSE_SIZE, LATENCY children


class HttpMetrics:
    """Route naming (memoised) and the per-request observations, for one app."""

    _MAX_ROUTES = 2048
    _MAX_CHILDREN = 4096

    def __init__(self, excluded: tuple[str, ...] = EXCLUDED_HANDLERS) -> None:
        # The instrumentator compiled these as regexes and `search`ed; they are plain literals,
        # so a substring test is the same rule.
        self._excluded = excluded
        self._routes: dict[tuple[str, str, str], tuple[str, bool]] = {}
        self._children: dict[tuple[str, str, str], _Children] = {}

    def handler(self, scope: MutableMapping[str, Any]) -> tuple[str, bool]:
        """(handler label, excluded) for a request: the route template, or `none` when none matches.

        Templated names are remembered; paths matching no route are not, so a scan of random
        URLs cannot grow the memo (which is bounded anyway).
        """
        key = (scope["method"], scope["path"], scope.get("root_path", ""))
        found = self._routes.get(key)
        if found is not None:
            return found
        name = get_route_name(HTTPConnection(scope), should_include_root_path=False)
        raw = name if name is not None else scope["path"]
        excluded = any(pattern in raw for pattern in self._excluded)
        found = (name if name is not None else UNTEMPLATED, excluded)
        if name is not None and len(self._routes) < self._MAX_ROUTES:
            self._routes[key] = found
        return found

    def record(
        self, method: str, handler: str, status: int, request_bytes: int, response_bytes: int, seconds: float
    ) -> None:
        """Observe one finished request (sizes are the `Content-Length` headers, 0 when absent)."""
        group = f"{status // 100}xx"
        key = (method, group, handler)
        children = self._children.get(key)
        if children is None:
            children = (
                REQUESTS.labels(method, group, handler),
                REQUEST_SIZE.labels(handler),
                RESPONSE_SIZE.labels(handler),
                LATENCY.labels(method, handler),
            )
            if len(self._children) < self._MAX_CHILDREN:
                self._children[key] = children
        total, in_size, out_size, latency = children
        total.inc()
        in_size.observe(request_bytes)
        out_size.observe(response_bytes)
        LATENCY_HIGHR.observe(seconds)
        latency.observe(seconds)
