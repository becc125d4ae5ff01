"""`Client` and `AsyncClient`: the same calls (built in `_calls`), sent with httpx, sync or
async. Every answer that can be verified is, against the pinned keys, before it is returned."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar, Unpack

import httpx

from copyledger.client import _calls as calls
from copyledger.client._calls import (
    BatchResult,
    BatchWork,
    Call,
    CheckFields,
    EvidenceFields,
    TransferFields,
    Trust,
    UploadFields,
    WorkFields,
)
from copyledger.client.errors import ClientError, TransportError
from copyledger.client.results import (
    ClaimCheck,
    ConsistencyProof,
    InclusionProof,
    Receipt,
    SignedCheckpoint,
)
from copyledger.client.verify import Keys, verifiers
from copyledger.ledger import note
from copyledger.ledger.contact import Disclosure
from copyledger.ledger.errors import InvalidInput, said

__all__ = ["AsyncClient", "Client"]

T = TypeVar("T")
_HTTPX_ERRORS = (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError)


def _no_answer(e: Exception) -> bool:
    """True if `e` is an exchange that broke off or never started (refused, reset, timed
    out), which a resend may get past; False for a request that can never be sent (a URL
    without a usable scheme)."""
    return isinstance(e, httpx.TransportError) and not isinstance(e, httpx.UnsupportedProtocol)


class _Base:
    """What both clients hold: the server, the API key, the trusted keys and the account."""

    def __init__(self, base_url: str, api_key: str | None, trusted_keys: Keys,
                 account: str | None, retries: int, language: str | None = None) -> None:
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise InvalidInput(said("retries must be a whole number of at least 0, not "
                                    "{retries!r}", retries=retries))
        self.retries = retries
        self.base_url = base_url.rstrip("/")
        pinned = verifiers(trusted_keys)  # InvalidInput for a malformed key, before any I/O
        self._trust: Trust | None = Trust(pinned, pinned=True) if pinned else None
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        if language:  # the registry's problems (title, detail) said in this language
            self._headers["Accept-Language"] = language
        self._account = account or None
        self._account_pinned = self._account is not None

    @property
    def account_pinned(self) -> bool:
        """True if registrations must name the account the caller gave; False if the one
        GET /v1/whoami names (which catches an entry recorded under another account than the
        registry says this key acts for, not a registry that lies about both)."""
        return self._account_pinned

    def _with_account(self, trust: Trust) -> Trust:
        return dataclasses.replace(trust, account=self._account)

    @property
    def key_pinned(self) -> bool:
        """True if answers are checked against keys the caller gave; False if against the key
        the server itself publishes (which shows answers agree with each other, no more)."""
        return self._trust is not None and self._trust.pinned

    def _unreachable(self, e: Exception) -> TransportError:
        return TransportError(said("cannot reach {url}: {e}", url=self.base_url, e=e))

    def _keyed(self, call: Call[T]) -> Call[T]:
        """`call`, under an Idempotency-Key of its own if it may be resent and has none."""
        return calls.with_key(call) if self.retries else call

    def _settle(self, call: Call[Any], attempt: int, started: float,
                got: httpx.Response | Exception) -> tuple[int, bytes] | float:
        """What try number `attempt` of `call` (first sent at monotonic time `started`) gave:
        the answer's status and body to return, or the seconds to wait before sending it
        again (`calls.resend_pause`, while tries are left); TransportError for no answer that
        is not to be resent."""
        elapsed = time.monotonic() - started
        left = attempt < self.retries
        if isinstance(got, Exception):
            pause = calls.resend_pause(call, attempt, None, {}, elapsed) if left else None
            if pause is None or not _no_answer(got):
                raise self._unreachable(got) from got
            return pause
        pause = (calls.resend_pause(call, attempt, got.status_code, got.headers, elapsed,
                                    got.content) if left else None)
        return (got.status_code, got.content) if pause is None else pause


class Client(_Base):
    """A registry over HTTP, synchronously.

    `trusted_keys` are the log's verifier keys (`name+hexkeyid+base64key`) to check receipts,
    proofs, checkpoints and claim checks with. Without them the client uses the key the server
    publishes at GET /v1/log, and `key_pinned` says so.

    `account` is the account this client's API key acts for: every entry a write records must
    name it as registrant. Without it the client asks GET /v1/whoami once, before its first
    write's answer, and `account_pinned` says so (D93).

    `language`: a BCP 47 tag (`zh-CN`) sent as Accept-Language, so the registry's problems
    come back in that language where it has them (their `type`s are the same in every one).

    `retries`: how many times a call is sent again when no answer came or the server asked
    for a pause (429, 409 in progress, 502–504; D131). Writes are then sent under an
    Idempotency-Key (the caller's, or one made per call), so a resend never records twice;
    the answer to an offer, which takes no key, is never resent. An upload goes under a key
    too (D137), which a registry from before D137 refuses (422): against one, upload with
    `retries=0`.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        trusted_keys: Keys = (),
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
        account: str | None = None,
        retries: int = 0,
        language: str | None = None,
    ) -> None:
        super().__init__(base_url, api_key, trusted_keys, account, retries, language)
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout,
                                  headers=self._headers, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _try(self, call: Call[Any]) -> httpx.Response | Exception:
        try:
            return self._http.request(**call.request())
        except _HTTPX_ERRORS as e:
            return e

    def _exchange(self, call: Call[Any]) -> tuple[int, bytes]:
        """The answer's status and body, as they came (the last, if it was resent)."""
        attempt, started = 0, time.monotonic()
        while isinstance(got := self._settle(call, attempt, started, self._try(call)), float):
            time.sleep(got)
            attempt += 1
        return got

    def _send(self, call: Call[Any]) -> Any:
        return call.read(*self._exchange(call))

    def _run(self, call: Call[T]) -> T:
        call = self._keyed(call)
        with calls.naming_key(call):
            trust = self._trusted() if call.needs_trust else calls.NO_TRUST
            status, body = self._exchange(call)
            if call.needs_account and self._account is None:
                answer = call.read(status, body)  # after the write: its own errors first
                try:
                    self._account = calls.learn_account(self._send(calls.whoami()))
                except ClientError as e:
                    raise calls.account_unknown(answer, e) from e
                del answer  # freed before `complete` decodes it again (D101)
            return call.complete(status, body,
                                 self._with_account(trust) if call.needs_account else trust)

    def _trusted(self) -> Trust:
        if self._trust is None:
            self._trust = calls.learn_trust(self._send(calls.log()))
        return self._trust

    def verifiers(self) -> tuple[note.Verifier, ...]:
        """The keys answers are checked with (fetching the server's if none were pinned)."""
        return self._trusted().verifiers

    # writes (`idempotency_key`: a retry of the same write with the same key, within a day,
    # gets the first answer and records nothing new; api.md, D41)
    def register_work(self, *, idempotency_key: str | None = None,
                      **fields: Unpack[WorkFields]) -> Receipt:
        """Register a work by its SHA-256 (the file stays here); the receipt is verified."""
        return self._run(calls.register_work(fields, idempotency_key))

    def register_works(self, works: Sequence[BatchWork], *, again: bool = False
                       ) -> list[BatchResult]:
        """Register up to 1,000 works by hash in one request (POST /v1/works/batch): for each,
        in order, its verified receipt, the ProblemError that refused it, or UnverifiedAnswer
        (a receipt that does not verify)."""
        return self._run(calls.register_works(works, again, keys=self.retries > 0))

    def upload_work(self, file: bytes | Path, *, idempotency_key: str | None = None,
                    **fields: Unpack[UploadFields]) -> Receipt:
        """Register a work by uploading it; the receipt must register the file's SHA-256."""
        return self._run(calls.upload_work(file, fields, idempotency_key))

    def deposit_evidence(self, *, idempotency_key: str | None = None,
                         **fields: Unpack[EvidenceFields]) -> Receipt:
        return self._run(calls.deposit_evidence(fields, idempotency_key))

    def transfer(self, *, idempotency_key: str | None = None,
                 **fields: Unpack[TransferFields]) -> Receipt:
        """Record a licence, or offer an assignment (the recipient must `accept_offer` it)."""
        return self._run(calls.transfer(fields, idempotency_key))

    def accept_offer(self, offer_seq: int, note: str | None = None) -> Receipt:
        """Accept an offer of assignment made to this account: it then holds the work."""
        return self._run(calls.answer_offer(offer_seq, "accept", note))

    def withdraw_offer(self, offer_seq: int, note: str | None = None) -> Receipt:
        """Withdraw an offer of assignment this account made and no one has accepted."""
        return self._run(calls.answer_offer(offer_seq, "withdraw", note))

    def file_claim(self, notice: dict[str, Any], *,
                   idempotency_key: str | None = None) -> Receipt:
        """Record a takedown notice or counter-notice (the POST /v1/claims document)."""
        return self._run(calls.file_claim(notice, idempotency_key))

    def check_claim(self, content: dict[str, Any], **fields: Unpack[CheckFields]) -> ClaimCheck:
        """Check a claim given the disputed content's hashes (`sha256`, `pdq`, `phash`,
        `minhash`); the notary's signature over the answer is verified."""
        return self._run(calls.check_claim(content, fields))

    def check_claim_upload(self, file: bytes | Path, *, filename: str | None = None,
                           media_type: str | None = None,
                           **fields: Unpack[CheckFields]) -> ClaimCheck:
        """Check a claim by uploading the disputed content (the server fingerprints it)."""
        return self._run(calls.check_claim_upload(file, fields, filename=filename,
                                                  media_type=media_type))

    def timestamp(self, query: bytes) -> bytes:
        """An RFC 3161 TimeStampResp (DER) for a TimeStampReq (DER)."""
        return self._run(calls.timestamp(query))

    # reads
    def entry(self, seq: int) -> dict[str, Any]:
        return self._run(calls.entry(seq))

    def proof(self, seq: int, tree_size: int | None = None) -> InclusionProof:
        return self._run(calls.proof(seq, tree_size))

    def bundle(self, seq: int) -> dict[str, Any]:
        """The evidence bundle, as sent: keep it, verify it offline (`copyledger verify`)."""
        return self._run(calls.bundle(seq))

    def certificate(self, seq: int, *, pdf: bool = False) -> bytes:
        return self._run(calls.certificate(seq, pdf))

    def search(self, sha256: str) -> dict[str, Any]:
        return self._run(calls.search(sha256))

    def history(self, seq: int) -> dict[str, Any]:
        """A work's chain of title; its checkpoint and every link's proof are verified."""
        return self._run(calls.history(seq))

    def claim(self, seq: int) -> dict[str, Any]:
        """A claim and its timeline."""
        return self._run(calls.claim(seq))

    def claim_contact(self, seq: int) -> Disclosure:
        """The claimant's contact details, for the platform that filed the claim or an admin;
        checked to open the commitment given with them."""
        return self._run(calls.claim_contact(seq))

    def erase_claim_contact(self, seq: int) -> dict[str, Any]:
        """Erase the claimant's contact details (admin key); the log keeps the commitment."""
        return self._run(calls.erase_claim_contact(seq))

    def log(self) -> dict[str, Any]:
        return self._run(calls.log())

    def checkpoint(self) -> SignedCheckpoint:
        return self._run(calls.checkpoint())

    def consistency(
        self, old: SignedCheckpoint, new: SignedCheckpoint | None = None
    ) -> ConsistencyProof:
        """Prove the log at `new` (default: its latest checkpoint, asked again for a moment
        while the log answers one older than `old`) extends `old`."""
        return self._run(calls.consistency(old, new or self._latest_from(old)))

    def _latest_from(self, old: SignedCheckpoint) -> SignedCheckpoint:
        for pause in calls.STALE_PAUSES:
            latest = self.checkpoint()
            if latest.size >= old.size:
                return latest
            time.sleep(pause)
        return calls.not_older(old, self.checkpoint())

    def cosigned_checkpoint(self) -> SignedCheckpoint:
        """The latest checkpoint a quorum of the log's witnesses cosigned (log key checked)."""
        return self._run(calls.cosigned_checkpoint())

    def refresh_bundle(self, bundle: dict[str, Any]) -> dict[str, Any]:
        """The bundle with the log's latest cosigned checkpoint and the consistency proof from
        the bundle's checkpoint to it (both checked here): nothing was rewritten since."""
        old = calls.bundle_checkpoint(bundle, self._trusted())
        new = calls.cosigned_since(old, self.cosigned_checkpoint())
        return calls.refreshed(bundle, new, self.consistency(old, new))

    def notary_keys(self) -> dict[str, Any]:
        return self._run(calls.notary_keys())

    def block(self, height: int) -> dict[str, Any]:
        return self._run(calls.block(height))

    def healthz(self) -> dict[str, Any]:
        return self._run(calls.healthz())

    def whoami(self) -> dict[str, Any]:
        """The account, role, key id and key prefix of this client's API key (never the key):
        check the setup before writing anything."""
        return self._run(calls.whoami())


