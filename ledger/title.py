"""Chain of title: who holds the rights in a registered work after its recorded transfers.

Pure: given the work's entry and its transfer entries in log order, replay them. The registrant
holds a work first; an assignment moves it to `to`; licences leave the holder unchanged. Only the
holder of the moment may assign or license, so a link recorded by anyone else breaks the chain
(the API refuses such a transfer; this replay lets anyone check that it did).

An assignment marked `needs_acceptance` is an offer (decision D36): the holder stays the holder
until the offer's recipient records an `acceptance` naming it; the offerer may record a
`withdrawal` instead. While an offer is pending nothing else may be transferred: no second offer,
no licence, so the recipient accepts exactly the title that was offered. An acceptance without a
pending offer, or by anyone but the recipient, and a withdrawal by anyone but the offerer, break
the chain. Assignments without the mark (all of them before D36) move the holder at once, as
they always did.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from copyledger.ledger.documents import (
    Acceptance,
    Entry,
    Transfer,
    Withdrawal,
    Work,
    WorkRef,
    parse_entry,
)
from copyledger.ledger.errors import IntegrityError, InvalidInput, said


@dataclass(frozen=True)
class Link:
    seq: int
    from_account: str
    to_account: str
    transfer_type: str
    holder_after: str
    offer: int | None = None  # for an accepted assignment, the seq of the offer it accepted


TITLE_KINDS = (Transfer, Acceptance, Withdrawal)
"""The entry classes `Title.apply` takes: the links of a chain of title."""


@dataclass
class Title:
    work_seq: int
    registrant: str
    holder: str
    links: list[Link] = field(default_factory=list)
    licences: list[Link] = field(default_factory=list)
    sha256: str = ""  # the work's content hash, which each transfer must name
    last: int = -1  # the seq of the last entry applied (the work, then each transfer)
    pending: Link | None = None  # the offer of assignment awaiting an answer, if any

    @classmethod
    def of(cls, work_seq: int, work: Entry | Mapping[str, Any]) -> Title:
        """The title of a freshly registered work: its registrant holds it."""
        w = _document(work)
        if not isinstance(w, Work):
            raise InvalidInput(said("entry {work_seq} is a {kind}, not a work",
                                    work_seq=work_seq, kind=w.KIND))
        return cls(work_seq, w.registrant, w.registrant, sha256=w.content.sha256, last=work_seq)

    def apply(self, seq: int, entry: Entry | Mapping[str, Any]) -> None:
        """Apply the transfer, acceptance or withdrawal at `seq`; IntegrityError unless the
        account entitled to at that moment made it (the audit replays every work's chain
        through this, as `chain_of_title` does)."""
        if seq <= self.last:
            raise InvalidInput("transfers must come after the work, in log order")
        self.last = seq
        t = _document(entry)
        if not isinstance(t, TITLE_KINDS) or t.work != WorkRef(seq=self.work_seq,
                                                               sha256=self.sha256):
            raise IntegrityError(said("entry {seq} is not a transfer of work {work_seq}",
                                      seq=seq, work_seq=self.work_seq), seq=seq)
        if isinstance(t, Transfer):
            self._transfer(seq, t)
        else:
            self._answer(seq, t)

    def _transfer(self, seq: int, t: Transfer) -> None:
        if t.from_account != self.holder or t.registrant != self.holder:
            raise IntegrityError(
                said("transfer {seq} was made by {registrant!r} from {from_account!r}, but "
                     "{holder!r} held the work then",
                     seq=seq, registrant=t.registrant, from_account=t.from_account,
                     holder=self.holder), seq=seq,
            )
        if self.pending is not None:
            raise IntegrityError(
                said("transfer {seq} was made while offer {seq2} to {to_account!r} was pending",
                     seq=seq, seq2=self.pending.seq, to_account=self.pending.to_account), seq=seq,
            )
        link = Link(seq, t.from_account, t.to_account, t.transfer_type, self.holder)
        if t.is_offer:
            self.pending = link
        elif t.transfer_type == "assignment":
            self.holder = t.to_account
            self.links.append(replace(link, holder_after=self.holder))
        else:
            self.licences.append(link)

    def _answer(self, seq: int, a: Acceptance | Withdrawal) -> None:
        offer = self.pending
        if offer is None or offer.seq != a.offer:
            raise IntegrityError(
                said("{kind} {seq} names offer {offer}, which is not pending on work {work_seq}",
                     kind=a.KIND, seq=seq, offer=a.offer, work_seq=self.work_seq), seq=seq,
            )
        entitled = offer.to_account if isinstance(a, Acceptance) else offer.from_account
        if a.registrant != entitled:
            who = {"kind": a.KIND, "seq": seq, "registrant": a.registrant, "entitled": entitled,
                   "offer": offer.seq}
            if isinstance(a, Acceptance):
                raise IntegrityError(said("{kind} {seq} was made by {registrant!r}, but only "
                                          "{entitled!r} may accept offer {offer}", **who),
                                     seq=seq)
            raise IntegrityError(said("{kind} {seq} was made by {registrant!r}, but only "
                                      "{entitled!r} may withdraw offer {offer}", **who), seq=seq)
        self.pending = None
        if isinstance(a, Acceptance):
            self.holder = offer.to_account
            self.links.append(replace(offer, seq=seq, holder_after=self.holder, offer=offer.seq))


def holder_after(title: Title, seq: int) -> str:
    """Who held the work just after the entry at `seq`: the registrant, or the holder after
    the last of the title's links at or before `seq`."""
    holder = title.registrant
    for link in title.links:
        if link.seq <= seq:
            holder = link.holder_after
    return holder


def stated(title: Title) -> dict[str, Any]:
    """The title as `GET /v1/works/{seq}/history` states it: who registered and who holds
    the work, its licences and the offer of assignment awaiting an answer (a client checks
    an answer's against its own replay of the links, `copyledger.verify.check_history`)."""
    return {
        "registrant": title.registrant,
        "holder": title.holder,
        "licences": [{"seq": li.seq, "to": li.to_account, "transfer_type": li.transfer_type}
                     for li in title.licences],
        "pending_offer": None if title.pending is None else {
            "seq": title.pending.seq, "from": title.pending.from_account,
            "to": title.pending.to_account, "transfer_type": title.pending.transfer_type},
    }


def chain_of_title(
    work_seq: int,
    work: Entry | Mapping[str, Any],
    transfers: Sequence[tuple[int, Entry | Mapping[str, Any]]],
) -> Title:
    """Replay `transfers` (seq, entry: transfers, acceptances, withdrawals), in seq order, on
    the work registered at `work_seq`.
    Entries may be typed documents or their JSON (validated here, as read from the log)."""
    title = Title.of(work_seq, work)
    for seq, entry in transfers:
        title.apply(seq, entry)
    return title


def _document(entry: Entry | Mapping[str, Any]) -> Entry:
    return parse_entry(entry) if isinstance(entry, Mapping) else entry
