"""Schema migrations (D115): processes starting at once on one database migrate it one at a
time, and a migration that fails leaves the schema as it was, on both engines."""

from __future__ import annotations

import multiprocessing
import shutil
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect

from copyledger.ledger import store
from copyledger.ledger.schema import metadata
from copyledger.ledger.store import head_revision, make_engine, migrate, schema_revision


def _migrate_after(url: str, barrier: Any, out: Any) -> None:
    """In a process of its own, as a host or a `serve` starting: migrate once all are ready."""
    engine = make_engine(url)
    barrier.wait()
    try:
        out.put(("ok", migrate(engine)))
    except Exception as e:  # reported to the test, which shows it
        out.put(("error", f"{type(e).__name__}: {e}"))
    finally:
        engine.dispose()


def _state(url: str) -> tuple[str | None, set[str]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return schema_revision(conn), set(inspect(conn).get_table_names())
    finally:
        engine.dispose()


def test_processes_starting_at_once_migrate_one_at_a_time(database_url: str) -> None:
    """Three processes migrate one new database at the same moment (hosts started together
    by an orchestrator): each one succeeds, exactly one of them found it empty, and the schema
    is whole. Before D115 two of the three failed on a table the first had just created."""
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=_migrate_after, args=(database_url, barrier, out))
             for _ in range(3)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
    assert all(r[0] == "ok" for r in results), results
    head = head_revision()
    assert sorted((r[1][0] or "", r[1][1]) for r in results) == [
        ("", head), (head, head), (head, head)]
    at, tables = _state(database_url)
    assert at == head and {t.name for t in metadata.sorted_tables} <= tables


FAILING = '''"""A migration that fails half-way, for the test."""

from alembic import op
import sqlalchemy as sa

revision = "{rev}"
down_revision = "{down}"


def upgrade() -> None:
    op.create_table("half_done", sa.Column("id", sa.Integer, primary_key=True))
    raise RuntimeError("cut short")


def downgrade() -> None:
    pass
'''


def test_a_migration_that_fails_leaves_the_schema_as_it_was(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A new revision that creates a table and then fails (a crash, a bug, a lock timeout)
    leaves neither the table nor a new revision: the next start finds the schema as the
    last good release left it. On SQLite, before D115, the table stayed (pysqlite ran the DDL
    outside any transaction), and every later start failed on it."""
    engine = make_engine(database_url)
    head = head_revision()
    migrate(engine)
    copied = tmp_path / "migrations"
    shutil.copytree(store.MIGRATIONS, copied)
    nxt = f"{int(head) + 1:04d}"
    (copied / "versions" / f"{nxt}_failing.py").write_text(FAILING.format(rev=nxt, down=head))
    monkeypatch.setattr(store, "MIGRATIONS", copied)
    store._revisions.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="cut short"):
            migrate(engine)
    finally:
        store._revisions.cache_clear()
        engine.dispose()
    at, tables = _state(database_url)
    assert at == head and "half_done" not in tables


def test_a_schema_is_not_upgraded_under_a_process_that_sequences_the_log(
        database_url: str) -> None:
    """A process holding the log's sequencer lock while the schema is behind runs an older
    release (this one migrates before it takes the lock), and would write to the upgraded
    schema as it knew it: revision 0012 changes the column it writes content hashes to
    (D124). The upgrade is refused, nothing changed, until that process stops."""
    from copyledger.ledger.errors import Conflict
    from tests.helpers import downgrade

    engine = make_engine(database_url)
    head = head_revision()
    migrate(engine)
    downgrade(engine, "0011")
    older = store.Store(make_engine(database_url))  # an older release's sequencer
    older.acquire_sequencer_lock()
    try:
        with pytest.raises(Conflict, match="another process sequences this log"):
            migrate(engine)
        assert _state(database_url)[0] == "0011"
    finally:
        older.close()
    try:
        assert migrate(engine) == ("0011", head)
    finally:
        engine.dispose()
    after = store.Store(make_engine(database_url))  # the migration held the lock, then freed it
    try:
        after.acquire_sequencer_lock()
    finally:
        after.close()


def _open_and_write(paths: list[str], barrier: Any, out: Any) -> None:
    """As a process starting on a new SQLite database, at once with others, for each of
    `paths` in turn: the store's pragmas, then a write."""
    import sqlite3

    for path in paths:
        barrier.wait()
        try:
            conn = sqlite3.connect(path, isolation_level=None)
            store._sqlite_pragmas(conn, None)
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("CREATE TABLE IF NOT EXISTS t (x)")
            conn.execute("COMMIT")
            out.put((path, conn.execute("PRAGMA journal_mode").fetchone()[0]))
            conn.close()
        except Exception as e:  # reported to the test, which shows it
            out.put((path, f"{type(e).__name__}: {e}"))


def test_processes_opening_a_new_sqlite_database_at_once_all_get_it_in_wal_mode(
        tmp_path: Path) -> None:
    """Switching a new database to WAL while another process does answers one of them
    "database is locked" at once, busy timeout or not (each holds a read lock the other's
    switch waits for): 24 of 100 rounds of three processes before the switch was retried. It
    failed D115's test of processes migrating at once, now and then."""
    ctx = multiprocessing.get_context("spawn")
    paths = [str(tmp_path / f"ledger{i}.sqlite3") for i in range(30)]
    barrier, out = ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=_open_and_write, args=(paths, barrier, out)) for _ in range(3)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in range(3 * len(paths))]
    for p in procs:
        p.join(30)
    assert [r for r in results if r[1] != "wal"] == []
