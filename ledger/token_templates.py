"""Checking many RFC 3161 tokens of one TSA quickly, alongside one that was fully verified.

The audit checks one token per block, millions of them, nearly all from the same TSA key, and
a TSA's tokens differ only in a few values: the stamped digest, the serial number, genTime,
the nonce, the signingTime and messageDigest attributes and the signature. A `TokenTemplates`
keeps a token that `timestamp.verify_token` accepted and reads each new token with a small,
strict DER walk alongside it: every TLV that is not one of those values must be byte for byte
the template's, so every check of `verify_token` that depends only on them (structure,
versions, algorithms, policy, certificates, the ESS attribute, the signer's path to a root,
the tsa name) has the template's outcome; the checks that depend on the values are redone
here: the imprint is the digest, genTime is a UTC time at which every certificate of the
signer's path is valid, messageDigest is the hash of the TSTInfo as carried, and the signature
verifies over the signed attributes as carried.

Anything else (another structure, a length DER does not allow, a time written another way, a
check that fails) is not decided here: `check` answers False and the caller runs
`verify_token`, which decides and names the fault. So this can only accept what
`verify_token` accepts; it is never the one that refuses.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from asn1crypto import cms  # type: ignore[import-untyped]
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from copyledger.ledger.timestamp import (
    HASH_CLASSES,
    TimestampError,
    TokenInfo,
    load_certificate,
    validate_chain,
)

__all__ = ["TokenTemplates"]

MAX_TEMPLATES = 8
"""Distinct token shapes kept (one per TSA key and nonce/certificate choice, in practice)."""

_SAME, _VAR, _TREE, _WRAPPED = range(4)

# DER of the attribute type OIDs whose values differ from token to token (RFC 5652 11.2, 11.3).
_MESSAGE_DIGEST = bytes.fromhex("06092a864886f70d010904")
_SIGNING_TIME = bytes.fromhex("06092a864886f70d010905")

_GENERALIZED = re.compile(rb"(\d{4})(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(?:\.(\d{1,6}))?Z")
_UTC_TIME = re.compile(rb"\d{12}Z")


class _Shape(Exception):
    """The bytes do not follow the template (or are not strict DER)."""


def _tlv(buf: bytes, off: int, end: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the DER TLV at `off`, inside `end`: one-byte tags
    and minimal definite lengths only."""
    if off + 2 > end:
        raise _Shape
    tag, n = buf[off], buf[off + 1]
    if tag & 0x1F == 0x1F:
        raise _Shape
    off += 2
    if n & 0x80:
        k = n & 0x7F
        if not 0 < k <= 4 or off + k > end or buf[off] == 0:
            raise _Shape
        n = int.from_bytes(buf[off:off + k], "big")
        if n < 0x80:
            raise _Shape
        off += k
    if off + n > end:
        raise _Shape
    return tag, off, off + n


# A template node: (_SAME, tag, raw TLV) | (_VAR, tag, name) | (_TREE, tag, children, name)
# | (_WRAPPED, tag, child): an OCTET STRING holding exactly one TLV (the TSTInfo).
_Node = tuple[Any, ...]
_Spans = dict[str, tuple[int, int, int]]


def _match(node: _Node, buf: bytes, off: int, end: int, got: _Spans) -> int:
    """Walk `buf` at `off` alongside `node`, recording (start, content start, end) of each
    named value; the end of this TLV. _Shape at the first difference."""
    tag, s, e = _tlv(buf, off, end)
    if tag != node[1]:
        raise _Shape
    kind = node[0]
    if kind == _SAME:
        if buf[off:e] != node[2]:
            raise _Shape
    elif kind == _VAR:
        got[node[2]] = (off, s, e)
    elif kind == _TREE:
        pos = s
        for child in node[2]:
            pos = _match(child, buf, pos, e, got)
        if pos != e:
            raise _Shape
        if node[3]:
            got[node[3]] = (off, s, e)
    elif _match(node[2], buf, s, e, got) != e:
        raise _Shape
    return e


@dataclass
class _Raw:
    """A TLV of the template token, its children read if it is constructed."""

    tag: int
    off: int
    start: int
    end: int
    children: list[_Raw]


def _read(buf: bytes, off: int, end: int) -> _Raw:
    tag, s, e = _tlv(buf, off, end)
    node = _Raw(tag, off, s, e, [])
    if tag & 0x20:
        pos = s
        while pos < e:
            child = _read(buf, pos, e)
            node.children.append(child)
            pos = child.end
    return node


