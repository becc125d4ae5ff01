"""Alembic migrations for the ledger schema; run by `Store.open` and `copyledger init`."""
