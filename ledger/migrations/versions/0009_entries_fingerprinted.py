"""A partial index on the works that carry fingerprints (decision D90): the near-duplicate
index's rebuild at start reads only those, and nothing when no work has any."""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

from copyledger.ledger.schema import ENTRIES_FINGERPRINTED, FINGERPRINTED_WHERE

revision = "0009"
down_revision = "0008"


def upgrade() -> None:
    op.create_index(ENTRIES_FINGERPRINTED, "entries", ["seq"],
                    sqlite_where=text(FINGERPRINTED_WHERE["sqlite"]),
                    postgresql_where=text(FINGERPRINTED_WHERE["postgresql"]))


def downgrade() -> None:
    op.drop_index(ENTRIES_FINGERPRINTED, "entries")
