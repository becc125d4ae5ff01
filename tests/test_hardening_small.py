"""Issue 10 item 8: links from the configured public URL (never Host), per-key write quotas,
the PDF certificate cache."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from copyledger.api.app import create_app
from copyledger.ledger.errors import RateLimited
from copyledger.service import apikeys
from copyledger.service.apikeys import create_key
from copyledger.service.rendercache import RenderCache
from tests.helpers import open_registry, work_body

PUBLIC = "https://registry.example.org/cl"
FORGED = "evil.example"


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    reg = open_registry(tmp_path_factory.mktemp("reg"), public_url=PUBLIC + "/",
                        write_rate_per_s=0.001, write_burst=3)
    keys = [create_key(reg.store, "creator", f"c{i}")[0] for i in range(3)]
    with TestClient(create_app(reg)) as c:
        r = c.post("/v1/works", json=work_body(0), headers={"Authorization": f"Bearer {keys[0]}"})
        assert r.status_code == 201, r.text
        yield {"client": c, "keys": keys, "seq": r.json()["seq"]}
    reg.stop()


def _pdf_text(pdf: bytes, tmp: Path) -> str:
    pdftotext = shutil.which("pdftotext")
    assert pdftotext is not None, "pdftotext (Debian: poppler-utils) is in .ci/system-deps"
    (tmp / "c.pdf").write_bytes(pdf)
    return subprocess.run([pdftotext, str(tmp / "c.pdf"), "-"], capture_output=True, text=True,
                          check=True).stdout


def test_a_forged_host_changes_no_link(made: dict[str, Any], tmp_path: Path) -> None:
    c, seq = made["client"], made["seq"]
    url = f"/v1/entries/{seq}/certificate"
    for headers in ({"Host": FORGED}, {"Host": FORGED, "X-Forwarded-Host": FORGED,
                                       "Forwarded": f"host={FORGED}"}):
        page = c.get(url, headers=headers).text
        assert FORGED not in page
        assert f'href="{PUBLIC}/verify?seq={seq}"' in page
        assert f"--server {PUBLIC}" in page
        text = _pdf_text(c.get(url, params={"format": "pdf"}, headers=headers).content, tmp_path)
        assert FORGED not in text and "registry.example.org" in text
        assert FORGED not in c.get("/verify", headers=headers).text


def test_without_a_public_url_links_use_the_listen_address(tmp_path: Path) -> None:
    reg = open_registry(tmp_path, host="10.1.2.3", port=8443)
    key = create_key(reg.store, "creator", "a")[0]
    with TestClient(create_app(reg)) as c:
        seq = c.post("/v1/works", json=work_body(1),
                     headers={"Authorization": f"Bearer {key}"}).json()["seq"]
        page = c.get(f"/v1/entries/{seq}/certificate", headers={"Host": FORGED}).text
    reg.stop()
    assert FORGED not in page and f"http://10.1.2.3:8443/verify?seq={seq}" in page


def test_public_url_must_be_http(tmp_path: Path) -> None:
    from copyledger.ledger.errors import InvalidInput
    from copyledger.service.settings import load

    for bad in ("javascript:alert(1)", "registry.example", "https://", "https://a/b?c=1"):
        with pytest.raises(InvalidInput, match="public_url"):
            load(tmp_path, public_url=bad)
    assert load(tmp_path, public_url="https://a.example/x/").base_url == "https://a.example/x"


@pytest.mark.parametrize(("text", "setting"), [
    ("heartbeat_s = 0", "heartbeat_s"),  # sealed empty blocks without end
    ("heartbeat_s = -1", "heartbeat_s"),
    ("heartbeat_s = inf", "heartbeat_s"),  # crashed the sequencer's idle wait
    ("heartbeat_s = 1e10", "heartbeat_s"),  # so did a wait past threading.TIMEOUT_MAX
    ("linger_ms = inf", "linger_ms"),
    ("max_batch = 0", "max_batch"),  # stopped the sequencer at the first write
    ("max_batch = -1", "max_batch"),  # sealed nothing, ever
    ("port = 70000", "port"),  # listened on 4464, linked to 70000
    ("workers = 0", "workers"),
    ("key_recheck_s = inf", "key_recheck_s"),  # a revoked key working for good
    ("idempotency_ttl_s = 0", "idempotency_ttl_s"),
    ('log_level = "verbose"', "log_level"),  # a traceback at start
    ('log_json = "flase"', "log_json"),  # read as false: JSON logs off unseen
    ('external_tsas = ["https://a/tsr", "https://b/tsr"]', "external_tsas"),  # mangled URLs
])
def test_a_setting_out_of_range_is_refused_naming_it(tmp_path: Path, text: str,
                                                     setting: str) -> None:
    """D173: a value no process can run with is refused when the settings are read, naming
    the setting, instead of stopping the sequencer or making it seal blocks without end."""
    from copyledger.ledger.errors import InvalidInput
    from copyledger.service.settings import load

    (tmp_path / "config.toml").write_text(text + "\n")
    with pytest.raises(InvalidInput, match=f"setting {setting}"):
        load(tmp_path)


def test_settings_in_range_and_paths_with_a_tilde_are_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from copyledger.service.settings import load

    (tmp_path / "config.toml").write_text(
        'linger_ms = 0\nwrite_rate_per_s = 0\nkey_recheck_s = 0\nwitness_quorum = 0\n'
        'log_json = "off"\nlog_level = "WARNING"\nport = 65535\ntimestamp_rate_per_s = 0\n'
        'witness_refresh_s = 0\n')
    s = load(tmp_path)
    assert (s.linger_ms, s.write_rate_per_s, s.key_recheck_s, s.witness_quorum, s.log_json,
            s.port, s.timestamp_rate_per_s, s.witness_refresh_s) == (
                0, 0, 0, 0, False, 65535, 0, 0)  # (0: no limit; never asked again)
    monkeypatch.setenv("COPYLEDGER_LOG_JSON", "")  # an unset compose variable: false, as before
    assert load(tmp_path).log_json is False
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("COPYLEDGER_DATA_DIR", "~/reg")
    assert load().data_dir == tmp_path / "reg"


def test_write_quota_is_per_key_429_with_retry_after_and_writes_nothing(
    made: dict[str, Any],
) -> None:
    c = made["client"]
    h = [{"Authorization": f"Bearer {k}"} for k in made["keys"]]
    size = c.get("/v1/log").json()["tree_size"]
    # c0 spent one of its 3 tokens in the fixture; two more writes, by two endpoints
    assert c.post("/v1/works", json=work_body(1), headers=h[0]).status_code == 201
    ev = {"sha256": "ab" * 32, "source_url": "https://example.org/x",
          "captured_at": "2026-01-01T00:00:00Z", "capture_method": "screenshot",
          "description": "listing", "related_work": made["seq"]}
    assert c.post("/v1/evidence", json=ev, headers=h[0]).status_code == 201
    for path, body in (("/v1/works", work_body(2)), ("/v1/evidence", ev),
                       ("/v1/transfers", {"work_seq": made["seq"], "to": "c1",
                                          "transfer_type": "assignment"})):
        r = c.post(path, json=body, headers=h[0])
        assert r.status_code == 429, (path, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        assert int(r.headers["retry-after"]) >= 1
        assert r.json()["retry_after"] == int(r.headers["retry-after"])
    # multipart uploads are refused before the body is read
    r = c.post("/v1/works", headers=h[0], files={"file": ("a.txt", b"hello", "text/plain")},
               data={"title": "t", "creators": ["a"], "work_type": "text"})
    assert r.status_code == 429
    assert c.get("/v1/log").json()["tree_size"] == size + 2  # nothing more written
    assert c.post("/v1/works", json=work_body(3), headers=h[1]).status_code == 201  # other key
    assert c.get("/v1/entries/0").status_code == 200  # reads are not writes


@settings(max_examples=200, deadline=None)
@given(rate=st.floats(0.1, 1000), burst=st.integers(1, 50),
       gaps=st.lists(st.floats(0, 2), min_size=1, max_size=200))
def test_token_bucket_never_grants_more_than_burst_plus_rate_times_time(
    rate: float, burst: int, gaps: list[float],
) -> None:
    clock = [1000.0]
    b = apikeys.TokenBuckets(rate, burst, "things")
    granted = 0
    mp = pytest.MonkeyPatch()
    mp.setattr(apikeys.time, "monotonic", lambda: clock[0])
    try:
        for gap in gaps:
            clock[0] += gap
            try:
                b.take("k")
                granted += 1
            except RateLimited as e:
                assert isinstance(e.extra["retry_after"], int) and e.extra["retry_after"] >= 1
        assert granted <= burst + rate * (clock[0] - 1000.0) + 1e-6
        if all(g == 0 for g in gaps):
            assert granted == min(burst, len(gaps))  # a full bucket serves the burst at once
    finally:
        mp.undo()


def test_the_pdf_is_rendered_once_per_distinct_input(made: dict[str, Any]) -> None:
    c, h = made["client"], {"Authorization": f"Bearer {made['keys'][2]}"}
    seqs = [c.post("/v1/works", json=work_body(f"pdf{i}"), headers=h).json()["seq"]
            for i in range(2)]
    cache: RenderCache = c.app.state.pdf_cache  # type: ignore[attr-defined]
    calls: list[Any] = []
    real = cache.render

    def counting(*a: Any, **k: Any) -> bytes:
        calls.append(a)
        return real(*a, **k)

    cache.render = counting
    try:
        url = f"/v1/entries/{seqs[0]}/certificate?format=pdf"
        first = c.get(url).content
        assert c.get(url).content == first and c.get(url, headers={"Host": "x"}).content == first
        assert len(calls) == 1
        c.get(f"/v1/entries/{seqs[1]}/certificate?format=pdf")  # another entry: rendered
        assert len(calls) == 2
    finally:
        cache.render = real


def test_render_cache_keys_on_every_input_and_stays_bounded() -> None:
    made: list[tuple[Any, ...]] = []

    def render(bundle: dict[str, Any], url: str, lang: str = "en") -> bytes:
        made.append((bundle, url, lang))
        return repr((bundle, url, lang)).encode().ljust(100)

    cache = RenderCache(render, max_entries=3, max_bytes=10_000)
    b = {"entry": {"seq": 1}, "timestamps": []}
    assert cache(b, "u") == cache({"timestamps": [], "entry": {"seq": 1}}, "u")  # key order
    cache({**b, "timestamps": [{"token": "t"}]}, "u")  # the bundle gained a token
    cache(b, "v")  # another public URL
    cache(b, "u", lang="zh-CN")  # an argument added later
    assert len(made) == 4 and len(cache) == 3
    small = RenderCache(render, max_entries=100, max_bytes=250)
    for i in range(5):
        small({"i": i}, "u")
    assert len(small) == 2  # 100+ bytes each, 250 bytes at most


def test_serve_workers_hand_the_address_to_their_processes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """D173: the processes of `serve --workers N --port P` read their settings from the
    environment; without the host and port there, each built its links (certificates, QR
    codes) from the default 127.0.0.1:8000."""
    import uvicorn

    from copyledger.cli import main as cli_main
    from copyledger.service.settings import load

    for name in ("DATA_DIR", "WORKERS", "DATABASE", "NOTARY_URL", "HOST", "PORT"):
        monkeypatch.setenv(f"COPYLEDGER_{name}", "")  # restored after the test
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: None)
    cli_main._serve_workers(load(tmp_path / "reg", host="0.0.0.0", port=9123, workers=2))
    s = load()
    assert (s.data_dir, s.host, s.port, s.workers) == (tmp_path / "reg", "0.0.0.0", 9123, 2)
    assert s.base_url == "http://0.0.0.0:9123"


def test_database_passwords_are_not_shown(tmp_path: Path) -> None:
    """D173: `init --json` hid a password in `user:pw@` only, not in `?password=`; `db copy`
    repeated a target URL it could not read, password and all."""
    from typer.testing import CliRunner

    from copyledger.cli.main import app
    from copyledger.service.settings import shown_url

    assert shown_url("postgresql://u:pw1@h/db?password=pw2&sslpassword=pw3&sslmode=require") \
        == "postgresql://u:***@h/db?sslmode=require"
    assert shown_url("sqlite:////tmp/é b.db") == "sqlite:////tmp/é b.db"
    r = CliRunner().invoke(app, ["db", "copy", "--data-dir", str(tmp_path / "reg"),
                                 "--to", "u:s3cret@db.internal/reg"])
    out = r.stdout + (r.stderr if r.stderr_bytes else "")
    assert r.exit_code == 2 and "not a database URL" in out and "s3cret" not in out, out
    r = CliRunner().invoke(app, ["db", "copy", "--data-dir", str(tmp_path / "reg"),
                                 "--to", "postgresql://u:s3cret@h:port/db"])
    out = r.stdout + (r.stderr if r.stderr_bytes else "")
    assert r.exit_code == 2 and "s3cret" not in out and r.exception is not None, out
    assert not isinstance(r.exception, ValueError), out
