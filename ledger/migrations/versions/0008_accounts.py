"""Accounts' display names and kinds, set by an administrator (decision D50)."""

from __future__ import annotations

from alembic import op

from copyledger.ledger.schema import accounts

revision = "0008"
down_revision = "0007"


def upgrade() -> None:
    accounts.create(op.get_bind())
