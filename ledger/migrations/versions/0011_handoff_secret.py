"""Which hand-over secret the hosts share: its check (decision D113)."""

from __future__ import annotations

from alembic import op

from copyledger.ledger.schema import handoff_secret

revision = "0011"
down_revision = "0010"


def upgrade() -> None:
    handoff_secret.create(op.get_bind())


def downgrade() -> None:
    handoff_secret.drop(op.get_bind())
