"""Takedown notices and counter-notices: what each legal regime requires a notice to contain.

A notice missing what its regime requires is refused, with the missing fields named, before
anything is written: a platform that acts on an incomplete notice may lose its safe harbour, and
the history of a dispute is itself evidence, so it must hold only complete notices.

The requirements are summarised from the texts, field by field:
- DMCA, 17 U.S.C. 512(c)(3)(A) (notice) and 512(g)(3) (counter-notice);
- EU Digital Services Act, Regulation (EU) 2022/2065, Art. 16(2) (notice);
- China, E-commerce Law Art. 42 (notice with preliminary evidence) and Art. 43 (declaration of
  non-infringement), and the Regulations on the Protection of the Right of Information Network
  Dissemination, Art. 14 (notice) and Art. 16 (counter-notice).
This is a completeness check, not legal advice: it cannot tell whether statements are true.
"""

from __future__ import annotations

from typing import Any

from copyledger.ledger.contact import CONTACT_FIELDS

REGIMES = ("dmca_512c3", "eu_dsa_art16", "cn_ecommerce_art42", "cn_indr_art14")
NOTICE_TYPES = ("notice", "counter_notice")
ACTIONS = ("remove", "disable_access", "restore", "other")
AUTHORITIES = ("owner", "exclusive_licensee", "agent")

# For each (regime, notice type): the fields that must be present (and true, for statements).
_WORKS = "works"
_TARGETS = "targets"
REQUIRED: dict[tuple[str, str], tuple[str, ...]] = {
    ("dmca_512c3", "notice"): (
        "signature",  # (i) physical or electronic signature of the person authorised to act
        _WORKS,  # (ii) identification of the copyrighted work(s)
        _TARGETS,  # (iii) identification of the infringing material and where it is
        "claimant.name", "claimant.address", "claimant.phone", "claimant.email",  # (iv)
        "claimant.authority",
        "statements.good_faith",  # (v) good-faith belief the use is not authorised
        "statements.accuracy",  # (vi) the notice is accurate ...
        "statements.perjury",  # ... and, under penalty of perjury, authorised to act
    ),
    ("dmca_512c3", "counter_notice"): (
        "refers_to", "signature",  # 512(g)(3)(A)
        _TARGETS,  # (B) the material removed and where it appeared
        "statements.mistake", "statements.perjury",  # (C) removed by mistake, under perjury
        "claimant.name", "claimant.address", "claimant.phone",  # (D)
        "statements.jurisdiction_consent",  # (D) consent to jurisdiction, accepts service
    ),
    ("eu_dsa_art16", "notice"): (
        "substantiation",  # (a) why the information is illegal content
        _TARGETS,  # (b) its exact electronic location (URL)
        "claimant.name", "claimant.email",  # (c)
        "statements.accuracy",  # (d) bona fide belief that the notice is accurate and complete
    ),
    ("eu_dsa_art16", "counter_notice"): (
        "refers_to", "substantiation", "claimant.name", "claimant.email",
    ),
    ("cn_ecommerce_art42", "notice"): (
        "claimant.name", "claimant.contact", _WORKS, _TARGETS,
        "substantiation",  # preliminary evidence of infringement
        "requested_action",  # necessary measures: delete, block, disconnect links...
    ),
    ("cn_ecommerce_art42", "counter_notice"): (  # Art. 43: declaration of non-infringement
        "refers_to", "claimant.name", "claimant.contact", "substantiation",
    ),
    ("cn_indr_art14", "notice"): (
        "claimant.name", "claimant.address", "claimant.contact",  # (1)
        _WORKS, _TARGETS,  # (2) name and network address of the infringing works
        "substantiation",  # (3) preliminary proof of infringement
    ),
    ("cn_indr_art14", "counter_notice"): (  # Art. 16
        "refers_to", "claimant.name", "claimant.address", "claimant.contact", _TARGETS,
        "substantiation",
    ),
}


def _present(claim: dict[str, Any], path: str) -> bool:
    c = claim.get("claimant")
    # From D32 on, a logged claim names the contact fields it was given (`contact_fields`) and
    # commits to them; their values are kept off the log (`ledger.contact`).
    given = c.get("contact_fields") if isinstance(c, dict) else None
    committed = set(given) if isinstance(given, list) else set()
    if path == "claimant.contact":  # any way to reach the claimant
        return isinstance(c, dict) and (bool(committed) or any(
            c.get(k) for k in CONTACT_FIELDS))
    if path.removeprefix("claimant.") in committed:
        return True
    node: Any = claim
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    if path.startswith("statements."):
        return node is True
    if isinstance(node, (list, str)):
        return len(node) > 0
    return node is not None


def missing_fields(claim: dict[str, Any]) -> list[str]:
    """The fields the claim's regime requires that it lacks (empty when complete). Statements
    must be present and true."""
    key = (claim.get("regime"), claim.get("notice_type"))
    required = REQUIRED.get(key)  # type: ignore[arg-type]
    if required is None:
        return []  # an unknown regime is the schema validator's to report
    return [f for f in required if not _present(claim, f)]


CHECK_NOTE_HEADER = "copyledger/claim-check/v1"


def check_note_text(origin: str, tree_size: int, answer_sha256: bytes) -> str:
    """The signed statement behind a claim-check answer: this log, at this size, gave the
    answer whose RFC 8785 JSON (without its `signature`) has this SHA-256."""
    import base64

    return (f"{CHECK_NOTE_HEADER}\n{origin}\n{tree_size}\n"
            f"{base64.b64encode(answer_sha256).decode()}\n")


def parse_check_note_text(text: str) -> tuple[str, int, bytes]:
    import base64
    import binascii

    from copyledger.ledger.errors import InvalidInput

    lines = text.split("\n")
    if len(lines) != 5 or lines[0] != CHECK_NOTE_HEADER or lines[4] != "":
        raise InvalidInput("not a claim-check note")
    try:
        digest = base64.b64decode(lines[3], validate=True)
    except (binascii.Error, ValueError):  # ValueError: text not ASCII
        raise InvalidInput("claim-check note: bad base64") from None
    size = lines[2]  # ASCII digits, at most a uint64's 20: "²".isdigit() is true, int() refuses
    if not (size.isascii() and size.isdigit() and len(size) <= 20) or len(digest) != 32:
        raise InvalidInput("claim-check note: bad size or digest")
    return lines[1], int(size), digest