class AsyncClient(_Base):
    """`Client`, with every call a coroutine."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        trusted_keys: Keys = (),
        timeout: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
        account: str | None = None,
        retries: int = 0,
        language: str | None = None,
    ) -> None:
        super().__init__(base_url, api_key, trusted_keys, account, retries, language)
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout,
                                       headers=self._headers, transport=transport)
        # The whoami in flight, which first writes answered together all wait on (D99).
        self._learning: asyncio.Future[Any] | None = None

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def _try(self, call: Call[Any]) -> httpx.Response | Exception:
        try:
            return await self._http.request(**call.request())
        except _HTTPX_ERRORS as e:
            return e

    async def _exchange(self, call: Call[Any]) -> tuple[int, bytes]:
        """The answer's status and body, as they came (the last, if it was resent)."""
        attempt, started = 0, time.monotonic()
        while isinstance(got := self._settle(call, attempt, started, await self._try(call)),
                         float):
            await asyncio.sleep(got)
            attempt += 1
        return got

    async def _send(self, call: Call[Any]) -> Any:
        return call.read(*await self._exchange(call))

    async def _run(self, call: Call[T]) -> T:
        call = self._keyed(call)
        with calls.naming_key(call):
            trust = await self._trusted() if call.needs_trust else calls.NO_TRUST
            status, body = await self._exchange(call)
            if call.needs_account and self._account is None:
                answer = call.read(status, body)  # after the write: its own errors first
                # One whoami for the writes answered meanwhile, its failure theirs too (each
                # is told at once, not after a whoami of its own); a later write asks again.
                if self._learning is None or self._learning.done():
                    self._learning = asyncio.ensure_future(self._send(calls.whoami()))
                try:
                    self._account = calls.learn_account(await asyncio.shield(self._learning))
                except ClientError as e:
                    raise calls.account_unknown(answer, e) from e
                del answer  # freed before `complete` decodes it again (D101)
            return call.complete(status, body,
                                 self._with_account(trust) if call.needs_account else trust)

    async def _trusted(self) -> Trust:
        if self._trust is None:
            self._trust = calls.learn_trust(await self._send(calls.log()))
        return self._trust

    async def verifiers(self) -> tuple[note.Verifier, ...]:
        return (await self._trusted()).verifiers

    # writes
    async def register_work(self, *, idempotency_key: str | None = None,
                            **fields: Unpack[WorkFields]) -> Receipt:
        return await self._run(calls.register_work(fields, idempotency_key))

    async def register_works(self, works: Sequence[BatchWork], *, again: bool = False
                             ) -> list[BatchResult]:
        return await self._run(calls.register_works(works, again, keys=self.retries > 0))

    async def upload_work(self, file: bytes | Path, *, idempotency_key: str | None = None,
                          **fields: Unpack[UploadFields]) -> Receipt:
        return await self._run(calls.upload_work(file, fields, idempotency_key))

    async def deposit_evidence(self, *, idempotency_key: str | None = None,
                               **fields: Unpack[EvidenceFields]) -> Receipt:
        return await self._run(calls.deposit_evidence(fields, idempotency_key))

    async def transfer(self, *, idempotency_key: str | None = None,
                       **fields: Unpack[TransferFields]) -> Receipt:
        """Record a licence, or offer an assignment (the recipient must `accept_offer` it)."""
        return await self._run(calls.transfer(fields, idempotency_key))

    async def accept_offer(self, offer_seq: int, note: str | None = None) -> Receipt:
        """Accept an offer of assignment made to this account: it then holds the work."""
        return await self._run(calls.answer_offer(offer_seq, "accept", note))

    async def withdraw_offer(self, offer_seq: int, note: str | None = None) -> Receipt:
        """Withdraw an offer of assignment this account made and no one has accepted."""
        return await self._run(calls.answer_offer(offer_seq, "withdraw", note))

    async def file_claim(self, notice: dict[str, Any], *,
                         idempotency_key: str | None = None) -> Receipt:
        return await self._run(calls.file_claim(notice, idempotency_key))

    async def check_claim(self, content: dict[str, Any],
                          **fields: Unpack[CheckFields]) -> ClaimCheck:
        return await self._run(calls.check_claim(content, fields))

    async def check_claim_upload(self, file: bytes | Path, *, filename: str | None = None,
                                 media_type: str | None = None,
                                 **fields: Unpack[CheckFields]) -> ClaimCheck:
        return await self._run(calls.check_claim_upload(file, fields, filename=filename,
                                                        media_type=media_type))

    async def timestamp(self, query: bytes) -> bytes:
        return await self._run(calls.timestamp(query))

    # reads
    async def entry(self, seq: int) -> dict[str, Any]:
        return await self._run(calls.entry(seq))

    async def proof(self, seq: int, tree_size: int | None = None) -> InclusionProof:
        return await self._run(calls.proof(seq, tree_size))

    async def bundle(self, seq: int) -> dict[str, Any]:
        return await self._run(calls.bundle(seq))

    async def certificate(self, seq: int, *, pdf: bool = False) -> bytes:
        return await self._run(calls.certificate(seq, pdf))

    async def search(self, sha256: str) -> dict[str, Any]:
        return await self._run(calls.search(sha256))

    async def history(self, seq: int) -> dict[str, Any]:
        return await self._run(calls.history(seq))

    async def claim(self, seq: int) -> dict[str, Any]:
        return await self._run(calls.claim(seq))

    async def claim_contact(self, seq: int) -> Disclosure:
        return await self._run(calls.claim_contact(seq))

    async def erase_claim_contact(self, seq: int) -> dict[str, Any]:
        return await self._run(calls.erase_claim_contact(seq))

    async def log(self) -> dict[str, Any]:
        return await self._run(calls.log())

    async def checkpoint(self) -> SignedCheckpoint:
        return await self._run(calls.checkpoint())

    async def consistency(
        self, old: SignedCheckpoint, new: SignedCheckpoint | None = None
    ) -> ConsistencyProof:
        return await self._run(calls.consistency(old, new or await self._latest_from(old)))

    async def _latest_from(self, old: SignedCheckpoint) -> SignedCheckpoint:
        for pause in calls.STALE_PAUSES:
            latest = await self.checkpoint()
            if latest.size >= old.size:
                return latest
            await asyncio.sleep(pause)
        return calls.not_older(old, await self.checkpoint())

    async def cosigned_checkpoint(self) -> SignedCheckpoint:
        return await self._run(calls.cosigned_checkpoint())

    async def refresh_bundle(self, bundle: dict[str, Any]) -> dict[str, Any]:
        old = calls.bundle_checkpoint(bundle, await self._trusted())
        new = calls.cosigned_since(old, await self.cosigned_checkpoint())
        return calls.refreshed(bundle, new, await self.consistency(old, new))

    async def notary_keys(self) -> dict[str, Any]:
        return await self._run(calls.notary_keys())

    async def block(self, height: int) -> dict[str, Any]:
        return await self._run(calls.block(height))

    async def healthz(self) -> dict[str, Any]:
        return await self._run(calls.healthz())

    async def whoami(self) -> dict[str, Any]:
        return await self._run(calls.whoami())
