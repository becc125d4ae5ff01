"""`copyledger db copy`: a registry's SQLite database moved into PostgreSQL row for row (D80).

The copy must be exact (the audit on PostgreSQL is clean, the server goes on appending to the
same log), keep the append-only triggers, refuse a target that holds rows and a source that a
sequencer holds, and write nothing when it fails.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event
from sqlalchemy.exc import OperationalError
from typer.testing import CliRunner

from copyledger.api.app import create_app
from copyledger.cli.main import app as cli_app
from copyledger.ledger import store as store_mod
from copyledger.ledger.errors import Conflict, IntegrityError, InvalidInput
from copyledger.service import admin, apikeys, dbcopy
from copyledger.service.node import Node
from tests.conftest import PostgresServer
from tests.helpers import bearer, open_registry, work_body
from tests.server import cli

TABLES = ("entries", "blocks", "merkle_nodes", "block_timestamps", "api_keys", "accounts",
          "entry_links")


@pytest.fixture
def source(tmp_path: Path) -> Iterator[tuple[Node, dict[str, str]]]:
    """A SQLite registry with works, an accepted assignment (links) and API keys, stopped:
    the node (for its settings) and alice's key."""
    reg = open_registry(tmp_path)
    alice, bob = bearer(reg, "alice"), bearer(reg, "bob")
    with TestClient(create_app(reg)) as c:
        for i in range(12):
            assert c.post("/v1/works", headers=alice, json=work_body(i)).status_code == 201
        r = c.post("/v1/works/batch", headers=alice,
                   json={"works": [work_body(f"b{i}") for i in range(30)]})
        assert r.status_code == 200, r.text
        offer = c.post("/v1/transfers", headers=alice, json={
            "work_seq": 3, "to": "bob", "transfer_type": "assignment"})
        assert offer.status_code == 201, offer.text
        took = c.post(f"/v1/transfers/{offer.json()['seq']}/accept", headers=bob)
        assert took.status_code == 201, took.text
    yield reg, alice


def counts(url: str) -> dict[str, int]:
    with psycopg.connect(url.replace("postgresql+psycopg", "postgresql")) as conn:
        have = {r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        return {t: int(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0])  # type: ignore[index]
                for t in TABLES if t in have}


def sqlite_url(reg: Node) -> str:
    return reg.settings.database_url


@pytest.mark.postgres
def test_copy_is_audited_clean_served_and_appended_to(
    source: tuple[Node, dict[str, str]], pg_server: PostgresServer
) -> None:
    reg, alice = source
    target = pg_server.new_database()
    data = str(reg.settings.data_dir)
    # The URL as an operator writes it (no driver): the copy opens it with psycopg.
    plain = target.replace("postgresql+psycopg://", "postgresql://")
    done = cli("db", "copy", "--to", plain, "--data-dir", data, "--json")
    assert done.returncode == 0, done.stderr
    rep = json.loads(done.stdout)
    size = reg.store.tree_size()
    assert rep["tables"]["entries"] == size and rep["checkpoint"] == (
        reg.store.latest_block().checkpoint)  # type: ignore[union-attr]
    assert counts(target) == {t: n for t, n in rep["tables"].items() if t in TABLES}

    audited = cli("audit", "--data-dir", data, "--database", target, "--json")
    assert audited.returncode == 0 and json.loads(audited.stdout)["ok"], audited.stdout

    on_pg = open_registry(Path(data).parent, target)
    try:
        with TestClient(create_app(on_pg)) as c:
            assert c.get("/v1/log").json()["tree_size"] == size
            # alice's key was copied; a new one gets a fresh id (the serial moved on).
            new = c.post("/v1/works", headers=alice, json=work_body("after"))
            assert new.status_code == 201 and new.json()["seq"] == size, new.text
            carol = bearer(on_pg, "carol")
            later = c.post("/v1/works", headers=carol, json=work_body("carol"))
            assert later.json()["seq"] == size + 1, later.text
            assert c.get("/v1/works/3/history").json()["holder"] == "bob"
            proof = c.get(f"/v1/entries/{size - 1}/proof").json()
            assert proof["tree_size"] == size + 2
            cons = c.get("/v1/log/consistency", params={"from": size}).json()
            assert cons["from"] == size and cons["to"] == size + 2
        # The triggers that keep the ledger append-only are in force on the copy.
        for sql in ("UPDATE entries SET kind = 'x' WHERE seq = 0", "DELETE FROM blocks",
                    "TRUNCATE merkle_nodes"):
            with pytest.raises(Exception, match="append-only"):
                on_pg.store.execute_raw(sql)
    finally:
        on_pg.stop()
    audited = cli("audit", "--data-dir", data, "--database", target, "--json")
    assert audited.returncode == 0 and json.loads(audited.stdout)["entries"] == size + 2


