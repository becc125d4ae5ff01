"""The certificate's deposit record (issue 15 item 5, D51): deposit number, hashes with their
algorithms, deposit time and its source (TSA and token serial), block height and hash, the
verification method and the statement, in English and Chinese, in HTML and PDF."""

from __future__ import annotations

import base64
import copy
import hashlib
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from copyledger.ledger import jcs, sm2
from copyledger.ledger.timestamp import verify_token
from copyledger.service.certificate import (
    certificate_html,
    certificate_pdf,
    deposit,
    deposit_number,
    facts,
)
from tests.test_sm import FILE, sm_bundle

URL = "http://testserver/verify?seq=1"


@pytest.fixture(scope="module")
def sm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    b, _ = sm_bundle(tmp_path_factory.mktemp("deposit"))
    yield b


@given(st.text(min_size=1, max_size=40), st.integers(min_value=0, max_value=10**12 - 1))
def test_the_deposit_number_is_derived_from_the_log_alone(origin: str, seq: int) -> None:
    n = deposit_number(origin, seq)
    h = hashlib.sha256(origin.encode()).hexdigest()[:8].upper()
    assert n == f"CL-{h}-{seq:012d}" and re.fullmatch(r"CL-[0-9A-F]{8}-[0-9]{12}", n)
    assert deposit_number(origin, seq + 1) != n and deposit_number(origin + "x", seq) != n


def test_the_record_names_hashes_time_source_and_block(sm: dict[str, Any]) -> None:
    rows = dict(deposit(sm, facts(sm)).rows)
    assert rows["Deposit number"] == deposit_number(sm["origin"], sm["seq"])
    assert rows["File hash (SHA-256)"] == hashlib.sha256(FILE).hexdigest()
    assert rows["File hash (SM3)"] == sm2.sm3_hex(FILE)
    assert rows["Block height"] == str(sm["block"]["height"])
    assert rows["Block hash (SHA-256)"] == sm["block"]["hash"]
    assert rows["Block header hash (SM3)"] == sm2.sm3(
        jcs.canonicalize(sm["block"]["header"])).hex()
    token = base64.b64decode(sm["timestamps"][0]["token"])
    info = verify_token(token, bytes.fromhex(sm["block"]["hash"]),
                        "".join(sm["notary"]["tsa_roots"]).encode(),
                        untrusted_pem="".join(sm["notary"]["tsa_chain"]).encode())
    assert f"serial number {info.serial_number:x}, verified" in rows["Time source"]
    # the registry's own TSA, named as such (D186), as page 1 names it (D177)
    assert "the registry's own time-stamp authority (the operator's statement)" in rows[
        "Time source"]
    assert info.gen_time.isoformat().replace("+00:00", "Z")[:19] in rows["Deposit time"]
    assert "SM2/SM3 RFC 3161 time-stamp token" in rows["Time source (SM2/SM3)"]


def test_a_token_that_does_not_verify_is_no_time_source(sm: dict[str, Any]) -> None:
    b = copy.deepcopy(sm)
    for key in ("timestamps", "sm2_timestamps"):
        tok = bytearray(base64.b64decode(b[key][0]["token"]))
        tok[-3] ^= 1
        b[key][0]["token"] = base64.b64encode(bytes(tok)).decode()
    rows = dict(deposit(b, facts(b)).rows)
    assert rows["Time source"].startswith("no verified time-stamp token")
    assert "Time source (SM2/SM3)" not in rows and "Block header hash (SM3)" not in rows
    assert sm["block"]["header"]["sealed_at"] in rows["Deposit time"]


def test_in_chinese_in_html_and_pdf(sm: dict[str, Any], tmp_path: Path) -> None:
    page = certificate_html(sm, URL, "zh-CN")
    number = deposit_number(sm["origin"], sm["seq"])
    for words in ("存证信息", "存证编号", "文件哈希值（SM3）", "区块头哈希值（SM3）", "时间来源",
                  "验证方法", "声明", "不是公证机构的公证", number):
        assert words in page, words
    english = certificate_html(sm, URL)
    assert "Deposit record" in english and "It is not a notarisation" in english
    pdftotext = shutil.which("pdftotext")
    if pdftotext is None:
        pytest.fail("pdftotext (poppler-utils, .ci/system-deps) is needed")
    (tmp_path / "c.pdf").write_bytes(certificate_pdf(sm, URL, "zh-CN"))
    text = subprocess.run([pdftotext, "-layout", str(tmp_path / "c.pdf"), "-"],
                          capture_output=True, text=True, timeout=60, check=True).stdout
    flat = re.sub(r"\s+", "", text)
    for words in ("存证信息", "存证编号", "时间来源", "验证方法", number):
        assert words in flat, words
