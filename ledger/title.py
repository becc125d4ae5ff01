"""Chain of title: who holds the rights in a registered work after its recorded transfers.

Pure: given the work's entry and its transfer entries in log order, replay them. The registrant
holds a work first; an assignment moves it to `to`; licences leave the holder unchanged. Only the
holder of the moment may assign or license, so a link recorded by anyone else breaks the chain
(the API refuses such a transfer; this replay lets anyone check that it did).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

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
    work_seq: int, work: dict[str, Any], transfers: Sequence[tuple[int, dict[str, Any]]]
) -> Title:
    """Replay `transfers` (seq, entry), in seq order, on the work registered at `work_seq`."""
    if work.get("kind") != "work":
        raise InvalidInput(f"entry {work_seq} is a {work.get('kind')}, not a work")
    sha = work["content"]["sha256"]
    title = Title(work_seq, work["registrant"], work["registrant"])
    last = work_seq
    for seq, t in transfers:
        if seq <= last:
            raise InvalidInput("transfers must come after the work, in log order")
        last = seq
        if t.get("kind") != "transfer" or t["work"] != {"seq": work_seq, "sha256": sha}:
            raise IntegrityError(f"entry {seq} is not a transfer of work {work_seq}", seq=seq)
        if t["from"] != title.holder or t["registrant"] != title.holder:
            raise IntegrityError(
                f"transfer {seq} was made by {t['registrant']!r} from {t['from']!r}, but "
                f"{title.holder!r} held the work then", seq=seq,
            )
        if t["transfer_type"] == "assignment":
            title.holder = t["to"]
            title.links.append(Link(seq, t["from"], t["to"], "assignment", title.holder))
        else:
            title.licences.append(Link(seq, t["from"], t["to"], t["transfer_type"],
                                       title.holder))
    return title
