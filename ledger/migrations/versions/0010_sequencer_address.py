"""Where the sequencer listens for other hosts' API processes (decision D110)."""

from __future__ import annotations

from alembic import op

from copyledger.ledger.schema import sequencer_address

revision = "0010"
down_revision = "0009"


def upgrade() -> None:
    sequencer_address.create(op.get_bind())


def downgrade() -> None:
    sequencer_address.drop(op.get_bind())
