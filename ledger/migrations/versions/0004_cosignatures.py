"""Witness cosignatures of the log's checkpoints (decision D30)."""

from __future__ import annotations

from alembic import op

from copyledger.ledger.migrations.triggers import append_only
from copyledger.ledger.schema import cosignatures

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    cosignatures.create(op.get_bind())
    append_only("cosignatures")
