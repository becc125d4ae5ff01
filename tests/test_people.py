"""People, not account ids (issue 15 item 3, D50): an administrator states who stands behind an
account (display name, natural person or organisation); certificates and pages show it beside
the id as the operator's statement, and times in the viewer's zone as well as UTC."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from copyledger.api.app import create_app
from copyledger.ledger.schema import ENTRIES_FINGERPRINTED, handoff_secret, sequencer_address
from copyledger.ledger.schema import accounts as accounts_table
from copyledger.ledger.store import Store
from copyledger.service import accounts
from copyledger.service.dates import both_times
from tests.helpers import bearer, downgrade, open_registry, work_body
from tests.server import cli

ORG = "上海某某文化传播有限公司"
ZH = {"Accept-Language": "zh-CN"}


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    reg = open_registry(tmp_path_factory.mktemp("people"))
    admin, creator = bearer(reg, "ops", "admin"), bearer(reg, "acme")
    with TestClient(create_app(reg)) as c:
        r = c.post("/v1/works", json=work_body("people"), headers=creator)
        assert r.status_code == 201, r.text
        yield {"client": c, "admin": admin, "creator": creator, "seq": r.json()["seq"],
               "reg": reg}
    reg.stop()


def _text(page: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def test_an_admin_states_who_an_account_is_and_anyone_may_read_it(made: dict[str, Any]) -> None:
    c, admin = made["client"], made["admin"]
    assert c.get("/v1/accounts/acme").status_code == 404
    body = {"display_name": f"  {ORG} ", "kind": "organisation"}
    assert c.put("/v1/accounts/acme", json=body).status_code == 401
    assert c.put("/v1/accounts/acme", json=body, headers=made["creator"]).status_code == 403
    r = c.put("/v1/accounts/acme", json=body, headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["display_name"] == ORG and r.json()["kind"] == "organisation"
    got = c.get("/v1/accounts/acme").json()
    assert got == r.json()
    again = c.put("/v1/accounts/acme", json={"display_name": ORG, "kind": "organisation"},
                  headers=admin)
    assert again.status_code == 200  # replaced, not added


@pytest.mark.parametrize("body", [
    {"display_name": "Ada", "kind": "robot"}, {"display_name": "", "kind": "person"},
    {"display_name": "   ", "kind": "person"}, {"display_name": "x" * 201, "kind": "person"},
    {"display_name": "Ada\u202eadA", "kind": "person"}, {"display_name": "a\nb", "kind": "person"},
    {"display_name": "Ada", "kind": "person", "extra": 1}, {"kind": "person"},
])
def test_bad_profiles_are_refused_and_change_nothing(made: dict[str, Any],
                                                     body: dict[str, Any]) -> None:
    c = made["client"]
    before = c.get("/v1/accounts/bob")
    r = c.put("/v1/accounts/bob", json=body, headers=made["admin"])
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    assert c.get("/v1/accounts/bob").status_code == before.status_code == 404


def test_bad_account_ids_are_a_4xx(made: dict[str, Any]) -> None:
    c = made["client"]
    for bad in ("a b", "é", "x" * 65):
        r = c.put(f"/v1/accounts/{bad}", json={"display_name": "A", "kind": "person"},
                  headers=made["admin"])
        assert r.status_code == 422, bad
        assert c.get(f"/v1/accounts/{bad}").status_code in (404, 422)


def test_certificate_and_entry_page_show_the_name_beside_the_id(made: dict[str, Any]) -> None:
    c, seq = made["client"], made["seq"]
    c.put("/v1/accounts/acme", json={"display_name": ORG, "kind": "organisation"},
          headers=made["admin"])
    en = _text(c.get(f"/v1/entries/{seq}/certificate").text)
    assert (f"{ORG} (organisation), account acme: the registry operator's statement, not "
            "signed by the log") in en
    zh = _text(c.get(f"/v1/entries/{seq}/certificate", headers=ZH).text)
    assert f"{ORG}（组织），账户 acme：登记系统运营方的陈述，不由日志签名" in zh
    page = _text(c.get(f"/entries/{seq}", headers=ZH).text)
    assert f"{ORG}（组织），账户 acme" in page
    bundle = c.get(f"/v1/entries/{seq}/bundle").content
    assert ORG.encode() not in bundle  # the statement is not evidence: never in the bundle


def test_times_show_the_viewers_zone_and_utc(made: dict[str, Any]) -> None:
    c, seq = made["client"], made["seq"]
    received = c.get(f"/v1/entries/{seq}").json()["entry"]["received_at"]
    zh = _text(c.get(f"/v1/entries/{seq}/certificate", headers=ZH).text)
    assert both_times(received, "zh-CN") in zh and "（北京时间 UTC+8）" in zh
    en = _text(c.get(f"/v1/entries/{seq}/certificate").text)
    assert both_times(received) in en and "Beijing" not in en
    ny = _text(c.get(f"/v1/entries/{seq}/certificate?tz=America/New_York").text)
    assert both_times(received, "en", "America/New_York") in ny and "(America/New_York UTC-" in ny
    for bad in ("Mars/Olympus", "../../etc/passwd", "x" * 65):
        r = c.get(f"/v1/entries/{seq}/certificate", params={"tz": bad})
        assert r.status_code == 422 and r.json()["type"].endswith("/invalid-input"), bad


def test_the_verify_page_is_told_the_viewers_zone_by_the_certificates_rule(
    made: dict[str, Any],
) -> None:
    """/verify (D71): the server picks the zone as for the certificate and hands it to the
    script on <body>; an unknown `?tz=` is the same 422 problem, never a 5xx."""
    c = made["client"]
    zh = c.get("/verify", headers=ZH)
    assert zh.status_code == 200
    assert '<body data-tz="Asia/Shanghai" data-tz-name="北京时间">' in zh.text
    en = c.get("/verify")
    assert "<body>" in en.text and "data-tz" not in en.text
    ny = c.get("/verify", params={"tz": "America/New_York", "seq": "1"})
    assert 'data-tz="America/New_York" data-tz-name="America/New_York"' in ny.text
    assert "data-tz" not in c.get("/verify", params={"tz": "UTC"}, headers=ZH).text
    for bad in ("Mars/Olympus", "../../etc/passwd", "x" * 65, '"><script>', ""):
        r = c.get("/verify", params={"tz": bad})
        if bad == "":  # no zone named: the language's
            assert r.status_code == 200 and "data-tz" not in r.text
            continue
        assert r.status_code == 422 and r.json()["type"].endswith("/invalid-input"), bad
        cert = c.get(f"/v1/entries/{made['seq']}/certificate", params={"tz": bad}).json()
        assert (r.json()["title"], r.json()["detail"]) == (cert["title"], cert["detail"]), bad


def test_both_times_says_beijing_time_the_way_a_chinese_reader_expects() -> None:
    assert (both_times("2026-11-30T02:05:03.123456Z", "zh-CN")
            == "2026-11-30 10:05:03（北京时间 UTC+8）· 2026-11-30 02:05:03 UTC")
    assert both_times("2026-11-30T02:05:03Z") == "2026-11-30 02:05:03 UTC"
    assert (both_times("2026-11-30T02:05:03Z", "en", "Asia/Shanghai")
            == "2026-11-30 10:05:03 (Beijing time UTC+8) · 2026-11-30 02:05:03 UTC")
    assert (both_times("2026-07-01T12:00:00Z", "en", "Asia/Kolkata")
            == "2026-07-01 17:30:00 (Asia/Kolkata UTC+5:30) · 2026-07-01 12:00:00 UTC")
    assert both_times("not a time", "zh-CN") == "not a time"


@given(st.datetimes(min_value=datetime(1900, 1, 1), timezones=st.just(UTC)))
def test_both_times_always_ends_with_the_same_utc_second(t: datetime) -> None:
    stamp = t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    utc = t.strftime("%Y-%m-%d %H:%M:%S") + " UTC"
    assert both_times(stamp, "zh-CN").endswith(utc) and both_times(stamp) == utc


def test_the_cli_sets_and_shows_a_profile(tmp_path: Path) -> None:
    data = str(tmp_path / "reg")
    assert cli("init", "--data-dir", data).returncode == 0
    r = cli("accounts", "set", "ada", "--name", "张三", "--kind", "person", "--data-dir", data,
            "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["display_name"] == "张三"
    en = cli("accounts", "show", "ada", "--data-dir", data, env={"LANG": "C.UTF-8",
                                                                 "LC_ALL": ""})
    assert en.stdout.startswith("ada: 张三 (natural person), set ")
    zh = cli("accounts", "show", "ada", "--data-dir", data, env={"LANG": "zh_CN.UTF-8",
                                                                 "LC_ALL": ""})
    assert zh.stdout.startswith("ada：张三（自然人），设置于 ")
    j_en = cli("accounts", "show", "ada", "--json", "--data-dir", data, env={"LANG": "C"})
    j_zh = cli("accounts", "show", "ada", "--json", "--data-dir", data,
               env={"LANG": "zh_CN.UTF-8"})
    assert j_en.stdout == j_zh.stdout and j_en.returncode == j_zh.returncode == 0
    bad = cli("accounts", "set", "ada", "--name", "x", "--kind", "robot", "--data-dir", data,
              env={"LANG": "zh_CN.UTF-8"})
    assert bad.returncode == 2 and "kind 必须是 person, organisation 之一" in bad.stderr


def test_migration_0008_adds_the_table_to_a_0007_log(tmp_path: Path, database_url: str) -> None:
    reg = open_registry(tmp_path, database_url)
    downgrade(reg.store.engine, "0011")  # revision 0012's hex keys back
    accounts_table.drop(reg.store.engine)
    reg.store.execute_raw(f"DROP INDEX {ENTRIES_FINGERPRINTED}")  # revision 0009's
    sequencer_address.drop(reg.store.engine)  # revision 0010's
    handoff_secret.drop(reg.store.engine)  # revision 0011's
    reg.store.execute_raw("UPDATE alembic_version SET version_num = '0007'")
    reg.store.close()
    s = Store.open(database_url or reg.settings.database_url)
    try:
        accounts.set_profile(s, "ada", "Ada Lovelace", "person")
        p = accounts.get_profile(s, "ada")
        assert p is not None and p.display_name == "Ada Lovelace" and p.kind == "person"
    finally:
        s.close()
