"""The entries written under an Idempotency-Key claim, inserted by their block (decision D132)."""

from __future__ import annotations

from alembic import op

from copyledger.ledger.schema import idempotency_written

revision = "0013"
down_revision = "0012"


def upgrade() -> None:
    idempotency_written.create(op.get_bind())


def downgrade() -> None:
    idempotency_written.drop(op.get_bind())
