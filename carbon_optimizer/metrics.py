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


# Per-process file types whose values must outlive their process (totals), vs. gauges that
# describe a process's current state and die with it.
_CUMULATIVE_TYPES = ("counter", "histogram", "summary")


def retire_worker_metrics(pid: int, directory: str) -> int:
    """Fold a dead worker's Prometheus multiprocess files into one archive per type; delete them.

    `prometheus_client.multiprocess.mark_process_dead` only removes `live*` gauge files, so every
    recycled worker used to leave ~25 KB of counter/histogram/gauge files behind (a 64 MiB tmpfs
    full in about a day at full load). Counters, histograms and summaries are added into
    `<type>_archive.db` (totals stay monotonic across recycling, no counter reset is seen by
    Prometheus); the dead worker's gauges are dropped (they described a process that is gone).
    Runs in the gunicorn master (`child_exit`), the archive's only writer. Returns files removed.
    """
    import glob
    import os

    from prometheus_client import multiprocess
    from prometheus_client.mmap_dict import MmapedDict

    multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
    removed = 0
    for path in glob.glob(os.path.join(directory, f"*_{pid}.db")):
        kind = os.path.basename(path).split("_", 1)[0]
        if kind in _CUMULATIVE_TYPES:
            archive = MmapedDict(os.path.join(directory, f"{kind}_archive.db"))  # type: ignore[no-untyped-call]
            try:
                for key, value, timestamp, _pos in MmapedDict.read_all_values_from_file(path):  # type: ignore[no-untyped-call]
                    current, _ = archive.read_value(key)  # type: ignore[no-untyped-call]
                    archive.write_value(key, current + value, timestamp)  # type: ignore[no-untyped-call]
            finally:
                archive.close()  # type: ignore[no-untyped-call]
        os.remove(path)
        removed += 1
    return removed
