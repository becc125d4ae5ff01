"""Move a registry's database from SQLite to PostgreSQL (`copyledger db copy`, D80).

The copy is one PostgreSQL transaction: the schema by the migrations (at the source's
revision), every table row for row by `COPY`, the serial counters moved past the copied ids,
then a check (row counts, the latest checkpoint) before the commit. A failure or a mismatch
rolls it all back, so the target is either an exact copy or as empty as it was. The source is
only read, but under SQLite's write lock (`BEGIN IMMEDIATE`, held to the end) as well as the
sequencer's lock file: no server can start appending, and no other writer (`keys revoke`,
`accounts set`) can commit a change the copy would miss; it waits, then fails with "database is
locked". The append-only triggers refuse UPDATE, DELETE and TRUNCATE, not COPY, so they are in
force on the target from its first row on.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from copyledger.ledger.errors import Conflict, IntegrityError, InvalidInput, said
from copyledger.ledger.schema import metadata
from copyledger.ledger.store import (
    make_engine,
    schema_revision,
    sends_may_wait,
    sqlite_sequencer_lock,
    upgrade,
)
from copyledger.service.settings import shown_url

CHUNK = 20_000  # rows read from SQLite at a time (a few MiB of entries)
Progress = Callable[[str, int], None]
"""Told (table, rows just copied) as the copy goes."""


@dataclass
class CopyReport:
    """What was copied: rows per table, the checkpoint both sides end on, and why the
    statistics were not refreshed after the commit, if they were not (`analyze_error`: the
    copy stands; run ANALYZE on the target)."""

    revision: str
    tables: dict[str, int] = field(default_factory=dict)
    checkpoint: str | None = None
    analyze_error: str | None = None

    @property
    def rows(self) -> int:
        return sum(self.tables.values())

    def to_dict(self) -> dict[str, Any]:
        return {"revision": self.revision, "tables": dict(self.tables), "rows": self.rows,
                "checkpoint": self.checkpoint, "analyze_error": self.analyze_error}


def count_rows(source_url: str) -> int:
    """Rows the copy of `source_url` will write (for a progress bar's total)."""
    with closing(_open_source(_sqlite_path(source_url))) as src:
        return sum(_count(src, t) for t in _tables(src))


def copy_database(source_url: str, target_url: str, *, chunk: int = CHUNK,
                  progress: Progress | None = None) -> CopyReport:
    """Copy the SQLite database `source_url` into the empty PostgreSQL database `target_url`
    and check the copy. Conflict if a sequencer holds the source, another process is writing
    to it, or the target holds rows."""
    path = _sqlite_path(source_url)
    target_url = postgresql_url(target_url)
    with sqlite_sequencer_lock(path), closing(_open_source(path)) as src:
        _lock_writers(src, path)  # one snapshot for every table and the check, and no writer
        revision = _revision(src)
        engine = make_engine(target_url)
        try:
            _refuse_non_empty(engine.connect, revision)
            with engine.begin() as conn:
                report = _copy(src, conn, revision, chunk, progress or (lambda _t, _n: None))
            report.analyze_error = _analyze(engine)
        finally:
            engine.dispose()
        src.execute("ROLLBACK")
    return report


def _analyze(engine: Engine) -> str | None:
    """Fresh statistics for the planner (10 M rows). The copy is committed by now, so a
    failure here is told, not raised: the target is complete, and a rerun would be refused."""
    try:
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE"))
    except SQLAlchemyError as e:
        return str(getattr(e, "orig", None) or e).strip()
    return None


def postgresql_url(url: str) -> str:
    """`url` as SQLAlchemy should open it: psycopg (3), the driver this project ships, when
    it names none. InvalidInput unless it is a PostgreSQL URL."""
    try:
        u = make_url(url)
    except (ArgumentError, ValueError):
        raise InvalidInput(said("not a database URL like postgresql://user@host/db: {url}",
                                url=shown_url(url))) from None
    if u.get_backend_name() != "postgresql":
        raise InvalidInput(said("the target must be a PostgreSQL database URL, not {url}",
                                url=u.render_as_string(hide_password=True)))
    if u.drivername == "postgresql":
        u = u.set(drivername="postgresql+psycopg")
    return u.render_as_string(hide_password=False)


def _sqlite_path(url: str) -> str:
    """The absolute path of the SQLite database `url` names: the lock file and the URI the
    source is opened by are both derived from it."""
    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        raise InvalidInput(said("only a registry on SQLite can be copied (its database is "
                                "{url})", url=u.render_as_string(hide_password=True)))
    return str(Path(u.database).resolve())


def _open_source(path: str) -> sqlite3.Connection:
    """The existing source (`mode=rw`: never created), opened read-write only so that it can
    hold SQLite's write lock (`_lock_writers`); the copy writes nothing to it. The path goes
    in as a `file:` URI with `#`, `?` and `%` escaped, so no part of it is read as a query."""
    try:
        conn = sqlite3.connect(Path(path).as_uri() + "?mode=rw", uri=True,
                               isolation_level=None)
        conn.execute("PRAGMA busy_timeout=10000")
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1")
    except sqlite3.Error as e:
        raise InvalidInput(said("cannot read {path}: {error}", path=path, error=str(e))) from e
    return conn


def _lock_writers(src: sqlite3.Connection, path: str) -> None:
    """Begin the source's transaction with SQLite's write lock (`BEGIN IMMEDIATE`): readers
    go on, but every other writer waits and then fails with "database is locked" until the
    copy ends, so nothing commits that the copy would miss (the sequencer's lock file keeps
    out only `serve` and `import --local`, not `keys revoke` or `accounts set`). Conflict if
    another process is writing now; InvalidInput if the file cannot be locked at all (it is
    read-only to this user)."""
    try:
        src.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as e:
        if e.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY:  # and its extended codes
            raise Conflict(said("another process is writing to {path}: stop it, then copy",
                                path=path), internal=str(e)) from e
        raise InvalidInput(said("cannot take the write lock of {path} (the copy writes "
                                "nothing, but keeps writers out): {error}", path=path,
                                error=str(e))) from e


def _revision(src: sqlite3.Connection) -> str:
    try:
        row = src.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error:
        row = None
    if row is None:
        raise InvalidInput(said("the source database has no schema revision: is it a registry?"))
    return str(row[0])


def _tables(src: sqlite3.Connection) -> list[str]:
    """The ledger's tables the source has, in the schema's order."""
    have = {r[0] for r in src.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return [t.name for t in metadata.sorted_tables if t.name in have]


def _count(db: Any, table: str) -> int:
    return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def _refuse_non_empty(connect: Callable[[], Connection], revision: str) -> None:
    """Conflict unless every ledger table of the target is absent or empty, and its schema (if
    any) is at the source's revision."""
    with connect() as conn:
        have = set(inspect(conn).get_table_names())
        for t in metadata.sorted_tables:
            if t.name in have and conn.execute(text(f"SELECT 1 FROM {t.name} LIMIT 1")).first():
                raise Conflict(said("the target database is not empty (table {table} has "
                                    "rows): copy into a new database", table=t.name))
        at = schema_revision(conn)
        if at is not None and at != revision:
            raise Conflict(said("the target's schema is at revision {target}, the "
                                "source's at {source}: copy into a new database",
                                target=at, source=revision))


def _copy(src: sqlite3.Connection, conn: Connection, revision: str, chunk: int,
          progress: Progress) -> CopyReport:
    upgrade(conn, revision)
    pg = conn.connection.driver_connection
    assert pg is not None  # a live connection of an open transaction has its driver's
    cur: Any = pg.cursor()
    cur.execute("SET LOCAL maintenance_work_mem = '256MB'")
    report = CopyReport(revision=revision)
    for table in _tables(src):
        rebuilt = _drop_plain_indexes(cur, table)  # built once at the end: far faster
        report.tables[table] = _copy_table(src, cur, table, chunk, progress)
        for ddl in rebuilt:
            cur.execute(ddl)
    _advance_serials(cur, report.tables)
    _check(src, cur, report)
    return report


def _copy_table(src: sqlite3.Connection, cur: Any, table: str, chunk: int,
                progress: Progress) -> int:
    info = src.execute(f"PRAGMA table_info({table})").fetchall()
    cols = [r[1] for r in info]
    blob = {r[1] for r in info if str(r[2]).upper() == "BLOB"}
    # A BLOB column of SQLite may hold text (a tampered row): the store reads it as its UTF-8
    # bytes, so the copy does too, and the audit on the target reports it as it would here.
    picks = [f"CAST({c} AS BLOB)" if c in blob else c for c in cols]
    # Any other column may hold a BLOB too, which COPY would write as the text `\x426f62`:
    # the last column names the first such column of the row, and the copy is refused.
    other = [c for c in cols if c not in blob]
    bad = "CASE " + " ".join(f"WHEN typeof({c}) = 'blob' THEN '{c}'" for c in other) + " END"
    rows = src.execute(f"SELECT {', '.join(picks)}, {bad if other else 'NULL'} FROM {table} "
                       f"ORDER BY {_order(src, table)}")
    n = 0
    with sends_may_wait(cur.connection), cur.copy(
            f"COPY {table} ({', '.join(cols)}) FROM STDIN") as copy:
        while batch := rows.fetchmany(chunk):
            for r in batch:
                if r[-1] is not None:
                    raise _bytes_in_text(table, cols, r)
                copy.write_row(r[:-1])
            n += len(batch)
            progress(table, len(batch))
    return n


def _order(src: sqlite3.Connection, table: str) -> str:
    """The order a table's rows are read in: by rowid, or by the primary key for a `WITHOUT
    ROWID` table, which has no rowid (`merkle_nodes` from revision 0017)."""
    sql = src.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?",
                      (table,)).fetchone()
    if sql and "WITHOUT ROWID" in " ".join(str(sql[0]).upper().split()):
        return ", ".join(_primary_key(table))
    return "rowid"


def _primary_key(table: str) -> list[str]:
    """The columns of `table`'s primary key, as the schema declares them."""
    return [c.name for c in metadata.tables[table].primary_key.columns]


def _bytes_in_text(table: str, cols: list[str], row: tuple[Any, ...]) -> IntegrityError:
    """The refusal of a row whose non-BLOB column holds bytes, naming the row by its key."""
    keys = _primary_key(table) or cols[:1]
    where = ", ".join(f"{k}={row[cols.index(k)]!r}" for k in keys)
    return IntegrityError(said("{table}.{column} holds bytes, not text, in the row {row}: "
                               "the copy cannot write it as the store reads it; correct the "
                               "row in the source, then copy", table=table, column=row[-1],
                               row=where))


def _drop_plain_indexes(cur: Any, table: str) -> list[str]:
    """Drop `table`'s indexes that back no constraint; their CREATE statements."""
    cur.execute(
        "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.schemaname = current_schema()"
        " AND i.tablename = %s AND NOT EXISTS (SELECT 1 FROM pg_constraint c"
        " WHERE c.conname = i.indexname)", (table,))
    found = cur.fetchall()
    for name, _ddl in found:
        cur.execute(f'DROP INDEX "{name}"')
    return [ddl for _name, ddl in found]


def _advance_serials(cur: Any, tables: dict[str, int]) -> None:
    """Move each serial column's counter past the ids copied into it (api_keys.id): COPY
    writes the ids and leaves the counters where they were."""
    for t in metadata.sorted_tables:
        if t.name not in tables:
            continue
        for col in t.columns:
            if col.autoincrement is True:
                cur.execute(f"SELECT setval(pg_get_serial_sequence(%s, %s), "
                            f"coalesce(max({col.name}), 0) + 1, false) FROM {t.name}",
                            (t.name, col.name))


def _check(src: sqlite3.Connection, cur: Any, report: CopyReport) -> None:
    """The copy holds as many rows as the source in every table, and ends on the same latest
    checkpoint; IntegrityError (the transaction rolls back) otherwise."""
    for table, copied in report.tables.items():
        there = _count(cur, table)
        if there != _count(src, table) or there != copied:
            raise IntegrityError(said("the copy of {table} has {copied} rows, the source "
                                      "{source}", table=table, copied=there,
                                      source=_count(src, table)))
    latest = "SELECT checkpoint FROM blocks ORDER BY height DESC LIMIT 1"
    ours = src.execute(latest).fetchone()
    cur.execute(latest)
    theirs = cur.fetchone()
    if ours != theirs and (ours is None or theirs is None or ours[0] != theirs[0]):
        raise IntegrityError(said("the copy's latest checkpoint differs from the source's"))
    report.checkpoint = None if ours is None else str(ours[0])
