"""SQLite's two content-hash indexes kept as sorted runs (D142): an existing log's keys become
one run, and the two B-tree indexes are dropped. PostgreSQL keeps its indexes."""

from __future__ import annotations

from alembic import op

from copyledger.ledger import runs
from copyledger.ledger.schema import ENTRIES_BY_REGISTRANT

revision = "0016"
down_revision = "0015"


def upgrade() -> None:
    if op.get_context().dialect.name != "sqlite":
        return
    for ddl in (*runs.create_sql(), *runs.fill_sql()):
        op.execute(ddl)
    op.drop_index("ix_entries_sha256", "entries")
    op.drop_index(ENTRIES_BY_REGISTRANT[0], "entries")


def downgrade() -> None:
    if op.get_context().dialect.name != "sqlite":
        return
    op.create_index("ix_entries_sha256", "entries", ["sha256", "seq"])
    name, columns = ENTRIES_BY_REGISTRANT
    op.create_index(name, "entries", list(columns))
    for table in ("content_runs", *runs.KEYS):
        op.drop_table(table)
