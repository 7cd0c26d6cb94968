"""Prometheus metrics of the ledger (default registry; gunicorn's multiprocess collector reads them).

Savings can be negative, and counters only go up, so realised emissions are counted per kind
(chosen, baseline) and dashboards compute savings as baseline − chosen.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

RECORDED = Counter(
    "carbon_optimizer_ledger_placements_recorded_total",
    "Placements committed to the ledger, by origin (optimize, caller)",
    ["origin"],
)
QUEUED = Counter(
    "carbon_optimizer_ledger_placements_queued_total",
    "Placements acknowledged as queued because the database did not commit them in time",
)
REFUSED = Counter(
    "carbon_optimizer_ledger_placements_refused_total",
    "Recordings refused because the in-memory queue was full",
)
RECONCILED = Counter(
    "carbon_optimizer_ledger_placements_reconciled_total",
    "Reconciliation results, by outcome (reconciled, retry, unreconcilable)",
    ["outcome"],
)
REALISED_EMISSIONS = Counter(
    "carbon_optimizer_ledger_realised_emissions_grams_total",
    "Realised emissions of reconciled placements in gCO2e, by kind (chosen, baseline)",
    ["kind"],
)
REALISED_SAVINGS = Counter(
    "carbon_optimizer_ledger_realised_savings_grams_total",
    "Realised savings (baseline − chosen, gCO2e) of reconciled placements that saved; "
    "see realised_emissions_grams_total for the signed figure",
)
WRITE_FAILURES = Counter(
    "carbon_optimizer_ledger_write_failures_total",
    "Failed attempts to write queued placements to the database",
)
QUEUE_DEPTH = Gauge(
    "carbon_optimizer_ledger_queue_depth",
    "Placements waiting in this worker's memory for the database",
    multiprocess_mode="livesum",
)
