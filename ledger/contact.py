"""A claimant's contact details (address, telephone, e-mail) kept out of the log (decision D32).

A notice must give ways to reach the claimant (`ledger.claims.REQUIRED`), but the log is public
and permanent, and these are personal data. So the logged claim carries only a salted commitment
and the names of the fields given; the details and the salt are kept in an erasable table and
disclosed to the platform that filed the claim and to admins. Whoever holds a disclosure can prove
it is what was logged; once the row is erased, the commitment proves nothing about anyone.

The commitment, exactly:

    commitment = lowercase hex of SHA-256( RFC 8785 JSON of {"contact": C, "salt": S} )

where C is the object of the fields given, among `address`, `email` and `phone` (each a
non-empty string, absent when not given), and S is 32 random bytes as 64 lowercase hex
characters. The salt keeps a guess ("is it +1 555 0100?") from being checked against the log.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from copyledger.ledger import jcs
from copyledger.ledger.errors import InvalidInput

__all__ = ["CONTACT_FIELDS", "Disclosure", "commitment", "seal", "split"]

CONTACT_FIELDS = ("address", "email", "phone")
"""The claimant fields that never enter the log from D32 on, in the order entries list them."""

_HEX64 = re.compile(r"[0-9a-f]{64}")


def commitment(salt: str, contact: Mapping[str, str]) -> str:
    """The commitment to `contact` under `salt` (see the module docstring)."""
    return hashlib.sha256(jcs.canonicalize({"contact": dict(contact), "salt": salt})).hexdigest()


def split(claimant: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The claimant without its contact fields, and those fields (empty if none was given)."""
    public = {k: v for k, v in claimant.items() if k not in CONTACT_FIELDS}
    contact = {k: claimant[k] for k in CONTACT_FIELDS if k in claimant}
    return public, contact


@dataclass(frozen=True)
class Disclosure:
    """A claimant's contact details with the salt that opens the logged commitment."""

    seq: int
    salt: str
    contact: Mapping[str, str]
    commitment: str

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "contact": dict(self.contact), "salt": self.salt,
                "commitment": self.commitment}

    @classmethod
    def from_dict(cls, d: object) -> Disclosure:
        """Read a disclosure and check that it opens its commitment."""
        if not isinstance(d, dict) or set(d) != {"seq", "contact", "salt", "commitment"}:
            raise InvalidInput("a contact disclosure has exactly seq, contact, salt, commitment")
        seq, contact, salt, digest = d["seq"], d["contact"], d["salt"], d["commitment"]
        if (isinstance(seq, bool) or not isinstance(seq, int) or not isinstance(contact, dict)
                or not isinstance(salt, str) or not isinstance(digest, str)
                or not _HEX64.fullmatch(salt) or not _HEX64.fullmatch(digest)
                or not set(contact) <= set(CONTACT_FIELDS)
                or not all(isinstance(v, str) for v in contact.values())):
            raise InvalidInput("contact disclosure: bad member types")
        out = cls(seq, salt, dict(contact), digest)
        if not out.opens(digest):
            raise InvalidInput("contact disclosure: the salt and contact do not open "
                               "the commitment")
        return out

    def opens(self, logged: str) -> bool:
        """Whether this salt and contact recompute `logged`, the commitment in the entry."""
        return secrets.compare_digest(commitment(self.salt, self.contact), logged)


def seal(contact: Mapping[str, str]) -> tuple[str, str]:
    """A fresh salt for `contact` and the commitment under it."""
    salt = secrets.token_bytes(32).hex()
    return salt, commitment(salt, contact)
