"""Chain of title: who holds the rights in a registered work after its recorded transfers.

Pure: given the work's entry and its transfer entries in log order, replay them. The registrant
holds a work first; an assignment moves it to `to`; licences leave the holder unchanged. Only the
holder of the moment may assign or license, so a link recorded by anyone else breaks the chain
(the API refuses such a transfer; this replay lets anyone check that it did).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from copyledger.ledger.documents import Entry, Transfer, Work, WorkRef, parse_entry
from copyledger.ledger.errors import IntegrityError, InvalidInput


@dataclass(frozen=True)
class Link:
    seq: int
    from_account: str
    to_account: str
    transfer_type: str
    holder_after: str


@dataclass
class Title:
    work_seq: int
    registrant: str
    holder: str
    links: list[Link] = field(default_factory=list)
    licences: list[Link] = field(default_factory=list)
    sha256: str = ""  # the work's content hash, which each transfer must name
    last: int = -1  # the seq of the last entry applied (the work, then each transfer)

    @classmethod
    def of(cls, work_seq: int, work: Entry | Mapping[str, Any]) -> Title:
        """The title of a freshly registered work: its registrant holds it."""
        w = _document(work)
        if not isinstance(w, Work):
            raise InvalidInput(f"entry {work_seq} is a {w.KIND}, not a work")
        return cls(work_seq, w.registrant, w.registrant, sha256=w.content.sha256, last=work_seq)

    def apply(self, seq: int, entry: Entry | Mapping[str, Any]) -> None:
        """Apply the transfer at `seq`; IntegrityError unless the holder of the moment made it
        (the audit replays every work's transfers through this, as `chain_of_title` does)."""
        if seq <= self.last:
            raise InvalidInput("transfers must come after the work, in log order")
        self.last = seq
        t = _document(entry)
        if not isinstance(t, Transfer) or t.work != WorkRef(seq=self.work_seq, sha256=self.sha256):
            raise IntegrityError(f"entry {seq} is not a transfer of work {self.work_seq}", seq=seq)
        if t.from_account != self.holder or t.registrant != self.holder:
            raise IntegrityError(
                f"transfer {seq} was made by {t.registrant!r} from {t.from_account!r}, but "
                f"{self.holder!r} held the work then", seq=seq,
            )
        link = Link(seq, t.from_account, t.to_account, t.transfer_type, self.holder)
        if t.transfer_type == "assignment":
            self.holder = t.to_account
            self.links.append(replace(link, holder_after=self.holder))
        else:
            self.licences.append(link)


def chain_of_title(
    work_seq: int,
    work: Entry | Mapping[str, Any],
    transfers: Sequence[tuple[int, Entry | Mapping[str, Any]]],
) -> Title:
    """Replay `transfers` (seq, entry), in seq order, on the work registered at `work_seq`.
    Entries may be typed documents or their JSON (validated here, as read from the log)."""
    title = Title.of(work_seq, work)
    for seq, entry in transfers:
        title.apply(seq, entry)
    return title


def _document(entry: Entry | Mapping[str, Any]) -> Entry:
    return parse_entry(entry) if isinstance(entry, Mapping) else entry
