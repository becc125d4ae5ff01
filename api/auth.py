"""API keys: minted once, shown once, stored only as a SHA-256 hash."""

from __future__ import annotations

import hashlib
import secrets
import threading
from dataclasses import dataclass

from fastapi import Request

from copyledger.ledger.entry import utc_now, valid_registrant
from copyledger.ledger.errors import Forbidden, InvalidInput, Unauthorized
from copyledger.ledger.store import KeyRow, Store

ROLES = ("creator", "platform", "court", "admin")
KEY_PREFIX = "cl_"


@dataclass(frozen=True)
class Principal:
    account: str
    role: str
    key_id: int


def key_hash(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def mint_key(store: Store, role: str, account: str) -> tuple[str, KeyRow]:
    """Create a key; return the secret (never stored) and its row."""
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if not valid_registrant(account):  # the account is what entries record as registrant
        raise InvalidInput("account must be 1-64 characters from A-Z, a-z, 0-9, '.', '_', '-'")
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    prefix = secret[: len(KEY_PREFIX) + 6]
    created = utc_now()
    kid = store.add_key(key_hash(secret), prefix, role, account, created)
    return secret, KeyRow(kid, prefix, role, account, created, None)


class KeyCache:
    """Known keys in memory (hash -> principal), so a write costs no key lookup query.
    Unknown keys go to the database, so keys minted by the CLI work on a running server."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._known: dict[bytes, Principal] = {}
        self._lock = threading.Lock()

    def lookup(self, key: str) -> Principal:
        h = key_hash(key)
        p = self._known.get(h)
        if p is not None:
            return p
        row = self.store.find_key(h)
        if row is None or row.revoked_at is not None:
            raise Unauthorized("unknown or revoked API key")
        p = Principal(row.account, row.role, row.id)
        with self._lock:
            self._known[h] = p
        return p


def require(request: Request, *roles: str) -> Principal:
    """The caller's principal, if its key has one of `roles` (admin may do anything)."""
    return check(request.app.state.keys, request.headers.get("authorization", ""), roles)


def check(cache: KeyCache, header: str, roles: tuple[str, ...]) -> Principal:
    """As `require`, from the Authorization header's value."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("send 'Authorization: Bearer <api key>'; mint one with "
                           "`copyledger keys create --role ...`")
    p = cache.lookup(token.strip())
    if p.role != "admin" and p.role not in roles:
        raise Forbidden(f"a {p.role} key may not do this; needs one of: {', '.join(roles)}")
    return p
