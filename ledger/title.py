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


def chain_of_title(
    work_seq: int,
    work: Entry | Mapping[str, Any],
    transfers: Sequence[tuple[int, Entry | Mapping[str, Any]]],
) -> Title:
    """Replay `transfers` (seq, entry), in seq order, on the work registered at `work_seq`.
    Entries may be typed documents or their JSON (validated here, as read from the log)."""
    w = _document(work)
    if not isinstance(w, Work):
        raise InvalidInput(f"entry {work_seq} is a {w.KIND}, not a work")
    ref = WorkRef(seq=work_seq, sha256=w.content.sha256)
    title = Title(work_seq, w.registrant, w.registrant)
    last = work_seq
    for seq, entry in transfers:
        if seq <= last:
            raise InvalidInput("transfers must come after the work, in log order")
        last = seq
        t = _document(entry)
        if not isinstance(t, Transfer) or t.work != ref:
            raise IntegrityError(f"entry {seq} is not a transfer of work {work_seq}", seq=seq)
        if t.from_account != title.holder or t.registrant != title.holder:
            raise IntegrityError(
                f"transfer {seq} was made by {t.registrant!r} from {t.from_account!r}, but "
                f"{title.holder!r} held the work then", seq=seq,
            )
        link = Link(seq, t.from_account, t.to_account, t.transfer_type, title.holder)
        if t.transfer_type == "assignment":
            title.holder = t.to_account
            title.links.append(replace(link, holder_after=title.holder))
        else:
            title.licences.append(link)
    return title


def _document(entry: Entry | Mapping[str, Any]) -> Entry:
    return parse_entry(entry) if isinstance(entry, Mapping) else entry
