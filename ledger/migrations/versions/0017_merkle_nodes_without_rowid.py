"""SQLite's `merkle_nodes` as a `WITHOUT ROWID` table (D145): a node is found by one B-tree
search on (level, idx), not the primary-key index's and then the table's by rowid, and each
node is written to one B-tree, not two. The rows are copied in key order into a new table,
the old one is dropped (its triggers with it), and the new one takes its name; the
append-only triggers are then created again. PostgreSQL is unchanged."""

from __future__ import annotations

from alembic import op

from copyledger.ledger.migrations.triggers import append_only

revision = "0017"
down_revision = "0016"

_COLUMNS = ("level SMALLINT NOT NULL, idx BIGINT NOT NULL, hash BLOB NOT NULL, "
            "PRIMARY KEY (level, idx)")


def _rebuild(without_rowid: bool) -> None:
    if op.get_context().dialect.name != "sqlite":
        return
    op.execute(f"CREATE TABLE merkle_nodes_new ({_COLUMNS})"
               + (" WITHOUT ROWID" if without_rowid else ""))
    op.execute("INSERT INTO merkle_nodes_new (level, idx, hash) "
               "SELECT level, idx, hash FROM merkle_nodes ORDER BY level, idx")
    op.execute("DROP TABLE merkle_nodes")  # and its triggers
    op.execute("ALTER TABLE merkle_nodes_new RENAME TO merkle_nodes")
    append_only("merkle_nodes")


def upgrade() -> None:
    _rebuild(without_rowid=True)


def downgrade() -> None:
    _rebuild(without_rowid=False)
