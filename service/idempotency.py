"""Idempotent retries (decision D41): the first successful answer to a write sent with an
`Idempotency-Key` is kept, per account, for `Settings.idempotency_ttl_s`; a retry with the same
key and the same request gets that answer again and writes nothing. The same key with another
request is refused (InvalidInput, 422), as the IETF Idempotency-Key draft says: it is a client's
mistake, and replaying the other answer would hide it.

Successes are kept, and so is the 503 of a write whose fate is unknown (`Uncertain`: its retry
is answered with its entry if it was recorded, and run again if not, D135); a refused request
wrote nothing, so its key is freed and running it again is safe (a retry that took over a kept
503 puts that 503 back instead: its refusal says nothing of the first send). Rows past their
lifetime are ignored at once and deleted lazily, at most once a minute, by writers.

The key is claimed in the database before the write (decision D59): with `serve --workers N` a
retry that reaches another process while the first request is still running waits for its
answer (or is told 409, in progress) instead of writing a second entry. The claim is its
process's, refreshed by a heartbeat, so only a dead process's claim is taken over (D69).

Each claim carries a token of its own in its row while in flight (D139), so what an ended claim
does late (a keep retried, a release, a refresh) never acts on a later claim of the same request.
A retried upload whose success is kept is answered before its file is fingerprinted (`kept`,
D140).

The block that writes a claimed request's entry records it in `idempotency_written` in its
own transaction (D132), so whether that request was recorded is known exactly: a claim taken
over from a dead process, or a kept 503, whose request has an entry there is answered with
that entry (`Written`), never written again. One whose request has no entry there is run
again: the sequencer writes a claimed request once (D134), so an entry still queued when the
claim is taken over is not written twice (D135).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import secrets
import threading
import time
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import and_, delete, exists, or_, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from copyledger.ledger.errors import Conflict, InvalidInput, said
from copyledger.ledger.schema import idempotency_keys as table
from copyledger.ledger.schema import idempotency_written as written
from copyledger.ledger.store import Store

HEADER = "Idempotency-Key"
MAX_KEY = 255
_KEY = re.compile(r"[\x21-\x7e]{1,255}")  # visible ASCII: a UUID, a ULID, a file's hash…
_SWEEP_EVERY_S = 60

log = logging.getLogger("copyledger.idempotency")


@dataclass(frozen=True)
class Answer:
    """A kept answer: its status and the JSON body as sent."""

    status: int
    body: bytes


@dataclass(frozen=True)
class Written:
    """A key whose request's entry is in the log at `seq` (its block said so, D132) though no
    success was kept: its process died after the commit, or kept the 503 of a write whose
    fate it could not learn. The request is answered with that entry (`Keys.settle_written`),
    nothing written again."""

    seq: int


def valid_key(key: str) -> bool:
    """Whether `key` is 1-255 visible ASCII characters."""
    return _KEY.fullmatch(key) is not None


def check_key(key: str, field: str = HEADER) -> str:
    """The key if it is 1-255 visible ASCII characters, else InvalidInput naming `field`."""
    if not valid_key(key):
        msg = f"must be 1-{MAX_KEY} visible ASCII characters (a UUID, say)"
        raise InvalidInput(said("{field}: {msg}",
                                field=field, msg=msg), errors=[{"field": field, "message": msg}])
    return key


def request_hash(*parts: bytes) -> str:
    """What identifies a request under its key: the SHA-256 of its parts (path, query, body;
    an upload's are in `api.routes.works`), each length-prefixed so no two different requests
    can run together into the same bytes."""
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
                         "shortly to get its answer", header=HEADER), retry_after=1)


def _holding(request: Held) -> Any:
    """The key's row while it is this request's, whatever its status."""
    account, key, request_sha256 = request
    return and_(table.c.account == account, table.c.key == key,
                table.c.request_sha256 == request_sha256)


def _claimed(claim: Claim) -> Any:
    """The key's row while it is this claim's, in flight: never a later claim of the same
    request, in this process or another (D139)."""
    return and_(_holding(claim.request), table.c.status == IN_FLIGHT,
                table.c.holder == claim.holder)


def _was_written(since: int) -> Any:
    """Whether a claim row's request was recorded after `since` (D132): a SQL condition."""
    return exists().where(written.c.account == table.c.account, written.c.key == table.c.key,
                          written.c.request_sha256 == table.c.request_sha256,
                          written.c.created > since)


class InFlight(Conflict):
    """The key's first request is still running (in this process or another): nothing was
    written for this one; retry shortly and get its answer."""


IN_FLIGHT = 0  # `status` of a claimed key whose request has not answered yet (D59)
HEARTBEAT_S = 5.0  # how often a process refreshes the claims it holds (D69)
ABANDONED_S = 60  # a claim not refreshed for this long was left by a process that died (D69)
_GIVEN_UP = ("an idempotent answer (or a 503 put back) could not be kept; its claim will be "
             "taken over after %s s")
_NOT_REFRESHED = "refreshing idempotency claims failed"
_KEEP_TRIES = 12  # a keep (or put-back) the database refused is tried again this many beats

Held = tuple[str, str, str]  # (account, key, request_sha256): a request under its key


@dataclass(frozen=True)
class Claim:
    """A key a request now holds in the database, to run it (D59): `keep` or `release` it.
    `holder` is a token of this claim alone, in its row while it is in flight, so what this
    claim does later (keep, put back, refresh, let go) acts on its own row only, never on a
    later claim of the same request that took the key over (D139)."""

    account: str
    key: str
    request_sha256: str
    holder: str

    @property
    def request(self) -> Held:
        """The request under its key, as the sequencer records it (D132)."""
        return (self.account, self.key, self.request_sha256)


@dataclass(frozen=True)
class _Pending:
    """What a claim must still write into its row, the database having refused it: an
    answer to keep, or a taken-over 503 to put back with its own `created` (D135)."""

    answer: Answer
    created: int | None = None
    tries: int = 0


WRITING: ContextVar[Held | None] = ContextVar("copyledger_idempotency_writing", default=None)
"""The request (account, key, request hash) a single write runs under a claim of (set by the
API around it): `operations.record` hands it to the sequencer with the entry, so the block that
writes the entry records it as written under the key (`idempotency_written`). The request, not
the claim's token: a retry is answered with the entry whichever claim wrote it (D139)."""

WRITING_MANY: ContextVar[Sequence[Held | None] | None] = ContextVar(
    "copyledger_idempotency_writing_many", default=None)
"""As WRITING for a batch: each item's claim (or None), in the order of its items."""

REPLAYED: ContextVar[bool] = ContextVar("copyledger_idempotency_replayed", default=False)
"""Set by `operations.record` when the single write running under WRITING was answered with
the entry its claim already had (D134): the API marks the answer `Idempotent-Replayed`."""


class Keys:
    """The kept answers of one registry, and the claims of keys whose first request is still
    running: a key is claimed by inserting its row (status `IN_FLIGHT`) before the write, under
    the table's primary key, so only one request with a key runs, whichever process it reached
    (D59).

    A claim belongs to the process that made it (D69): while the request runs, a heartbeat
    thread of that process refreshes the row's `created` every `heartbeat_s`, so only a claim
    whose owner stopped refreshing it (died, or lost the database) for `abandoned_s` is taken
    over; a slow request of a live process is never run a second time. The database calls
    block: the async helpers below run them on a worker thread, off the event loop."""

    def __init__(self, store: Store, ttl_s: int, heartbeat_s: float = HEARTBEAT_S,
                 abandoned_s: float = ABANDONED_S) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.heartbeat_s = heartbeat_s
        self.abandoned_s = abandoned_s
        self._swept = 0.0
        # Claims this process holds, each with what it must still write (its `keep` or the
        # put-back of `release` or `abandon` failed: tried again each beat, `_KEEP_TRIES`
        # times) or None while its request runs.
        self._held: dict[Claim, _Pending | None] = {}
        # The kept 503s this process's claims took over (D135), with their `created`, put
        # back if the claim is released or abandoned (D150), so the key still says its first
        # send's fate is unknown, for as long as it would have.
        self._over: dict[Claim, _Pending] = {}
        self._beat = threading.Condition()
        self._beating = False
        self._stopped = False

    def claim(self, account: str, key: str, request_sha256: str) -> Answer | Written | Claim:
        """A Claim if the key is now this request's to run (then `keep` or `release` it); the kept
        answer if this very request was answered before; `Written` if it was recorded but its
        answer was never kept (a dead owner's claim, or a kept 503, whose request has an entry in
        `idempotency_written`: D132); without such an entry, the dead claim or the 503 is taken
        over like a free key (D135); InvalidInput if the key answered or is running another
        request; InFlight if this request is still running elsewhere."""
        now = time.time()
        self._sweep(now)
        mine = Claim(account, key, request_sha256, secrets.token_hex(8))
        for _ in range(3):  # a dead row deleted under us by another taker: try again
            try:
                with self.store.engine.begin() as conn:
                    # (`created` read now: the steps before may have waited on the database)
                    conn.execute(table.insert().values(
                        account=account, key=key, request_sha256=request_sha256,
                        status=IN_FLIGHT, answer="", created=int(time.time()),
                        holder=mine.holder))
                self._hold(mine)
                return mine
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
                    else row.created <= now - self.abandoned_s)
            if (status == IN_FLIGHT and dead) or (status >= 400 and not dead):
                seq = self._written(account, key, row.request_sha256, now)
                if seq is not None:  # recorded, never answered (D132)
                    if row.request_sha256 != request_sha256:
                        raise _other_request()
                    return Written(seq)
                # A kept 503 whose request has no entry: run it again. Should its first send
                # still be queued, the sequencer answers the later of the two with the other's
                # entry (D134), so it is written once either way (D135).
                if status >= 400 and row.request_sha256 == request_sha256:
                    if self._take_over(row, mine, int(time.time())):
                        return mine
                    continue
                # A dead claim of another request, nothing recorded yet: that request may
                # still be queued at the sequencer and sealed (D134), so the key stays its
                # until the key's lifetime ends, as a kept 503's does (D135, D161).
                if status == IN_FLIGHT and row.request_sha256 != request_sha256 \
                        and row.created > now - self.ttl_s:
                    raise _other_request()
            if dead:  # expired, or its owner stopped refreshing it (died): take it over
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

    def kept(self, account: str, key: str, request_sha256: str) -> Answer | None:
        """The success kept under the key for this very request, if any, read without
        claiming anything: lets a retried upload be answered before its costly fingerprints
        are made (D140). Anything else (no answer yet, a 503, another request) is left to
        `claim`."""
        q = select(table.c.status, table.c.answer).where(
            _holding((account, key, request_sha256)), table.c.status >= 200,
            table.c.status < 300, table.c.created > int(time.time()) - self.ttl_s)
        with self.store.engine.connect() as conn:
            row = conn.execute(q).first()
        return None if row is None else Answer(int(row.status), str(row.answer).encode())

    def _take_over(self, row: Any, claim: Claim, now: int) -> bool:
        """Make the kept 503 `row` this `claim` (in flight), remembering the 503 for
        `release`; False if the row changed meanwhile (another retry took it)."""
        with self.store.engine.begin() as conn:
            done = conn.execute(update(table).where(
                _holding(claim.request), table.c.created == row.created,
                table.c.status == row.status,
            ).values(status=IN_FLIGHT, answer="", created=now, holder=claim.holder)).rowcount
        if done:
            self._hold(claim)
            with self._beat:
                self._over[claim] = _Pending(Answer(int(row.status), str(row.answer).encode()),
                                             int(row.created))
        return bool(done)

    def keep(self, claim: Claim, answer: Answer) -> None:
        """Keep the answer to replay (a success, or an Uncertain's 503) in this claim's row
        (or, the row no longer this claim's, in a row of its own unless the key has one: the
        first one kept wins). It does not raise: the write it answers is done, and its writer
        must still get that answer (D69). A keep the database refused is tried again by the
        heartbeat while the claim is refreshed; after `_KEEP_TRIES` beats, or at once for a
        fault other than the database's, it is let go, so the claim ages out and is taken over
        (the retry is then answered with the entry its block recorded, D132)."""
        self._write(claim, _Pending(answer), "keeping an idempotent answer failed; trying again")

    def _write(self, claim: Claim, pending: _Pending, failed: str) -> None:
        """Write `pending` into this claim's row and let the claim go; if the database
        refuses, log `failed` and leave it to the heartbeat, which tries again each beat; on
        any other fault, give the claim up at once (`_give_up`)."""
        try:
            self._keep(claim, pending)
        except SQLAlchemyError:
            log.warning(failed, exc_info=True)
            with self._beat:
                if claim in self._held:
                    self._held[claim] = pending
            return
        except Exception:  # not the database: a fault no retry mends
            self._give_up(claim)
            return
        self._let_go(claim)

    def _keep(self, claim: Claim, pending: _Pending) -> None:
        # The row is no longer this claim's: its token goes, so nothing ever matches it again.
        also: dict[str, int | str] = {"holder": ""}
        if pending.created is not None:
            also["created"] = pending.created
        self._put(claim.request, pending.answer, _claimed(claim), **also)

    def _put(self, request: Held, answer: Answer, over: Any, **also: int | str) -> None:
        """Write `answer` (and `also`'s columns) into this request's row where `over` holds;
        with no such row, into a row of its own, unless the key has one by then: the first
        answer kept stands."""
        account, key, request_sha256 = request
        values = {"status": answer.status, "answer": answer.body.decode(), **also}
        with self.store.engine.begin() as conn:
            done = conn.execute(update(table).where(_holding(request), over)
                                .values(values)).rowcount
        if done:
            return
        try:
            with self.store.engine.begin() as conn:
                conn.execute(table.insert().values(
                    account=account, key=key, request_sha256=request_sha256,
                    **{"created": int(time.time()), **values}))
        except IntegrityError:
            pass  # kept already: it stands

    def _written(self, account: str, key: str, request_sha256: str, now: float) -> int | None:
        """The entry a request under this key wrote within the keys' lifetime, if any (D132)."""
        claim = (account, key, request_sha256)
        return self.store.recorded_claims([claim], int(now) - self.ttl_s).get(claim)

    def settle_written(self, account: str, key: str, request_sha256: str,
                       answer: Answer) -> None:
        """Keep `answer`, made from the entry a key's request wrote, for a key `claim` found
        `Written` (its abandoned claim or kept 503 becomes that answer). It does not raise for
        the database: nothing else changes, so the next retry is answered from the entry
        again."""
        now = int(time.time())
        try:  # over the abandoned claim or the kept 503 `claim` found, nothing else
            self._put((account, key, request_sha256), answer,
                      or_(table.c.status >= 400, and_(table.c.status == IN_FLIGHT,
                                                      table.c.created <= now - self.abandoned_s)),
                      created=now)
        except SQLAlchemyError:
            log.warning("keeping a recorded request's answer failed; its retry is answered "
                        "from its entry again", exc_info=True)

    def release(self, claim: Claim) -> None:
        """Drop this claim: its request was refused and wrote nothing, so a retry may run.
        A claim that took over a kept 503 puts that 503 back instead (D135): this refusal
        says nothing of the first send, which may still be sealed; if the database refuses,
        the heartbeat tries again, as for `keep` (D139). If deleting the claim fails, it is
        no longer refreshed and ages out instead."""
        if self._put_back(claim):
            return
        try:
            with self.store.engine.begin() as conn:
                conn.execute(delete(table).where(
                    _claimed(claim), ~_was_written(int(time.time()) - self.ttl_s)))
        except SQLAlchemyError:
            log.warning("releasing an idempotency key failed; it ages out", exc_info=True)
        except Exception:  # not the database: the refusal is still the writer's answer
            log.exception("releasing an idempotency key failed; it ages out")
        finally:
            self._let_go(claim)

    def _put_back(self, claim: Claim) -> bool:
        """Put back the kept 503 this claim took over, if it took one over (D135); whether it
        did."""
        with self._beat:
            over = self._over.get(claim)
        if over is not None:
            self._write(claim, over, "putting a kept 503 back failed; trying again")
        return over is not None

    def abandon(self, claim: Claim) -> None:
        """Leave this claim's request of unknown fate, settled nowhere here: its write was
        cancelled midway (by the server's stop, past its grace: D119) or was Uncertain
        and its problem could not be kept (D147). A claim that took over a kept 503 puts it
        back, since that 503 says the same (D135, D150); any other is let go and ages out, as
        a dead owner's. Not released: the write may still be sealed, and its row must stay
        until a retry can tell (D132)."""
        if not self._put_back(claim):
            self._let_go(claim)

    def _sweep(self, now: float) -> None:
        """Delete rows past their lifetime, at most once a minute."""
        if now - self._swept <= _SWEEP_EVERY_S:
            return
        self._swept = now
        with self.store.engine.begin() as conn:
            conn.execute(delete(table).where(table.c.status != IN_FLIGHT,
                                             table.c.created <= int(now) - self.ttl_s))
            # A dead claim stays for the key's lifetime: recorded, to answer its retries
            # (D132); not yet, since its request may still be sealed, to refuse another body
            # under the key (D161). Never sooner than a claim is abandoned: a live one is not
            # deleted under its request, whatever lifetime keys are given.
            conn.execute(delete(table).where(
                table.c.status == IN_FLIGHT,
                table.c.created <= int(now) - max(self.ttl_s, int(self.abandoned_s))))
            conn.execute(delete(written).where(written.c.created <= int(now) - self.ttl_s))

    # -- the heartbeat (D69) -------------------------------------------------------------------

    def _hold(self, claim: Claim) -> None:
        with self._beat:
            self._held[claim] = None
            if not self._beating and not self._stopped:
                # Started first: a thread that cannot start leaves `_beating` False, so the
                # next claim tries again rather than none being refreshed for good.
                threading.Thread(target=self._heartbeat, name="idempotency-heartbeat",
                                 daemon=True).start()
                self._beating = True

    def _let_go(self, claim: Claim) -> None:
        with self._beat:
            self._held.pop(claim, None)
            self._over.pop(claim, None)

    def _heartbeat(self) -> None:
        """While this process holds claims: refresh them, and keep again the answers the
        database refused. Ends when none is held (the next claim starts another). A refresh
        that fails is logged and the beats go on (D147); a keep the database refuses again is
        tried next beat, and one that fails otherwise is given up (D146). Should anything else
        fail, it logs that and ends, and the next claim starts a new heartbeat."""
        try:
            self._beats()  # returns with _beating cleared under the lock
        except Exception:
            log.exception("the idempotency heartbeat stopped")
            with self._beat:
                self._beating = False

    def _beats(self) -> None:
        while True:
            with self._beat:
                self._beat.wait(self.heartbeat_s)
                if not self._held or self._stopped:
                    self._beating = False
                    return
                held = dict(self._held)
            try:
                self._refresh(list(held))
            except SQLAlchemyError:
                log.warning(_NOT_REFRESHED, exc_info=True)
            except Exception:  # not the database: the keeps go on, the next beat tries again
                log.exception(_NOT_REFRESHED)
            for claim, pending in held.items():
                if pending is not None:
                    self._keep_again(claim, pending)

    def _refresh(self, claims: list[Claim]) -> None:
        now = int(time.time())
        with self.store.engine.begin() as conn:
            for claim in claims:
                conn.execute(update(table).where(_claimed(claim)).values(created=now))

    def _keep_again(self, claim: Claim, pending: _Pending) -> None:
        try:
            self._keep(claim, pending)
        except SQLAlchemyError:
            if pending.tries + 1 < _KEEP_TRIES:
                with self._beat:
                    if claim in self._held:
                        self._held[claim] = replace(pending, tries=pending.tries + 1)
                return
            log.error(_GIVEN_UP, self.abandoned_s)
        except Exception:  # not the database: the other claims' keeps go on
            self._give_up(claim)
            return
        self._let_go(claim)

    def _give_up(self, claim: Claim) -> None:
        """A keep or put-back failed for a reason other than the database (a fault in this
        code): trying again would fail again, and a claim held on would be refreshed for as
        long as the process lives, every retry told 409 (in progress). So it is let go and
        ages out like a dead owner's; the retry is then answered from its entry, if the block
        recorded one (D132), or run again. Called in the `except` block that caught it, so
        the log shows its traceback."""
        log.exception(_GIVEN_UP, self.abandoned_s)
        self._let_go(claim)

    def stop(self) -> None:
        """End the heartbeat (the node is closing its store)."""
        with self._beat:
            self._stopped = True
            self._beat.notify_all()


