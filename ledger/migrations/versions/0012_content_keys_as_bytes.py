"""Content hashes stored as their 32 bytes, not 64 hex characters (decision D124): the two
content-hash indexes halve and compare bytes, so a block's keys go in faster as the log grows.

PostgreSQL changes the column's type in place (the table and its indexes are rewritten); SQLite,
which cannot, copies the table into a new one. Either way it is one transaction, all or nothing
(D115), and takes minutes at 10 million entries. A value that is not 64 lowercase hex characters
(only a tampered row holds one) is kept as its bytes (text as its UTF-8; on SQLite a value
that was not text stays as it is), for the audit to report as before.
"""

from __future__ import annotations

from collections.abc import Callable

from alembic import op
from sqlalchemy import Table, text
from sqlalchemy.schema import CreateTable

from copyledger.ledger.entry import valid_sha256
from copyledger.ledger.migrations.triggers import append_only
from copyledger.ledger.schema import (
    ENTRIES_BY_REGISTRANT,
    ENTRIES_FINGERPRINTED,
    FINGERPRINTED_WHERE,
    entries,
    entries_text_keys,
)

revision = "0012"
down_revision = "0011"


def upgrade() -> None:
    _change_keys("bytea USING (CASE WHEN sha256 ~ '^[0-9a-f]{64}$' THEN decode(sha256, 'hex') "
                 "ELSE convert_to(sha256, 'UTF8') END)", entries, "text", _as_bytes)


def downgrade() -> None:
    _change_keys("varchar(64) USING (CASE WHEN length(sha256) = 32 THEN encode(sha256, 'hex') "
                 "ELSE left(encode(sha256, 'escape'), 64) END)", entries_text_keys, "blob",
                 _as_text)


def _change_keys(pg_type: str, table: Table, of_type: str,
                 convert: Callable[[bytes], object]) -> None:
    """The column to `pg_type` (with its USING clause) on PostgreSQL, in place; on SQLite the
    table copied into `table`'s definition, each key of SQLite type `of_type` (the form the
    revision before wrote) through `convert`."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE entries ALTER COLUMN sha256 TYPE {pg_type}")
        op.execute("ANALYZE entries")  # the new column's statistics, for the planner
    else:
        _rebuild_on_sqlite(table, of_type, convert)


def _as_bytes(value: bytes) -> bytes:
    """A stored key (as its bytes) of revision 0011 as 0012 stores it."""
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        return value
    return bytes.fromhex(text) if valid_sha256(text) else value


def _as_text(value: bytes) -> str:
    """A stored key (as its bytes) of revision 0012 as 0011 stored it."""
    return value.hex() if len(value) == 32 else value.decode("utf-8", "replace")


def _rebuild_on_sqlite(table: Table, of_type: str, convert: Callable[[bytes], object]) -> None:
    """Copy `entries` into a new table of `table`'s definition, each content hash of SQLite
    type `of_type` through `convert` as its bytes (`CAST AS BLOB`: text that is not UTF-8
    would fail the call as text), any other kept as it is (a tampered row's: converting it
    could make it look right, and the audit would no longer report it), with the indexes and
    append-only triggers revisions 0001-0011 gave it."""
    bind = op.get_bind()
    raw = bind.connection.driver_connection
    assert raw is not None
    raw.create_function("copyledger_key", 1, convert, deterministic=True)
    for verb in ("update", "delete"):
        op.execute(f"DROP TRIGGER IF EXISTS entries_no_{verb}")  # (one may have been dropped)
    for name in ("ix_entries_sha256", ENTRIES_BY_REGISTRANT[0], ENTRIES_FINGERPRINTED):
        op.execute(f"DROP INDEX {name}")
    op.execute("ALTER TABLE entries RENAME TO entries_old")
    bind.execute(CreateTable(table))
    cols = [c.name for c in table.columns]
    key = (f"CASE WHEN typeof(sha256) = '{of_type}' THEN copyledger_key(CAST(sha256 AS BLOB)) "
           "ELSE sha256 END")
    picks = [key if c == "sha256" else c for c in cols]
    op.execute(text(f"INSERT INTO entries ({', '.join(cols)}) SELECT {', '.join(picks)} "
                    "FROM entries_old ORDER BY seq"))
    op.execute("DROP TABLE entries_old")
    for index in table.indexes:
        index.create(bind)
    name, columns = ENTRIES_BY_REGISTRANT
    op.create_index(name, "entries", list(columns))
    op.create_index(ENTRIES_FINGERPRINTED, "entries", ["seq"],
                    sqlite_where=text(FINGERPRINTED_WHERE["sqlite"]))
    append_only("entries")
