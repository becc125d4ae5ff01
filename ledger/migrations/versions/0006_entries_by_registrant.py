"""An index on an account's own registrations of a content hash (decision D36): registering
content the same account already registered answers with the earlier entry, found in one read."""

from __future__ import annotations

from alembic import op

from copyledger.ledger.schema import ENTRIES_BY_REGISTRANT

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    name, columns = ENTRIES_BY_REGISTRANT
    op.create_index(name, "entries", list(columns))