def _compile(buf: bytes, node: _Raw, names: dict[int, str], keep: set[int],
             wrapped: dict[int, _Raw]) -> _Node:
    """The template node of `node`: a named value, a walk into it (if a named value is
    inside), or its bytes."""
    key = id(node)
    if key in names and not node.children and key not in wrapped:
        return (_VAR, node.tag, names[key])
    if key in wrapped:
        return (_WRAPPED, node.tag, _compile(buf, wrapped[key], names, keep, wrapped))
    if key in keep:
        return (_TREE, node.tag, [_compile(buf, c, names, keep, wrapped)
                                  for c in node.children], names.get(key))
    return (_SAME, node.tag, buf[node.off:node.end])


def _var_names(node: _Node) -> frozenset[str]:
    """The names of the template's values (whose contents differ from token to token)."""
    if node[0] == _VAR:
        return frozenset((node[2],))
    if node[0] == _TREE:
        return frozenset().union(*map(_var_names, node[2]))
    if node[0] == _WRAPPED:
        return _var_names(node[2])
    return frozenset()


MAX_LAYOUTS = 64
"""Layouts kept per template (one per combination of value lengths: a few in practice)."""

_Layout = tuple[re.Pattern[bytes], _Spans]


def _layout(token: bytes, spans: _Spans, names: frozenset[str]) -> re.Pattern[bytes]:
    """One compiled match of every byte of `token` outside the named values' contents, each
    value's contents any bytes of the length it has here: the fixed parts compared as one C
    call, at the offsets they have in `token`."""
    cuts = sorted(spans[n][1:] for n in names if n in spans)
    pattern, pos = [], 0
    for s, e in cuts:
        pattern.append(re.escape(token[pos:s]) + b"(?s:.{%d})" % (e - s))
        pos = e
    pattern.append(re.escape(token[pos:]))
    return re.compile(b"".join(pattern))


@dataclass(frozen=True)
class _Template:
    root: _Node
    hash_name: str
    key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey
    not_before: datetime
    not_after: datetime
    layouts: dict[int, list[_Layout]] = field(default_factory=dict, compare=False)
    # Made once per template, not once per token (`__post_init__`).
    names: frozenset[str] = field(init=False, repr=False, compare=False)
    hasher: Callable[[bytes], Any] = field(init=False, repr=False, compare=False)
    algorithm: hashes.HashAlgorithm = field(init=False, repr=False, compare=False)
    ecdsa: ec.ECDSA = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        algorithm = HASH_CLASSES[self.hash_name]()
        for name, value in (("names", _var_names(self.root)),
                            ("hasher", getattr(hashlib, self.hash_name)),
                            ("algorithm", algorithm), ("ecdsa", ec.ECDSA(algorithm))):
            object.__setattr__(self, name, value)

    def _spans(self, token: bytes) -> _Spans | None:
        """Where the named values are in `token`, None if it does not follow the template.
        The walk reads nothing inside a value's contents, so a token of the same length whose
        every other byte equals, at the same offset, a token walked before walks exactly as
        that one did: its spans are reused after one compiled comparison of those bytes (a
        layout)."""
        for fixed, spans in self.layouts.get(len(token), ()):
            if fixed.fullmatch(token) is not None:
                return spans
        got: _Spans = {}
        try:
            if _match(self.root, token, 0, len(token), got) != len(token):
                return None
        except _Shape:
            return None
        if sum(map(len, self.layouts.values())) < MAX_LAYOUTS:
            self.layouts.setdefault(len(token), []).append(
                (_layout(token, got, self.names), got))
        return got

    def check(self, token: bytes, digest: bytes) -> bool | None:
        """True if the token verifies, False if a redone check fails, None if it does not
        follow this template."""
        got = self._spans(token)
        if got is None:
            return None
        _, s, e = got["imprint"]
        if not hmac.compare_digest(token[s:e], digest):
            return False
        if not (_positive_int(token, got["serial"]) and _int(token, got.get("nonce"))):
            return False
        _, s, e = got["signing_time"]
        if not _UTC_TIME.fullmatch(token, s, e) and not _GENERALIZED.fullmatch(token, s, e):
            return False
        _, s, e = got["gen_time"]
        m = _GENERALIZED.fullmatch(token, s, e)
        if m is None:
            return False
        try:
            y, mo, d, h, mi, sec = (int(x) for x in m.groups()[:6])
            micro = int((m.group(7) or b"0").ljust(6, b"0"))
            at = datetime(y, mo, d, h, mi, sec, micro, tzinfo=UTC)
        except ValueError:
            return False
        if not self.not_before <= at <= self.not_after:
            return False
        tst, _, tst_end = got["tst_info"]
        _, s, e = got["message_digest"]
        if not hmac.compare_digest(token[s:e], self.hasher(token[tst:tst_end]).digest()):
            return False
        attrs, _, attrs_end = got["signed_attrs"]
        signed = b"\x31" + token[attrs + 1:attrs_end]
        _, s, e = got["signature"]
        try:
            if isinstance(self.key, ec.EllipticCurvePublicKey):
                self.key.verify(token[s:e], signed, self.ecdsa)
            else:
                self.key.verify(token[s:e], signed, padding.PKCS1v15(), self.algorithm)
        except InvalidSignature:
            return False
        return True