@pytest.mark.postgres
def test_a_target_with_rows_is_refused_and_nothing_is_written(
    source: tuple[Node, dict[str, str]], tmp_path: Path, pg_server: PostgresServer
) -> None:
    reg, _ = source
    target = pg_server.new_database()
    other = open_registry(tmp_path / "other", target)
    bearer(other, "carol")
    other.stop()
    before = counts(target)
    done = cli("db", "copy", "--to", target, "--data-dir", str(reg.settings.data_dir))
    assert done.returncode == 2 and "not empty" in done.stderr, done.stderr
    assert counts(target) == before


@pytest.mark.postgres
def test_a_source_being_sequenced_is_refused(
    tmp_path: Path, pg_server: PostgresServer
) -> None:
    reg = open_registry(tmp_path)
    reg.start()  # holds the sequencer's lock, as a running server does
    target = pg_server.new_database()
    try:
        with pytest.raises(Conflict, match="sequencing"):
            dbcopy.copy_database(sqlite_url(reg), target)
    finally:
        reg.stop()
    assert counts(target) == {}


@pytest.mark.postgres
def test_a_copy_that_does_not_check_out_leaves_the_target_empty(
    source: tuple[Node, dict[str, str]], pg_server: PostgresServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reg, _ = source
    target = pg_server.new_database()
    real = dbcopy._count
    monkeypatch.setattr(dbcopy, "_count", lambda db, t: real(db, t) + (t == "blocks"))
    with pytest.raises(IntegrityError, match="blocks"):
        dbcopy.copy_database(sqlite_url(reg), target)
    assert counts(target) == {}  # the schema too was rolled back
    monkeypatch.setattr(dbcopy, "_count", real)
    assert dbcopy.copy_database(sqlite_url(reg), target).tables["entries"] == reg.store.tree_size()


def test_only_sqlite_to_postgresql(tmp_path: Path) -> None:
    assert dbcopy.postgresql_url("postgresql://u:pw@h/db") == "postgresql+psycopg://u:pw@h/db"
    assert dbcopy.postgresql_url("postgresql+psycopg://h/db") == "postgresql+psycopg://h/db"
    for bad in ("sqlite:///x.db", "mysql://h/db", "::"):
        with pytest.raises(InvalidInput):
            dbcopy.postgresql_url(bad)
    with pytest.raises(InvalidInput):
        dbcopy.copy_database("postgresql+psycopg://h/db", "postgresql://h/db2")
    with pytest.raises(InvalidInput, match="revision"):
        (tmp_path / "empty.sqlite3").touch()
        dbcopy.copy_database(f"sqlite:///{tmp_path / 'empty.sqlite3'}", "postgresql://h/db")


@pytest.mark.postgres
def test_a_tampered_row_is_copied_as_the_store_reads_it(
    source: tuple[Node, dict[str, str]], pg_server: PostgresServer
) -> None:
    """SQLite lets text into a BLOB column: the copy writes its UTF-8 bytes, so the audit of
    the copy names the same entry as the audit of the source."""
    from copyledger.ledger.audit import audit
    from copyledger.service.node import tsa_roots_pem

    reg, _ = source
    reg.store.execute_raw("DROP TRIGGER entries_no_update")
    # Text that PostgreSQL's bytea input would read as hex, were it copied as text.
    reg.store.execute_raw("UPDATE entries SET data = '\\x7b7d' WHERE seq = 5")
    target = pg_server.new_database()
    dbcopy.copy_database(sqlite_url(reg), target)
    on_pg = open_registry(reg.settings.data_dir.parent, target)
    try:
        found = [audit(r.store, r.verifier_key, tsa_roots_pem=tsa_roots_pem(r.settings))
                 for r in (reg, on_pg)]
    finally:
        on_pg.stop()
    assert [(a.ok, a.bad_seq) for a in found] == [(False, 5), (False, 5)]
    assert on_pg.store.get_entry(5).data == reg.store.get_entry(5).data == b"\\x7b7d"


def revoked(url: str) -> list[object]:
    """`api_keys.revoked_at` of every key of the PostgreSQL database `url`, by id."""
    with psycopg.connect(url.replace("postgresql+psycopg", "postgresql")) as conn:
        return [r[0] for r in conn.execute("SELECT revoked_at FROM api_keys ORDER BY id")]


@pytest.mark.postgres
def test_an_admin_write_during_the_copy_fails_and_the_copy_is_exact(
    source: tuple[Node, dict[str, str]], pg_server: PostgresServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`keys revoke` (which takes no sequencer lock) run while the copy reads: it must fail
    visibly, not commit behind the copy's snapshot and leave the key valid on the target."""
    reg, _ = source
    real = store_mod._sqlite_pragmas

    def quick(dbapi_conn: object, record: object) -> None:  # a short wait for the lock
        real(dbapi_conn, record)
        dbapi_conn.execute("PRAGMA busy_timeout=200")  # type: ignore[attr-defined]

    monkeypatch.setattr(store_mod, "_sqlite_pragmas", quick)
    kid = apikeys.list_keys(reg.store, "alice")[0].id
    tried: list[BaseException] = []

    def progress(_table: str, _n: int) -> None:
        if not tried:
            with pytest.raises(OperationalError, match="database is locked") as e:
                admin.revoke_key(reg.settings, kid)
            tried.append(e.value)

    target = pg_server.new_database()
    rep = dbcopy.copy_database(sqlite_url(reg), target, progress=progress)
    assert tried and rep.tables["api_keys"] == len(apikeys.list_keys(reg.store))
    assert revoked(target) == [k.revoked_at for k in apikeys.list_keys(reg.store)] == [
        None] * rep.tables["api_keys"]
    # The lock ends with the copy: the same command now goes through (on the source).
    assert admin.revoke_key(reg.settings, kid).revoked_at is not None


@pytest.mark.postgres
def test_a_source_another_process_is_writing_is_refused(
    source: tuple[Node, dict[str, str]], pg_server: PostgresServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reg, _ = source
    monkeypatch.setattr(dbcopy, "_open_source", _quick_source(dbcopy._open_source))
    writer = sqlite3.connect(reg.settings.database_url.removeprefix("sqlite:///"),
                             isolation_level=None)
    target = pg_server.new_database()
    try:
        writer.execute("BEGIN IMMEDIATE")
        with pytest.raises(Conflict, match="writing"):
            dbcopy.copy_database(sqlite_url(reg), target)
    finally:
        writer.close()
    assert counts(target) == {}


def _quick_source(real: Callable[[str], sqlite3.Connection]) -> Callable[[str], sqlite3.Connection]:
    def opened(path: str) -> sqlite3.Connection:
        conn = real(path)
        conn.execute("PRAGMA busy_timeout=200")
        return conn
    return opened


@pytest.mark.postgres
def test_bytes_in_a_text_column_are_refused_by_name(
    source: tuple[Node, dict[str, str]], pg_server: PostgresServer
) -> None:
    """COPY would write them as the text `\\x5a6564`: the copy names the row instead."""
    reg, _ = source
    reg.store.execute_raw("INSERT INTO accounts VALUES ('zed', CAST('Zed' AS BLOB), "
                          "'person', '2026-01-01T00:00:00Z')")
    target = pg_server.new_database()
    with pytest.raises(IntegrityError, match=r"accounts\.display_name .* account='zed'"):
        dbcopy.copy_database(sqlite_url(reg), target)
    assert counts(target) == {}


@pytest.mark.postgres
def test_a_source_path_with_a_hash_sign_is_copied(
    tmp_path: Path, pg_server: PostgresServer
) -> None:
    """`#` ends a URI's path: unescaped, SQLite opened (and created) `.../a` read-write."""
    reg = open_registry(tmp_path / "a#b")
    bearer(reg, "alice")
    reg.stop()
    target = pg_server.new_database()
    rep = dbcopy.copy_database(sqlite_url(reg), target)
    assert rep.tables["api_keys"] == 1 and counts(target)["api_keys"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a#b"]


@pytest.mark.postgres
def test_a_failed_analyze_leaves_the_copy_reported_done(
    source: tuple[Node, dict[str, str]], pg_server: PostgresServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The copy is committed before ANALYZE: its failure is a warning, not a failed copy
    (whose rerun would be refused as "not empty")."""
    reg, _ = source
    real = dbcopy.make_engine

    def failing_analyze(url: str) -> object:
        engine = real(url)

        @event.listens_for(engine, "before_cursor_execute", retval=True)
        def _break(conn, cur, sql, params, context, many):  # type: ignore[no-untyped-def]
            return ("ANALYZE no_such_table" if sql == "ANALYZE" else sql), params

        return engine

    monkeypatch.setattr(dbcopy, "make_engine", failing_analyze)
    target = pg_server.new_database()
    done = CliRunner().invoke(cli_app, ["db", "copy", "--to", target,
                                        "--data-dir", str(reg.settings.data_dir)])
    assert done.exit_code == 0, done.output
    assert "copied" in done.stdout and "no_such_table" in done.stderr
    assert counts(target)["entries"] == reg.store.tree_size()
    again = pg_server.new_database()
    rep = dbcopy.copy_database(sqlite_url(reg), again)
    assert rep.analyze_error and "no_such_table" in rep.analyze_error
    assert rep.to_dict()["analyze_error"] == rep.analyze_error
