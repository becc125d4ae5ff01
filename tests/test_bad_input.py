"""Bad input is a 4xx problem naming the field, never a 5xx, and writes nothing (issue #10
item 7): integers past 2**63-1, non-integer claim work seqs, deeply nested multipart metadata,
invalid UTF-8 in multipart fields, bidi overrides and invisible-only text, malformed JSON to
the stand-alone notary."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from copyledger.api.app import create_app
from copyledger.service.apikeys import create_key
from copyledger.service.node import Node
from tests.helpers import sha, work_body

BIG = 2**63  # one past the largest 64-bit signed integer
HUGE = 10**40

NOTICE: dict[str, Any] = {
    "notice_type": "notice", "regime": "dmca_512c3",
    "claimant": {"name": "Ada Example", "email": "ada@example.org", "phone": "+1 555 0100",
                 "address": "1 Harbour St, Springfield", "authority": "owner"},
    "works": [{"seq": 0}],
    "targets": [{"url": "https://video.example/watch/123"}],
    "statements": {"good_faith": True, "accuracy": True, "perjury": True},
    "requested_action": "remove", "signature": "/Ada Example/",
}


@pytest.fixture
def client(reg: Node) -> Iterator[TestClient]:
    with TestClient(create_app(reg), raise_server_exceptions=False) as c:
        yield c


def key(reg: Node, role: str, account: str) -> dict[str, str]:
    secret, _ = create_key(reg.store, role, account)
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def creator(reg: Node) -> dict[str, str]:
    return key(reg, "creator", "alice")


@pytest.fixture
def platform(reg: Node) -> dict[str, str]:
    return key(reg, "platform", "tube")


def problem(r: Any, status: int, field: str = "") -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = r.json()
    if field:
        assert field in json.dumps(body), body
    return body


def size(client: TestClient) -> int:
    n: int = client.get("/v1/log").json()["tree_size"]
    return n


@pytest.mark.parametrize("number", [BIG, HUGE])
@pytest.mark.parametrize("path", [
    "/v1/entries/{n}", "/v1/entries/{n}/proof", "/v1/entries/0/proof?tree_size={n}",
    "/v1/entries/{n}/bundle", "/v1/entries/{n}/certificate", "/v1/blocks/{n}",
    "/v1/works/{n}/history", "/v1/claims/{n}", "/v1/log/consistency?from={n}",
    "/v1/log/consistency?from=0&to={n}",
])
def test_huge_integers_in_paths_are_422(client: TestClient, creator: dict[str, str],
                                        path: str, number: int) -> None:
    client.post("/v1/works", json=work_body(0), headers=creator)
    problem(client.get(path.format(n=number)), 422)


def test_largest_integer_is_still_a_plain_not_found(client: TestClient) -> None:
    problem(client.get(f"/v1/entries/{2**63 - 1}"), 404)


def test_huge_integers_in_bodies_are_422_and_write_nothing(
    client: TestClient, creator: dict[str, str], platform: dict[str, str]
) -> None:
    client.post("/v1/works", json=work_body(0), headers=creator)
    for number in (BIG, HUGE):
        problem(client.post("/v1/transfers", headers=creator, json={
            "work_seq": number, "to": "bob", "transfer_type": "assignment"}), 422, "work_seq")
        problem(client.post("/v1/evidence", headers=creator, json={
            "sha256": sha(1), "captured_at": "2026-11-20T10:00:00Z",
            "capture_method": "screenshot", "description": "x", "related_work": number}),
            422, "related_work")
        problem(client.post("/v1/works", headers=creator, json=work_body(2, size=number)),
                422, "size")
        problem(client.post("/v1/claims", headers=platform, json={
            **NOTICE, "notice_type": "counter_notice", "refers_to": number}), 422, "refers_to")
        problem(client.post("/v1/claims", headers=platform,
                            json={**NOTICE, "works": [{"seq": number}]}), 422, "works")
        problem(client.post("/v1/claims/check", headers=platform, json={
            "claimant": "alice", "work_seq": number}), 422, "work_seq")
        body, ctype = multipart({"claimant": b"alice", "work_seq": str(number).encode()})
        problem(client.post("/v1/claims/check", headers={**platform, "content-type": ctype},
                            content=body), 422, "work_seq")
    assert size(client) == 1


@pytest.mark.parametrize("seq", ["0", "abc", 1.5, [0], {"a": 1}, True, -1])
def test_claim_work_seq_must_be_an_integer(client: TestClient, creator: dict[str, str],
                                           platform: dict[str, str], seq: object) -> None:
    client.post("/v1/works", json=work_body(0), headers=creator)
    problem(client.post("/v1/claims", headers=platform, json={**NOTICE, "works": [{"seq": seq}]}),
            422, "works[0].seq")
    assert size(client) == 1


@pytest.mark.parametrize("value", ["²", "٣", "1e3", " 1"])
def test_multipart_claim_check_work_seq_must_be_digits(
    client: TestClient, creator: dict[str, str], platform: dict[str, str], value: str
) -> None:
    client.post("/v1/works", json=work_body(0), headers=creator)
    body, ctype = multipart({"claimant": b"alice", "work_seq": value.encode()})
    problem(client.post("/v1/claims/check", headers={**platform, "content-type": ctype},
                        content=body), 422, "work_seq")


def test_deep_multipart_metadata_is_refused_before_parsing(
    client: TestClient, creator: dict[str, str]
) -> None:
    for deep in ("[" * 3000 + "]" * 3000, '{"a":' * 3000 + "1" + "}" * 3000,
                 '{"a": ' + "[" * 100_000):
        r = client.post("/v1/works", headers=creator,
                        files={"file": ("a.txt", b"hello", "text/plain")},
                        data={"title": "T", "creators": ["A"], "work_type": "text",
                              "metadata": deep})
        problem(r, 422, "metadata")
    # Brackets inside strings are not nesting.
    ok = client.post("/v1/works", headers=creator,
                     files={"file": ("a.txt", b"hello", "text/plain")},
                     data={"title": "T", "creators": ["A"], "work_type": "text",
                           "metadata": json.dumps({"note": "[[[[[[[[{{{{{{\\\"", "a": [[1]]})})
    assert ok.status_code == 201, ok.text
    assert size(client) == 1


def test_a_huge_integer_in_multipart_metadata_is_422(client: TestClient,
                                                     creator: dict[str, str]) -> None:
    """An integer past Python's 4,300 digits is a ValueError, not a JSONDecodeError, to
    `json.loads`: refused as the metadata's, not a 500."""
    r = client.post("/v1/works", headers=creator,
                    files={"file": ("a.txt", b"hello", "text/plain")},
                    data={"title": "T", "creators": ["A"], "work_type": "text",
                          "metadata": '{"a": ' + "1" * 5000 + "}"})
    problem(r, 422, "metadata")
    assert size(client) == 0


