"""The savings ledger: placements recorded, reconciled with realised intensity, reported over time.

Self-contained on purpose: `models` (tables), `db` (engine, migrations), `repository` (SQL),
`recorder` (the bounded write queue the optimize route hands placements to), `reconciler` (the
background job), `reports` (aggregation and CSV). The API calls `Ledger.queue_optimize` (or, with
a write timeout, `Ledger.record_optimize`) after a plan is computed and nothing else of the
optimize path knows the ledger exists. Accounting rules:
docs/ledger.md.
"""
