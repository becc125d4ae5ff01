"""Remembered answers to writes sent with an `Idempotency-Key` (decision D41)."""

from __future__ import annotations

from alembic import op
from sqlalchemy import MetaData, Table

from copyledger.ledger.schema import idempotency_keys

revision = "0007"
down_revision = "0006"

ADDED_LATER = {"holder"}  # by revision 0015 (D139)


def upgrade() -> None:
    # The table as this revision made it: later revisions add their own columns.
    Table(idempotency_keys.name, MetaData(),
          *(c._copy() for c in idempotency_keys.columns if c.name not in ADDED_LATER),
          ).create(op.get_bind())