def test_the_media_type_of_a_form_is_read_case_insensitively(
        client: TestClient, creator: dict[str, str], platform: dict[str, str]) -> None:
    """`Multipart/Form-Data` is a form (RFC 9110: the type is case-insensitive), for the body
    limit and the routes alike: before, the limit gave it an upload's 2 GiB while the route
    took it for JSON and read the whole body into memory before refusing it."""
    body = b"--x\r\n" + b"y" * 300_000
    for path, who in (("/v1/works", creator), ("/v1/claims/check", platform)):
        r = client.post(path, headers={**who, "Content-Type": "Multipart/Form-Data; boundary=x"},
                        content=body)
        problem(r, 400)
        # (read as a form, streamed; before: 413 once the whole body was in memory)
        assert r.json()["detail"].startswith("malformed multipart body"), r.text
    form = (b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n'
            b"Content-Type: text/plain\r\n\r\nhello\r\n")
    for field, value in (("title", "T"), ("creators", "A"), ("work_type", "text")):
        form += (f'--x\r\nContent-Disposition: form-data; name="{field}"\r\n\r\n'
                 f"{value}\r\n").encode()
    ok = client.post("/v1/works", content=form + b"--x--\r\n",
                     headers={**creator, "Content-Type": "MULTIPART/form-data; boundary=x"})
    assert ok.status_code == 201, ok.text


@pytest.mark.parametrize("end", [b"", b"--x", b"--x\r\n", b"--xx\r\n"])
def test_a_form_cut_short_before_its_closing_boundary_is_400_and_writes_nothing(
        client: TestClient, creator: dict[str, str], end: bytes) -> None:
    """A form whose body ends before `--boundary--` may hold a file cut short: refused, not
    the hash of what arrived recorded for good. In the request's language."""
    form = b""
    for field, value in (("title", "T"), ("creators", "A"), ("work_type", "text")):
        form += (f'--x\r\nContent-Disposition: form-data; name="{field}"\r\n\r\n'
                 f"{value}\r\n").encode()
    form += (b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n'
             b"Content-Type: text/plain\r\n\r\nhello, and then\r\n" + end)
    r = client.post("/v1/works", content=form, headers={
        **creator, "Content-Type": "multipart/form-data; boundary=x", "Accept-Language": "zh-CN"})
    body = problem(r, 400)
    assert "请求体在结束边界之前就结束了" in body["detail"] and "multipart" in body["title"], body
    assert size(client) == 0