WAIT_S = 10.0  # how long a retry waits for its key's first request before it is told 409
_POLL_S = 0.02


async def claim(keys: Keys, account: str, key: str, request_sha256: str,
                wait_s: float | None = None) -> Answer | Written | Claim:
    """`Keys.claim` on a worker thread, waiting up to `wait_s` while the key's first request
    runs in another process (this process's own requests with the key are already queued one
    at a time), so the usual retry gets the first answer rather than 409."""
    deadline = time.monotonic() + (WAIT_S if wait_s is None else wait_s)
    while True:
        attempt = asyncio.ensure_future(asyncio.to_thread(keys.claim, account, key,
                                                          request_sha256))
        try:
            return await asyncio.shield(attempt)
        except InFlight:
            if time.monotonic() >= deadline:
                raise
        except asyncio.CancelledError:
            # The thread claims on regardless: free what it takes, or the heartbeat would keep
            # the key "in flight" for the life of the process (nothing was written under it).
            attempt.add_done_callback(lambda done: _free_if_claimed(keys, done))
            raise
        await asyncio.sleep(_POLL_S)


def _free_if_claimed(keys: Keys, done: asyncio.Future[Answer | Written | Claim]) -> None:
    """After a cancelled `claim`: release the key if the attempt took it (a Claim), on a
    thread, since the loop must not wait for the database."""
    if done.cancelled() or done.exception() is not None:
        return
    taken = done.result()
    if isinstance(taken, Claim):
        threading.Thread(target=keys.release, args=(taken,), name="idempotency-release",
                         daemon=True).start()


async def keep(keys: Keys, claim: Claim, answer: Answer) -> None:
    """`Keys.keep` on a worker thread: the event loop serves other requests meanwhile."""
    await asyncio.to_thread(keys.keep, claim, answer)


async def settle_written(keys: Keys, account: str, key: str, request_sha256: str,
                         answer: Answer) -> None:
    """`Keys.settle_written` on a worker thread."""
    await asyncio.to_thread(keys.settle_written, account, key, request_sha256, answer)


async def release(keys: Keys, claim: Claim) -> None:
    """`Keys.release` on a worker thread."""
    await asyncio.to_thread(keys.release, claim)


async def abandon(keys: Keys, claim: Claim) -> None:
    """`Keys.abandon` on a worker thread."""
    await asyncio.to_thread(keys.abandon, claim)


async def release_all(keys: Keys, claims: Sequence[Claim], unsure: Sequence[Claim] = ()
                      ) -> None:
    """`Keys.release` of each of `claims` and `Keys.abandon` of each of `unsure`, one after
    another on one worker thread (a batch's up to 1,000 claims never take every thread of
    the loop's executor)."""
    def each() -> None:
        for c in claims:
            keys.release(c)
        for c in unsure:
            keys.abandon(c)
    await asyncio.to_thread(each)
