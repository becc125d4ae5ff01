"""The C2SP tlog-proof text form (c2sp.org/tlog-proof@v1): index, inclusion proof and the signed
checkpoint in one offline-verifiable file. Our `extra` line carries the entry's canonical bytes,
so the leaf hash needs nothing else: leaf = SHA-256(0x00 || base64-decode(extra))."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from copyledger.ledger.errors import InvalidInput, said

_INDEX = re.compile(r"0|[1-9][0-9]*", re.ASCII)

HEADER = "c2sp.org/tlog-proof@v1"


@dataclass(frozen=True)
class TlogProof:
    index: int
    proof: list[bytes]
    checkpoint: str  # the signed note, verbatim
    extra: bytes | None = None


def format_tlog_proof(p: TlogProof) -> str:
    lines = [HEADER]
    if p.extra is not None:
        lines.append("extra " + base64.b64encode(p.extra).decode())
    lines.append(f"index {p.index}")
    lines += [base64.b64encode(h).decode() for h in p.proof]
    return "\n".join(lines) + "\n\n" + p.checkpoint


def parse_tlog_proof(text: str) -> TlogProof:
    head, sep, checkpoint = text.partition("\n\n")
    if not sep or not checkpoint:
        raise InvalidInput("tlog-proof: no blank line before the checkpoint")
    lines = head.split("\n")
    if lines[0] != HEADER:
        raise InvalidInput(said("tlog-proof: first line must be {header!r}", header=HEADER))
    pos = 1
    extra = None
    try:
        if pos < len(lines) and lines[pos].startswith("extra "):
            extra = base64.b64decode(lines[pos][6:], validate=True)
            pos += 1
        if pos >= len(lines) or not lines[pos].startswith("index "):
            raise InvalidInput("tlog-proof: missing 'index' line")
        digits = lines[pos][6:]
        if not _INDEX.fullmatch(digits):  # ASCII decimal, no leading zero (str.isdigit takes "٣")
            raise InvalidInput(said("tlog-proof: bad index {digits!r}", digits=digits))
        proof = [base64.b64decode(x, validate=True) for x in lines[pos + 1 :]]
    except binascii.Error:
        raise InvalidInput("tlog-proof: bad base64") from None
    if any(len(h) != 32 for h in proof):
        raise InvalidInput("tlog-proof: every proof line must be a 32-byte hash")
    return TlogProof(index=int(digits), proof=proof, checkpoint=checkpoint, extra=extra)