def _int(buf: bytes, span: tuple[int, int, int] | None) -> bool:
    """A minimally encoded DER INTEGER's content (or no such value)."""
    if span is None:
        return True
    _, s, e = span
    if e == s:
        return False
    return e - s == 1 or not ((buf[s] == 0 and buf[s + 1] < 0x80)
                              or (buf[s] == 0xFF and buf[s + 1] >= 0x80))


def _positive_int(buf: bytes, span: tuple[int, int, int]) -> bool:
    return _int(buf, span) and buf[span[1]] < 0x80 and buf[span[1]:span[2]].strip(b"\0") != b""


def _template(token: bytes, info: TokenInfo, roots: list[x509.Certificate]) -> _Template | None:
    """The template of a token verify_token accepted, or None if it has a shape not handled
    here (then its kind is always verified in full)."""
    try:
        top = _read(token, 0, len(token))
    except (_Shape, RecursionError):
        return None
    if top.end != len(token):
        return None
    names: dict[int, str] = {}
    keep: set[int] = set()
    wrapped: dict[int, _Raw] = {}
    try:
        explicit = top.children[1]
        signed = explicit.children[0]
        encap = signed.children[2]
        octets = encap.children[1].children[0]
        if octets.tag != 0x04:
            return None
        tst = _read(token, octets.start, octets.end)
        if tst.end != octets.end or tst.tag != 0x30:
            return None
        wrapped[id(octets)] = tst
        names[id(tst)] = "tst_info"
        imprint = tst.children[2]
        serial, gen_time = tst.children[3], tst.children[4]
        if (imprint.tag, serial.tag, gen_time.tag) != (0x30, 0x02, 0x18):
            return None
        names[id(imprint.children[1])] = "imprint"
        names[id(serial)] = "serial"
        names[id(gen_time)] = "gen_time"
        for child in tst.children[5:]:
            if child.tag == 0x02:
                names[id(child)] = "nonce"
        keep.update(map(id, (top, explicit, signed, encap, encap.children[1], tst, imprint)))
        infos = signed.children[-1]
        if infos.tag != 0x31 or len(infos.children) != 1:
            return None
        si = infos.children[0]
        attrs, signature = si.children[3], si.children[5]
        if (attrs.tag, signature.tag) != (0xA0, 0x04):
            return None
        names[id(attrs)] = "signed_attrs"
        names[id(signature)] = "signature"
        keep.update(map(id, (infos, si, attrs)))
        for attr in attrs.children:
            oid = token[attr.children[0].off:attr.children[0].end]
            name = {_MESSAGE_DIGEST: "message_digest", _SIGNING_TIME: "signing_time"}.get(oid)
            if name is not None:
                values = attr.children[1]
                if len(values.children) != 1:
                    return None
                names[id(values.children[0])] = name
                keep.update((id(attr), id(values)))
        if set(names.values()) < {"message_digest", "signing_time"}:
            return None
        certs = (signed.children[3] if signed.children[3].tag == 0xA0 else None)
        carried = [load_certificate(token[c.off:c.end])
                   for c in (certs.children if certs is not None else [])]
        digest_alg = cms.ContentInfo.load(token)["content"]["signer_infos"][0][
            "digest_algorithm"]["algorithm"].native
    except (IndexError, ValueError, TimestampError):
        return None
    if str(digest_alg) not in HASH_CLASSES:
        return None
    signer = info.tsa_certificate
    path = validate_chain(signer, [c for c in carried if c != signer], roots, at=info.gen_time)
    key = signer.public_key()
    if not isinstance(key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
        return None
    return _Template(_compile(token, top, names, keep, wrapped), str(digest_alg), key,
                     max(c.not_valid_before_utc for c in path),
                     min(c.not_valid_after_utc for c in path))


class TokenTemplates:
    """Tokens verify_token accepted, as templates for checking the next ones quickly."""

    def __init__(self, roots: list[x509.Certificate]) -> None:
        self.roots = roots
        self.templates: list[_Template] = []

    def check(self, token: bytes, digest: bytes) -> bool:
        """True if `token` follows a template and verifies over `digest`; False means "not
        decided here": verify it in full (and `learn` from it if it passes)."""
        for t in self.templates:
            ok = t.check(token, digest)
            if ok is not None:
                return ok
        return False

    def learn(self, token: bytes, info: TokenInfo) -> None:
        """Keep a token verify_token accepted (giving `info`) as a template for its kind."""
        if len(self.templates) < MAX_TEMPLATES:
            t = _template(token, info, self.roots)
            if t is not None:
                self.templates.append(t)
