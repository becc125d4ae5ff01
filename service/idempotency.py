"""Idempotent retries (decision D41): the first successful answer to a write sent with an
`Idempotency-Key` is kept, per account, for `Settings.idempotency_ttl_s`; a retry with the same
key and the same request gets that answer again and writes nothing. The same key with another
request is refused (InvalidInput, 422), as the IETF Idempotency-Key draft says: it is a client's
mistake, and replaying the other answer would hide it.

Successes are kept, and so is the 503 of a write whose fate is unknown (`Uncertain`: it may
have been recorded, so a retry must not write it again); a refused request wrote nothing, so
its key is freed and running it again is safe. Rows past their lifetime are ignored at once
and deleted lazily, at most once a minute, by writers.

The key is claimed in the database before the write (decision D59): with `serve --workers N` a
retry that reaches another process while the first request is still running waits for its
answer (or is told 409, in progress) instead of writing a second entry.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from copyledger.ledger.errors import Conflict, InvalidInput, said
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


def _other_request() -> InvalidInput:
    msg = "this key was used with a different request; use a new key for a new request"
    return InvalidInput(said("{header}: {msg}", header=HEADER, msg=msg),
                        errors=[{"field": HEADER, "message": msg}])


def _in_flight() -> InFlight:
    return InFlight(said("{header}: a request with this key is still in progress; retry "
                         "shortly to get its answer", header=HEADER))


class InFlight(Conflict):
    """The key's first request is still running (in this process or another): nothing was
    written for this one; retry shortly and get its answer."""


IN_FLIGHT = 0  # `status` of a claimed key whose request has not answered yet (D59)
ABANDONED_S = 300  # a claim this old was left by a process that died mid-request (D59)


class Keys:
    """The kept answers of one registry, and the claims of keys whose first request is still
    running: a key is claimed by inserting its row (status `IN_FLIGHT`) before the write, under
    the table's primary key, so only one request with a key runs, whichever process it reached
    (D59)."""

    def __init__(self, store: Store, ttl_s: int) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self._swept = 0.0

    def claim(self, account: str, key: str, request_sha256: str) -> Answer | None:
        """None if the key is now this request's to run (then `keep` or `release` it); the kept
        answer if this very request was answered before; InvalidInput if the key answered or
        is running another request; InFlight if this request is still running elsewhere."""
        now = time.time()
        self._sweep(now)
        for _ in range(3):  # a dead row deleted under us by another taker: try again
            try:
                with self.store.engine.begin() as conn:
                    conn.execute(table.insert().values(
                        account=account, key=key, request_sha256=request_sha256,
                        status=IN_FLIGHT, answer="", created=int(now)))
                return None
            except IntegrityError:
                pass
            q = select(table.c.request_sha256, table.c.status, table.c.answer,
                       table.c.created).where(table.c.account == account, table.c.key == key)
            with self.store.engine.connect() as conn:
                row = conn.execute(q).first()
            if row is None:
                continue
            status = int(row.status)
            dead = (row.created <= now - self.ttl_s if status != IN_FLIGHT
                    else row.created <= now - ABANDONED_S)
            if dead:  # expired, or claimed by a process that died: take it over
                with self.store.engine.begin() as conn:
                    conn.execute(delete(table).where(
                        table.c.account == account, table.c.key == key,
                        table.c.created == row.created, table.c.status == status))
                continue
            if row.request_sha256 != request_sha256:
                raise _other_request()
            if status == IN_FLIGHT:
                raise _in_flight()
            return Answer(status, row.answer.encode())
        raise _in_flight()

    def recall(self, account: str, key: str, request_sha256: str) -> Answer | None:
        """The kept answer to this key, if it is still alive and was for this very request
        (None while its request is still running); InvalidInput if it answered another."""
        q = select(table.c.request_sha256, table.c.status, table.c.answer, table.c.created).where(
            table.c.account == account, table.c.key == key, table.c.status != IN_FLIGHT)
        with self.store.engine.connect() as conn:
            row = conn.execute(q).first()
        if row is None or row.created <= time.time() - self.ttl_s:
            return None
        if row.request_sha256 != request_sha256:
            raise _other_request()
        return Answer(int(row.status), row.answer.encode())

    def keep(self, account: str, key: str, request_sha256: str, answer: Answer) -> None:
        """Keep the answer to replay (a success, or an Uncertain's 503) in this request's
        claim (or, unclaimed, in a row of its own; the first one kept wins)."""
        with self.store.engine.begin() as conn:
            done = conn.execute(update(table).where(
                table.c.account == account, table.c.key == key,
                table.c.request_sha256 == request_sha256, table.c.status == IN_FLIGHT,
            ).values(status=answer.status, answer=answer.body.decode())).rowcount
        if done:
            return
        try:
            with self.store.engine.begin() as conn:
                conn.execute(table.insert().values(
                    account=account, key=key, request_sha256=request_sha256,
                    status=answer.status, answer=answer.body.decode(), created=int(time.time())))
        except IntegrityError:
            pass  # kept already: it stands

    def release(self, account: str, key: str, request_sha256: str) -> None:
        """Drop this request's claim: it was refused and wrote nothing, so a retry may run."""
        with self.store.engine.begin() as conn:
            conn.execute(delete(table).where(
                table.c.account == account, table.c.key == key,
                table.c.request_sha256 == request_sha256, table.c.status == IN_FLIGHT))

    def _sweep(self, now: float) -> None:
        """Delete rows past their lifetime, at most once a minute."""
        if now - self._swept <= _SWEEP_EVERY_S:
            return
        self._swept = now
        with self.store.engine.begin() as conn:
            conn.execute(delete(table).where(table.c.status != IN_FLIGHT,
                                             table.c.created <= int(now) - self.ttl_s))
            conn.execute(delete(table).where(table.c.status == IN_FLIGHT,
                                             table.c.created <= int(now) - ABANDONED_S))


WAIT_S = 10.0  # how long a retry waits for its key's first request before it is told 409
_POLL_S = 0.02


async def claim(keys: Keys, account: str, key: str, request_sha256: str,
                wait_s: float | None = None) -> Answer | None:
    """`Keys.claim`, waiting up to `wait_s` while the key's first request runs in another
    process (this process's own requests with the key are already queued one at a time), so
    the usual retry gets the first answer rather than 409."""
    deadline = time.monotonic() + (WAIT_S if wait_s is None else wait_s)
    while True:
        try:
            return keys.claim(account, key, request_sha256)
        except InFlight:
            if time.monotonic() >= deadline:
                raise
        await asyncio.sleep(_POLL_S)
