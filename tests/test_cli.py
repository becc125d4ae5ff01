"""The command line: init, keys, register (against a real server), proof, audit."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from copyledger.cli.main import app
from tests.helpers import HSM
from tests.server import ServerProcess

runner = CliRunner()


def run(*args: str) -> tuple[int, str]:
    r = runner.invoke(app, list(args))
    return r.exit_code, r.stdout + (r.stderr if r.stderr_bytes else "")


def test_init_is_idempotent_and_key_is_private(tmp_path: Path) -> None:
    d = tmp_path / "reg"
    code, out = run("init", "--data-dir", str(d), "--origin", "example.org/log", "--json")
    assert code == 0, out
    first = json.loads(out)
    assert first["verifier_key"].startswith("example.org/log+")
    if not HSM:  # one HSM token serves the whole suite: its key may exist already
        assert first["created_key"] is True
    key = d / "notary" / "log-key.pem"
    if HSM:  # the key is inside the token: nothing secret on disk
        assert not key.exists()
    else:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    code, out = run("init", "--data-dir", str(d), "--json")
    assert code == 0 and json.loads(out)["created_key"] is False
    assert json.loads(out)["verifier_key"] == first["verifier_key"]  # origin came from config


def test_keys_and_audit_without_a_server(tmp_path: Path) -> None:
    d = str(tmp_path / "reg")
    assert run("init", "--data-dir", d)[0] == 0
    code, out = run("keys", "create", "--role", "creator", "--account", "alice", "--data-dir", d,
                    "--json")
    assert code == 0 and json.loads(out)["key"].startswith("cl_")
    code, out = run("keys", "create", "--role", "emperor", "--data-dir", d)
    assert code == 2 and "role" in out
    code, out = run("audit", "--data-dir", d, "--json")
    assert code == 0 and json.loads(out)["ok"] is True


def test_db_forget_handoff_secret_forgets_the_recorded_check(tmp_path: Path) -> None:
    """D113: what a secret changed on every host needs; says whether one was recorded."""
    from copyledger.ledger.schema import handoff_secret
    from copyledger.ledger.store import Store, sqlite_sequencer_lock

    d = tmp_path / "reg"
    assert run("init", "--data-dir", str(d))[0] == 0
    code, out = run("db", "forget-handoff-secret", "--data-dir", str(d), "--json")
    assert code == 0 and json.loads(out) == {"forgotten": False, "since": None}
    st = Store.open(f"sqlite:///{d / 'ledger.sqlite3'}")
    with st.engine.begin() as conn:
        conn.execute(handoff_secret.insert().values(id=1, secret_check="ab" * 32,
                                                    since="2026-12-02T09:00:00Z"))
    st.close()
    with sqlite_sequencer_lock(str(d / "ledger.sqlite3")):  # as a running server holds it
        code, out = run("db", "forget-handoff-secret", "--data-dir", str(d))
        assert code != 0 and "stop every host" in out
    code, out = run("db", "forget-handoff-secret", "--data-dir", str(d))
    assert code == 0 and "2026-12-02T09:00:00Z" in out and "forgotten" in out
    code, out = run("db", "forget-handoff-secret", "--data-dir", str(d), "--json")
    assert json.loads(out) == {"forgotten": False, "since": None}


def test_commands_refuse_an_older_schema_until_db_upgrade_and_a_newer_one_always(
    tmp_path: Path,
) -> None:
    """An older release's database meets a command of this release: the commands that manage
    the registry say to run `db upgrade` instead of failing on a missing table, the audit
    reads it as it is, and `db upgrade` brings it to this release's revision. A schema a
    newer release wrote is refused, by `db upgrade` too, and left as it was."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine, text

    from copyledger.ledger.store import MIGRATIONS, head_revision

    d = tmp_path / "reg"
    assert run("init", "--data-dir", str(d))[0] == 0
    engine = create_engine(f"sqlite:///{d / 'ledger.sqlite3'}")

    def at() -> str:
        with engine.connect() as conn:
            return str(conn.execute(text("SELECT version_num FROM alembic_version")).scalar())

    head = at()
    assert head == head_revision()
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0010")  # before the hand-over secret's table (D113)
    for args in (("db", "forget-handoff-secret"), ("keys", "list"),
                 ("accounts", "show", "acme")):
        code, out = run(*args, "--data-dir", str(d))
        assert code != 0 and "revision 0010" in out and "db upgrade" in out, (args, out)
        assert "no such table" not in out
    code, out = run("audit", "--data-dir", str(d), "--json")
    assert code == 0 and json.loads(out)["ok"] is True, out
    assert at() == "0010"  # nothing above upgraded it
    code, out = run("db", "upgrade", "--data-dir", str(d), "--json")
    assert code == 0 and json.loads(out) == {"from": "0010", "to": head, "upgraded": True}
    assert at() == head
    code, out = run("db", "forget-handoff-secret", "--data-dir", str(d), "--json")
    assert code == 0 and json.loads(out) == {"forgotten": False, "since": None}
    code, out = run("db", "upgrade", "--data-dir", str(d), "--json")
    assert json.loads(out) == {"from": head, "to": head, "upgraded": False}

    with engine.begin() as conn:  # as a newer release leaves it
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    for args in (("db", "upgrade"), ("keys", "list"), ("init",), ("audit",)):  # audit: D176
        code, out = run(*args, "--data-dir", str(d))
        assert code != 0 and "newer release" in out, (args, out)
    assert at() == "9999"
    engine.dispose()


