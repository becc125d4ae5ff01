"""The audit's quick token check (D49): it accepts only what verify_token accepts. Every
token it is shown after learning one is either checked the quick way and verifies in full
too, or left to verify_token."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from copyledger.ledger.errors import CopyledgerError
from copyledger.ledger.timestamp import load_pem_certs, verify_token
from copyledger.ledger.token_templates import TokenTemplates
from copyledger.notary.tsa import TimeStampAuthority, create_tsa_chain, load_tsa


@pytest.fixture(scope="module")
def tsa(tmp_path_factory: pytest.TempPathFactory) -> tuple[TimeStampAuthority, bytes]:
    paths = create_tsa_chain(tmp_path_factory.mktemp("tsa"), "example.org/log")
    return TimeStampAuthority(load_tsa(paths.root.parent)), paths.root.read_bytes()


def digest(i: int) -> bytes:
    return hashlib.sha256(b"block %d" % i).digest()


def learned(tsa: TimeStampAuthority, roots: bytes) -> TokenTemplates:
    t = TokenTemplates(load_pem_certs(roots))
    first = tsa.timestamp_digest(digest(0))
    assert not t.check(first, digest(0))  # nothing learned yet: verify_token decides
    t.learn(first, verify_token(first, digest(0), roots))
    return t


def test_later_tokens_of_the_same_tsa_are_checked_quickly(
        tsa: tuple[TimeStampAuthority, bytes]) -> None:
    authority, roots = tsa
    t = learned(authority, roots)
    assert len(t.templates) == 1
    for i in range(1, 20):
        assert t.check(authority.timestamp_digest(digest(i)), digest(i))
    token = authority.timestamp_digest(digest(1))
    assert not t.check(token, digest(2))  # another block's token
    assert not t.check(token + b"\0", digest(1)) and not t.check(token[:-1], digest(1))


def test_every_changed_byte_is_refused_or_verifies_in_full(
        tsa: tuple[TimeStampAuthority, bytes]) -> None:
    """Soundness, byte by byte: wherever a token is changed, the quick check either refuses
    it or verify_token accepts it too (a byte of an unchecked value, say)."""
    authority, roots = tsa
    t = learned(authority, roots)
    token = authority.timestamp_digest(digest(5))
    for at in range(len(token)):
        for change in (0x01, 0x80):
            forged = token[:at] + bytes([token[at] ^ change]) + token[at + 1:]
            if t.check(forged, digest(5)):
                verify_token(forged, digest(5), roots)


def test_a_time_outside_the_certificates_goes_to_the_full_check(
        tsa: tuple[TimeStampAuthority, bytes]) -> None:
    authority, roots = tsa
    t = learned(authority, roots)
    cert = authority.identity.certificate
    late = TimeStampAuthority(authority.identity,
                              clock=lambda: cert.not_valid_after_utc - timedelta(seconds=1))
    assert t.check(late.timestamp_digest(digest(3)), digest(3))
    # The template's window is the path's: a time after it is left to verify_token.
    tmpl = t.templates[0]
    assert tmpl.not_after <= cert.not_valid_after_utc
    object.__setattr__(tmpl, "not_after", datetime(2000, 1, 1, tzinfo=UTC))
    token = authority.timestamp_digest(digest(4))
    assert not t.check(token, digest(4))
    verify_token(token, digest(4), roots)  # still valid: the full check decides


def test_another_tsa_is_not_taken_for_the_learned_one(
        tsa: tuple[TimeStampAuthority, bytes], tmp_path: Path) -> None:
    authority, roots = tsa
    t = learned(authority, roots)
    paths = create_tsa_chain(tmp_path / "other", "evil.example/log")
    stranger = TimeStampAuthority(load_tsa(paths.root.parent)).timestamp_digest(digest(7))
    assert not t.check(stranger, digest(7))
    with pytest.raises(CopyledgerError):
        verify_token(stranger, digest(7), roots)


def test_a_token_read_by_a_known_layout_still_has_every_byte_checked(
        tsa: tuple[TimeStampAuthority, bytes]) -> None:
    """D61: once a token has been walked, tokens of its length whose bytes outside the
    values equal it reuse its walk (a layout). Every changed byte of such a token is still
    refused, or verify_token accepts it too."""
    authority, roots = tsa
    t = learned(authority, roots)
    token = authority.timestamp_digest(digest(6))
    assert t.check(token, digest(6))
    layouts = t.templates[0].layouts
    assert layouts.get(len(token))  # its layout is kept
    for at in range(len(token)):
        for change in (0x01, 0x80):
            forged = token[:at] + bytes([token[at] ^ change]) + token[at + 1:]
            if t.check(forged, digest(6)):
                verify_token(forged, digest(6), roots)
    assert t.check(token, digest(6))  # read by its layout again