def test_deep_json_body_is_422(client: TestClient, creator: dict[str, str]) -> None:
    body = b'{"sha256": "' + sha(1).encode() + b'", "metadata": ' + b'{"a":' * 5000 + b"1" \
        + b"}" * 5000 + b"}"
    problem(client.post("/v1/works", headers={**creator, "content-type": "application/json"},
                        content=body), 422)
    assert size(client) == 0


def multipart(fields: dict[str, bytes], boundary: str = "b0undary") -> tuple[bytes, str]:
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n'
        f"Content-Type: text/plain\r\n\r\n".encode() + b"hello\r\n"
    ]
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                     .encode() + value + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), \
        f"multipart/form-data; boundary={boundary}"


@pytest.mark.parametrize("field", ["title", "creators", "license", "metadata", "work_type"])
def test_invalid_utf8_in_multipart_fields_is_422(client: TestClient, creator: dict[str, str],
                                                 field: str) -> None:
    fields = {"title": "Café".encode(), "creators": b"Ada", "work_type": b"text"}
    fields[field] = b"caf\xe9 \xff\xfe"  # Latin-1, not UTF-8
    body, ctype = multipart(fields)
    r = client.post("/v1/works", headers={**creator, "content-type": ctype}, content=body)
    problem(r, 422, field)
    body, ctype = multipart({"title": "Café".encode(), "creators": b"Ada", "work_type": b"text"})
    r = client.post("/v1/works", headers={**creator, "content-type": ctype}, content=body)
    assert r.status_code == 201 and client.get(f"/v1/entries/{r.json()['seq']}").json()[
        "entry"]["title"] == "Café"


def test_invalid_utf8_in_multipart_claim_check_is_422(client: TestClient,
                                                      platform: dict[str, str]) -> None:
    body, ctype = multipart({"claimant": b"\xff"})
    problem(client.post("/v1/claims/check", headers={**platform, "content-type": ctype},
                        content=body), 422, "claimant")


@pytest.mark.parametrize("text", [
    "evil\u202egpj.exe", "a\u202ab", "a\u202bb", "a\u202cb", "a\u202db",
    "a\u2066b", "a\u2067b", "a\u2068b", "a\u2069b",
    "\u200b", "\u2060", "\ufeff", " \u200b\u2060\ufeff\t ", "\u200b \u200c\u200d",
])
def test_bidi_overrides_and_invisible_text_are_422(
    client: TestClient, creator: dict[str, str], platform: dict[str, str], text: str
) -> None:
    problem(client.post("/v1/works", headers=creator, json=work_body(1, title=text)), 422,
            "title")
    problem(client.post("/v1/works", headers=creator,
                        json=work_body(2, creators=["Ada", text])), 422, "creators[1]")
    client.post("/v1/works", json=work_body(0), headers=creator)
    problem(client.post("/v1/claims", headers=platform, json={
        **NOTICE, "claimant": {**NOTICE["claimant"], "name": text}}), 422, "claimant.name")
    assert size(client) == 1


def test_visible_text_with_invisible_characters_is_still_accepted(
    client: TestClient, creator: dict[str, str]
) -> None:
    # A zero-width joiner inside an emoji sequence, a right-to-left title without overrides.
    for i, title in enumerate(["👩\u200d💻 at work", "שלום עולם", "a\u200bb"]):
        r = client.post("/v1/works", headers=creator, json=work_body(i, title=title))
        assert r.status_code == 201, r.text


def test_tile_path_with_an_absurd_index_is_404(client: TestClient) -> None:
    problem(client.get("/tile/0/" + "x001/" * 2000 + "000"), 404)
    problem(client.get("/tile/entries/" + "x999/" * 8 + "999"), 404)


@pytest.fixture
def notary(tmp_path: Path) -> TestClient:
    from copyledger.api.notary_app import create_notary_app
    from copyledger.notary.signer import CheckpointGuard
    from copyledger.notary.tsa import TimeStampAuthority
    from copyledger.service.node import init_notary_keys, load_signer, load_tsa_identity
    from copyledger.service.settings import load

    s = load(tmp_path / "n", origin="n.example/log")
    init_notary_keys(s)
    app = create_notary_app(load_signer(s), TimeStampAuthority(load_tsa_identity(s)),
                            "test-notary-token-0123456789",
                            checkpoints=CheckpointGuard(s.origin, s.last_checkpoint_path))
    return TestClient(app, raise_server_exceptions=False)


