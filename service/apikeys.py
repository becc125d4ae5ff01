"""API keys: minted once, shown once, stored only as a SHA-256 hash.

A key names an account (what entries record as `registrant`) and a role. Authentication here is
transport-free: the HTTP layer extracts the bearer token and calls `KeyCache.lookup` and
`authorize`. The `api_keys` table is defined beside the log's tables only because the first
migration creates it; nothing in `ledger/` reads or writes it. What a caller may spend (a key's
writes, an address's time-stamps) is counted here too, in `TokenBuckets`.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import threading
import time
from collections.abc import Hashable
from dataclasses import dataclass

from sqlalchemy import select, update

from copyledger.ledger.entry import utc_now, valid_registrant
from copyledger.ledger.errors import (
    Forbidden,
    InvalidInput,
    NotFound,
    RateLimited,
    Unauthorized,
    said,
)
from copyledger.ledger.schema import api_keys
from copyledger.ledger.store import Store

ROLES = ("creator", "platform", "court", "admin")
KEY_PREFIX = "cl_"
RECHECK_S = 30.0  # a cached key is looked up again after this long, so revocation takes hold


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's account and role."""

    account: str
    role: str
    key_id: int


@dataclass(frozen=True)
class KeyRow:
    """A stored key, without its secret."""

    id: int
    prefix: str
    role: str
    account: str
    created_at: str
    revoked_at: str | None

    def to_dict(self) -> dict[str, object]:
        return {"id": self.id, "prefix": self.prefix, "role": self.role,
                "account": self.account, "created_at": self.created_at,
                "revoked_at": self.revoked_at}


def key_hash(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def create_key(store: Store, role: str, account: str) -> tuple[str, KeyRow]:
    """Create a key; return the secret (never stored) and its row."""
    if role not in ROLES:
        raise InvalidInput(said("role must be one of {roles}, not {role}", roles=", ".join(ROLES),
                                role=repr(role)))
    if not valid_registrant(account):  # the account is what entries record as registrant
        raise InvalidInput("account must be 1-64 characters from A-Z, a-z, 0-9, '.', '_', '-'")
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    prefix = secret[: len(KEY_PREFIX) + 6]
    created = utc_now()
    with store.engine.begin() as conn:
        res = conn.execute(api_keys.insert().values(
            key_hash=key_hash(secret), prefix=prefix, role=role, account=account,
            created_at=created))
        pk = res.inserted_primary_key
        assert pk is not None
    return secret, KeyRow(int(pk[0]), prefix, role, account, created, None)


def list_keys(store: Store, account: str | None = None) -> list[KeyRow]:
    """Every key (or one account's), oldest first, revoked ones included."""
    q = select(api_keys).order_by(api_keys.c.id)
    if account is not None:
        q = q.where(api_keys.c.account == account)
    with store.engine.connect() as conn:
        return [_row(r) for r in conn.execute(q)]


def revoke_key(store: Store, key_id: int) -> KeyRow:
    """Mark a key revoked (idempotent: a revoked key keeps its first revocation time)."""
    with store.engine.begin() as conn:
        conn.execute(update(api_keys).where(api_keys.c.id == key_id,
                                            api_keys.c.revoked_at.is_(None))
                     .values(revoked_at=utc_now()))
        r = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).first()
    if r is None:
        raise NotFound(said("no API key with id {key_id}", key_id=key_id))
    return _row(r)


def whoami(store: Store, who: Principal) -> dict[str, object]:
    """What a caller may learn about its own key: account, role, id and prefix, never the
    secret (which is not stored anyway)."""
    with store.engine.connect() as conn:
        r = conn.execute(select(api_keys).where(api_keys.c.id == who.key_id)).first()
    if r is None:  # deleted under a cached principal: it is no key any more
        raise Unauthorized("this API key no longer exists")
    row = _row(r)
    return {"account": who.account, "role": who.role, "key_id": row.id,
            "key_prefix": row.prefix, "created_at": row.created_at}


def find_key(store: Store, secret: str) -> KeyRow | None:
    with store.engine.connect() as conn:
        r = conn.execute(select(api_keys).where(api_keys.c.key_hash == key_hash(secret))).first()
    return None if r is None else _row(r)


def _row(r: object) -> KeyRow:
    return KeyRow(r.id, r.prefix, r.role, r.account, r.created_at,  # type: ignore[attr-defined]
                  r.revoked_at)  # type: ignore[attr-defined]


class KeyCache:
    """Known keys in memory (hash -> principal), so a write costs no key lookup query. Unknown
    keys go to the database, so keys minted by the CLI work on a running server; a known key is
    looked up again every `recheck` seconds, so a revoked key stops working within that time in
    every process."""

    def __init__(self, store: Store, recheck: float = RECHECK_S) -> None:
        self.store = store
        self.recheck = recheck
        self._known: dict[bytes, tuple[Principal, float]] = {}
        self._lock = threading.Lock()

    def lookup(self, secret: str) -> Principal:
        h = key_hash(secret)
        now = time.monotonic()
        hit = self._known.get(h)
        if hit is not None and now - hit[1] < self.recheck:
            return hit[0]
        row = find_key(self.store, secret)
        if row is None or row.revoked_at is not None:
            with self._lock:
                self._known.pop(h, None)
            raise Unauthorized("unknown or revoked API key")
        p = Principal(row.account, row.role, row.id)
        with self._lock:
            self._known[h] = (p, now)
        return p


def authorize(p: Principal, roles: tuple[str, ...]) -> Principal:
    """`p` itself, if its role is one of `roles` (admin may do anything)."""
    if p.role != "admin" and p.role not in roles:
        raise Forbidden(said("a {role} key may not do this; needs one of: {roles}", role=p.role,
                             roles=", ".join(roles)))
    return p


# --------------------------------------------------------------------------------------------
# Token buckets: how often one caller (an API key, a client address) may do something.
#
# State is in memory, so each API process keeps its own buckets: with N processes behind a load
# balancer a caller gets up to N times the rate. Refusals raise `RateLimited` carrying
# `retry_after` (whole seconds until a token is back), which HTTP sends as `Retry-After`.

_FORGET_AFTER = 100_000  # past this many callers, drop those whose bucket has refilled


class TokenBuckets:
    """One bucket per caller: `rate` tokens a second, holding at most `burst`; each call to
    `take` spends one. A rate of 0 or less means no limit."""

    def __init__(self, rate: float, burst: float, what: str) -> None:
        self.rate = rate
        self.burst = max(1.0, burst)
        self.what = what  # for the refusal: "writes per API key", ...
        self._buckets: dict[Hashable, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, caller: Hashable) -> None:
        """Spend one of `caller`'s tokens, or raise RateLimited (spending nothing)."""
        if self.rate <= 0:
            return
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(caller, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens < 1:
                self._buckets[caller] = (tokens, now)
                wait = max(1, math.ceil((1 - tokens) / self.rate))
                raise RateLimited(said("at most {rate:g} {what} a second (bursts of {burst:g}); "
                                       "try again in {wait} s",
                                       rate=self.rate, what=self.what, burst=self.burst, wait=wait),
                                       retry_after=wait)
            self._buckets[caller] = (tokens - 1, now)
            if len(self._buckets) > _FORGET_AFTER:
                full = self.burst / self.rate
                self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full}