# (under an HSM the log key is in the token, not a file)
@pytest.mark.parametrize("lost", ["notary/tsa", *([] if HSM else ["notary/log-key.pem"])])
def test_a_registry_that_lost_a_key_is_not_given_a_new_one(tmp_path: Path, lost: str) -> None:
    """D176: `init` and every start made any missing key or TSA chain anew, so a registry
    that lost one signed its next block under a key or TSA root no verifier pinned, and its
    audit failed from then on. Now they refuse, naming what to restore."""
    import shutil

    d = tmp_path / "reg"
    assert run("init", "--data-dir", str(d))[0] == 0
    vkey = (d / "notary" / "log.vkey").read_text()
    path = d / lost
    shutil.rmtree(path) if path.is_dir() else path.unlink()
    code, out = run("init", "--data-dir", str(d))
    assert code == 2 and "is missing: restore it from a backup" in " ".join(out.split()), out
    assert not path.exists() and (d / "notary" / "log.vkey").read_text() == vkey


def test_audit_on_missing_registry_is_a_clear_error(tmp_path: Path) -> None:
    code, out = run("audit", "--data-dir", str(tmp_path / "nothing"))
    assert code == 2 and "copyledger init" in out


@pytest.mark.slow
def test_register_proof_audit_with_running_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # receipts are kept in ./copyledger-receipts
    d = tmp_path / "reg"
    assert run("init", "--data-dir", str(d))[0] == 0
    key = json.loads(run("keys", "create", "--role", "creator", "--data-dir", str(d),
                         "--json")[1])["key"]
    files = []
    for i in range(3):
        f = tmp_path / f"work{i}.txt"
        f.write_bytes(os.urandom(100_000 + i))
        files.append(str(f))
    srv = ServerProcess(d).start()
    try:
        code, out = run("register", *files, "--server", srv.url, "--api-key", key,
                        "--work-type", "text", "--creator", "Ada", "--json")
        assert code == 0, out
        res = json.loads(out)
        assert [r["seq"] for r in res] == [0, 1, 2]
        code, out = run("proof", "1", "--server", srv.url, "--json")
        assert code == 0, out
        p = json.loads(out)
        assert p["verified"] is True and p["checkpoint_verified"] is True
        # One batch, one block: no checkpoint was signed at size 2, so a proof there leads
        # only to the root the server states and is not called verified.
        assert httpx.get(f"{srv.url}/v1/entries/1/proof",
                         params={"tree_size": 2}).json()["checkpoint"] is None
        code, out = run("proof", "1", "--tree-size", "2", "--server", srv.url, "--json")
        assert code == 1 and "does NOT verify" in out, out
        assert json.loads(out[:out.rindex("}") + 1])["verified"] is False
        code, out = run("register", files[0], "--server", srv.url, "--api-key", "cl_wrong")
        assert code == 1 and "401" in out
        # audit works while the server runs on the same data directory
        code, out = run("audit", "--data-dir", str(d), "--json", "--workers", "2")
        assert code == 0 and json.loads(out)["entries"] == 3
        assert json.loads(out)["resumed_from"] is None
        state = d / "audit-state.json"
        assert stat.S_IMODE(state.stat().st_mode) == 0o600
        assert json.loads(state.read_text())["tree_size"] == 3
        # The next audit resumes there, and checks the one entry registered since.
        code, out = run("audit", "--data-dir", str(d), "--json", "--incremental")
        rep = json.loads(out)
        assert code == 0 and rep["resumed_from"] == 3 and rep["entries"] == 3, rep
        state.write_text("{}")
        code, out = run("audit", "--data-dir", str(d), "--incremental")
        assert code == 2 and "not an audit state; delete it" in out.replace("\n", " "), out
    finally:
        srv.stop()