@pytest.mark.parametrize("path", ["/notary/v1/sign", "/notary/v1/timestamp-digest"])
@pytest.mark.parametrize("body", [b"{not json", b"\xff\xfe", b"", b"[" * 100_000, b"1e999999"])
def test_notary_refuses_malformed_json_with_422(notary: TestClient, path: str,
                                                body: bytes) -> None:
    h = {"Authorization": "Bearer test-notary-token-0123456789",
         "content-type": "application/json"}
    problem(notary.post(path, content=body, headers=h), 422)


def test_notary_refuses_bad_consistency_and_digest_with_422(notary: TestClient) -> None:
    h = {"Authorization": "Bearer test-notary-token-0123456789"}
    root = base64.b64encode(bytes(32)).decode()
    msg = base64.b64encode(f"n.example/log\n5\n{root}\n".encode()).decode()
    for consistency in ({"old_size": HUGE, "old_root": "00" * 32, "proof": []},
                        {"old_size": 1, "old_root": "zz", "proof": [1]}, [1], "x"):
        r = notary.post("/notary/v1/sign", json={"message": msg, "consistency": consistency},
                        headers=h)
        assert r.status_code < 500, r.text
    for digest in ("", base64.b64encode(b"short").decode(), base64.b64encode(bytes(1000)).decode()):
        problem(notary.post("/notary/v1/timestamp-digest", json={"digest": digest}, headers=h),
                422)


@pytest.mark.parametrize("path", ["/notary/v1/sign", "/notary/v1/timestamp-digest"])
@pytest.mark.parametrize("text", ["é", "AAAA\u00e9", "\uff21\uff21\uff21\uff21"])
def test_notary_refuses_base64_that_is_not_ascii_with_422(notary: TestClient, path: str,
                                                          text: str) -> None:
    """b64decode raises a plain ValueError (not binascii.Error) on text not ASCII: a 500."""
    key = "message" if path.endswith("/sign") else "digest"
    body = problem(notary.post(path, json={key: text},
                               headers={"Authorization": "Bearer test-notary-token-0123456789"}),
                   422)
    assert body["detail"] == f"{key} is not base64"


def claim_check_note(size: str, digest: str = base64.b64encode(bytes(32)).decode()) -> str:
    return f"copyledger/claim-check/v1\nn.example/log\n{size}\n{digest}\n"


NOT_A_SIZE = ["\u00b2", "\u0663", "1" * 21, "9" * 5000, "", "-1", "+1", " 1"]


@pytest.mark.parametrize("size", NOT_A_SIZE)
def test_a_claim_check_note_with_a_size_not_ascii_digits_is_invalid(size: str) -> None:
    """"²".isdigit() is true and int() refuses it; "٣" int() reads as 3; int() of 5,000
    digits raises: each a ValueError where an InvalidInput is due, or a note read wrong."""
    from copyledger.ledger import claims
    from copyledger.ledger.errors import InvalidInput

    assert claims.parse_check_note_text(claim_check_note("18446744073709551615"))[1] == 2**64 - 1
    with pytest.raises(InvalidInput, match="bad size or digest"):
        claims.parse_check_note_text(claim_check_note(size))


def test_a_claim_check_note_with_base64_not_ascii_is_invalid() -> None:
    from copyledger.ledger import claims
    from copyledger.ledger.errors import InvalidInput

    with pytest.raises(InvalidInput, match="bad base64"):  # not b64decode's plain ValueError
        claims.parse_check_note_text(claim_check_note("5", "\u00e9" * 44))


@pytest.mark.parametrize("text", [*(claim_check_note(s) for s in NOT_A_SIZE),
                                  claim_check_note("5", "\u00e9" * 44)])
def test_notary_refuses_a_claim_check_note_it_cannot_read_with_422(notary: TestClient,
                                                                   text: str) -> None:
    message = base64.b64encode(text.encode()).decode()
    body = problem(notary.post("/notary/v1/sign", json={"message": message},
                               headers={"Authorization": "Bearer test-notary-token-0123456789"}),
                   422)
    assert body["detail"].startswith("refused: only checkpoints, block notes and claim-check")
