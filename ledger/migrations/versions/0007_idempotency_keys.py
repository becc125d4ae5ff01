"""Remembered answers to writes sent with an `Idempotency-Key` (decision D41)."""

from __future__ import annotations

from alembic import op

from copyledger.ledger.schema import idempotency_keys

revision = "0007"
down_revision = "0006"


def upgrade() -> None:
    idempotency_keys.create(op.get_bind())
