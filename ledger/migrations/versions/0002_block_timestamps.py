"""RFC 3161 tokens over block hashes."""

from __future__ import annotations

from alembic import op

from copyledger.ledger.migrations.triggers import append_only
from copyledger.ledger.schema import block_timestamps

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    block_timestamps.create(op.get_bind())
    append_only("block_timestamps")
