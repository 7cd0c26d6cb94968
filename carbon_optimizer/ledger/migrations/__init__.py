"""Alembic migrations of the ledger (run through `carbon_optimizer.ledger.db`, never a CLI ini file)."""
