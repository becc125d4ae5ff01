"""Append-only triggers, for the migrations: the database itself refuses UPDATE and DELETE on
ledger tables, on SQLite and on PostgreSQL, so a mistake or a casual edit cannot rewrite history
(a determined one with DBA rights can; `copyledger audit` finds that)."""

from __future__ import annotations

from alembic import op


def append_only(table: str) -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            """
            CREATE OR REPLACE FUNCTION copyledger_append_only() RETURNS trigger AS $$
            BEGIN
              RAISE EXCEPTION 'copyledger: % on % refused: the ledger is append-only',
                TG_OP, TG_TABLE_NAME;
            END;
            $$ LANGUAGE plpgsql
            """
        )
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION copyledger_append_only()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION copyledger_append_only()"
        )
    else:
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, 'copyledger: {verb} on {table} refused: "
                f"the ledger is append-only'); END"
            )