def test_register_titles_a_name_that_is_not_utf8_and_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file name that is not UTF-8 (kept by Python as lone surrogates, which JSON cannot
    send) ended `register` in a traceback, the rest of the folder unsent; it is titled with
    U+FFFD for the bad byte instead."""
    monkeypatch.chdir(tmp_path)
    d = tmp_path / "reg"
    assert run("init", "--data-dir", str(d))[0] == 0
    key = json.loads(run("keys", "create", "--role", "creator", "--data-dir", str(d),
                         "--json")[1])["key"]
    srv = ServerProcess(d).start()
    try:
        # A name that is not UTF-8 is titled with U+FFFD; the folder's other file goes too.
        odd = tmp_path / "odd"
        odd.mkdir()
        (odd / os.fsdecode(b"caf\xe9.txt")).write_bytes(os.urandom(64))
        (odd / "plain.txt").write_bytes(os.urandom(64))
        code, out = run("register", str(odd), "--server", srv.url, "--api-key", key,
                        "--work-type", "text", "--creator", "Ada", "--json")
        assert code == 0, out
        got = json.loads(out)
        assert len(got) == 2 and all("seq" in r for r in got), got
        titles = {httpx.get(f"{srv.url}/v1/entries/{r['seq']}").json()["entry"]["title"]
                  for r in got}
        assert titles == {"caf\ufffd.txt", "plain.txt"}, titles
    finally:
        srv.stop()


def test_origin_is_fixed_at_init(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = str(tmp_path / "reg")
    assert run("init", "--data-dir", d, "--origin", "a.example/log")[0] == 0
    code, out = run("init", "--data-dir", d, "--origin", "b.example/log")
    assert code == 2 and "cannot change" in out
    monkeypatch.setenv("COPYLEDGER_ORIGIN", "b.example/log")
    code, out = run("init", "--data-dir", d)
    assert code == 2 and "cannot change" in out


def test_accounts_are_ascii_like_registrants(tmp_path: Path) -> None:
    d = str(tmp_path / "reg")
    assert run("init", "--data-dir", d)[0] == 0
    code, out = run("keys", "create", "--role", "creator", "--account", "zoë", "--data-dir", d)
    assert code == 2 and "account" in out


@pytest.mark.slow
def test_register_and_import_stop_cleanly_when_whoami_fails_after_the_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """D99: the registry answered the batch, but GET /v1/whoami (asked after it, no account
    given) fails: `register` and `import` end with the error, naming whoami, not a traceback;
    a rerun, whoami back, finds the files already registered."""
    from copyledger.client import _calls

    monkeypatch.chdir(tmp_path)
    d = tmp_path / "reg"
    assert run("init", "--data-dir", str(d))[0] == 0
    key = json.loads(run("keys", "create", "--role", "creator", "--data-dir", str(d),
                         "--json")[1])["key"]
    f = tmp_path / "w.txt"
    f.write_bytes(os.urandom(1000))
    catalogue = tmp_path / "c.jsonl"
    catalogue.write_text(json.dumps({"sha256": hashlib.sha256(b"c").hexdigest(), "title": "T",
                                     "creators": ["Ada"], "work_type": "text"}) + "\n")
    srv = ServerProcess(d).start()
    try:
        with monkeypatch.context() as m:
            m.setattr(_calls, "whoami", lambda: _calls.get("/v1/no-whoami-here"))
            code, out = run("register", str(f), "--server", srv.url, "--api-key", key,
                            "--work-type", "text", "--creator", "Ada")
            assert code == 2 and "GET /v1/whoami" in out, out
            code, out = run("import", str(catalogue), "--server", srv.url, "--api-key", key)
            assert code != 0 and "GET /v1/whoami" in out, out
        code, out = run("register", str(f), "--server", srv.url, "--api-key", key,
                        "--work-type", "text", "--creator", "Ada", "--json")
        assert code == 0 and "already registered" in out, out
    finally:
        srv.stop()
