"""The newest cosignature of each witness, refreshed while the tree does not grow (D133)."""

from __future__ import annotations

from alembic import op

from copyledger.ledger.schema import fresh_cosignatures

revision = "0014"
down_revision = "0013"


def upgrade() -> None:
    fresh_cosignatures.create(op.get_bind())


def downgrade() -> None:
    fresh_cosignatures.drop(op.get_bind())
