"""Prometheus metric definitions shared by every component.

Defined once, at import, on the default registry (which the multiprocess collector reads under
gunicorn). Components import the objects they need; label values stay low-cardinality
(upstream name, endpoint kind, outcome, zone for the configured/queried zones only).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram

UPSTREAM_REQUESTS = Counter(
    "carbon_optimizer_upstream_requests_total",
    "Requests to external data sources, by upstream, endpoint and outcome",
    ["upstream", "endpoint", "outcome"],
)
# Client ids are 12-hex-char hashes of API keys (never keys), `anonymous` without auth and
# `internal` outside a request: bounded by the number of configured keys.
UPSTREAM_CALLS_BY_CLIENT = Counter(
    "carbon_optimizer_upstream_calls_by_client_total",
    "Upstream HTTP attempts (first tries and retries) by the client whose request caused them",
    ["client", "upstream"],
)
UPSTREAM_BUDGET_REFUSALS = Counter(
    "carbon_optimizer_upstream_budget_refusals_total",
    "Upstream calls refused by a request or per-client budget, by client and upstream",
    ["client", "upstream"],
)
UPSTREAM_LATENCY = Histogram(
    "carbon_optimizer_upstream_request_seconds",
    "Latency of requests to external data sources",
    ["upstream", "endpoint"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0),
)
CACHE_EVENTS = Counter(
    "carbon_optimizer_cache_events_total",
    "Cache lookups by cache kind (carbon, prices), tier (local, redis) and result "
    "(hit, miss, stale, negative)",
    ["cache", "tier", "result"],
)
FALLBACKS = Counter(
    "carbon_optimizer_fallbacks_total",
    "Answers served from fallback data, by kind (carbon, price) and fallback label",
    ["kind", "label"],
)
CIRCUIT_STATE = Gauge(
    "carbon_optimizer_circuit_state",
    "Circuit breaker state per upstream: 0 closed, 1 half-open, 2 open",
    ["upstream"],
    multiprocess_mode="max",
)
DATA_AGE = Gauge(
    "carbon_optimizer_data_age_seconds",
    "Age of the newest data served, by kind (carbon, price) and key (zone or provider)",
    ["kind", "key"],
    multiprocess_mode="max",
)
OPTIMIZE_CANDIDATES = Histogram(
    "carbon_optimizer_candidates_evaluated",
    "Number of (location, start) candidates scored per optimisation",
    buckets=(10, 100, 1_000, 10_000, 100_000, 1_000_000),
)
PRICE_DATA_FETCHED = Gauge(
    "carbon_optimizer_price_data_fetched_timestamp_seconds",
    "Unix time at which the newest live or cached price table per provider was fetched from its API "
    "(absent until one was; alert on time() minus this)",
    ["provider"],
    multiprocess_mode="max",
)

_CHILDREN: dict[tuple[int, tuple[str, ...]], Any] = {}


def child(metric: Any, *labels: str) -> Any:
    """`metric.labels(*labels)`, memoised: hot paths call it per lookup and `.labels()` costs µs."""
    key = (id(metric), labels)
    found = _CHILDREN.get(key)
    if found is None:
        found = _CHILDREN[key] = metric.labels(*labels)
    return found
