"""Idempotent retries (decision D41): the first successful answer to a write sent with an
`Idempotency-Key` is kept, per account, for `Settings.idempotency_ttl_s`; a retry with the same
key and the same request gets that answer again and writes nothing. The same key with another
request is refused (InvalidInput, 422), as the IETF Idempotency-Key draft says: it is a client's
mistake, and replaying the other answer would hide it.

Only successes are kept: a refused request wrote nothing, so running it again is safe. Rows
past their lifetime are ignored at once and deleted lazily, at most once a minute, by writers.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from copyledger.ledger.errors import InvalidInput, said
from copyledger.ledger.schema import idempotency_keys as table
from copyledger.ledger.store import Store

HEADER = "Idempotency-Key"
MAX_KEY = 255
_KEY = re.compile(r"[\x21-\x7e]{1,255}")  # visible ASCII: a UUID, a ULID, a file's hash…
_SWEEP_EVERY_S = 60


@dataclass(frozen=True)
class Answer:
    """A kept answer: its status and the JSON body as sent."""

    status: int
    body: bytes


def check_key(key: str, field: str = HEADER) -> str:
    """The key if it is 1-255 visible ASCII characters, else InvalidInput naming `field`."""
    if not _KEY.fullmatch(key):
        msg = f"must be 1-{MAX_KEY} visible ASCII characters (a UUID, say)"
        raise InvalidInput(said("{field}: {msg}",
                                field=field, msg=msg), errors=[{"field": field, "message": msg}])
    return key


def request_hash(*parts: bytes) -> str:
    """What identifies a request under its key: the SHA-256 of its parts (path, query, body),
    each length-prefixed so no two different requests can run together into the same bytes."""
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "big"))
        h.update(p)
    return h.hexdigest()


class Keys:
    """The kept answers of one registry."""

    def __init__(self, store: Store, ttl_s: int) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self._swept = 0.0

    def recall(self, account: str, key: str, request_sha256: str) -> Answer | None:
        """The kept answer to this key, if it is still alive and was for this very request;
        InvalidInput if it answered another request."""
        q = select(table.c.request_sha256, table.c.status, table.c.answer, table.c.created).where(
            table.c.account == account, table.c.key == key)
        with self.store.engine.connect() as conn:
            row = conn.execute(q).first()
        if row is None or row.created <= time.time() - self.ttl_s:
            return None
        if row.request_sha256 != request_sha256:
            msg = ("this key was used with a different request; use a new key for a new "
                   "request")
            raise InvalidInput(said("{header}: {msg}",
                                    header=HEADER, msg=msg),
                                    errors=[{"field": HEADER, "message": msg}])
        return Answer(int(row.status), row.answer.encode())

    def keep(self, account: str, key: str, request_sha256: str, answer: Answer) -> None:
        """Keep a successful answer (the first one wins if another process kept one first)."""
        now = time.time()
        with self.store.engine.begin() as conn:
            if now - self._swept > _SWEEP_EVERY_S:
                self._swept = now
                conn.execute(delete(table).where(table.c.created <= int(now) - self.ttl_s))
            conn.execute(delete(table).where(  # an expired row under this very key
                table.c.account == account, table.c.key == key,
                table.c.created <= int(now) - self.ttl_s))
        try:
            with self.store.engine.begin() as conn:
                conn.execute(table.insert().values(
                    account=account, key=key, request_sha256=request_sha256,
                    status=answer.status, answer=answer.body.decode(), created=int(now)))
        except IntegrityError:
            pass  # kept by a concurrent request with this key (another process): it stands
