"""Links between entries: which transfers and claims name which work, which notices answer which.

Chains of title, claim timelines and claim checks read a work's links (the `entry_links` table),
so their cost depends on that work's own transfers and claims, never on how many other entries
share its content hash. Links are a pure function of the entries, so the audit recomputes them.

A transfer, and an acceptance or withdrawal of an offer of assignment, links to its `work.seq`
(`TRANSFER`): all three are links in the work's chain of title. A claim links to each work it
names by `seq` (`CLAIM`); a work it names only by `sha256` is linked to the EARLIEST `work` entry
with that hash before the claim (none if there is none), and a counter-notice links to the
notice it answers,
`refers_to` (`REPLY`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from copyledger.ledger.documents import Acceptance, Claim, Entry, Transfer, Withdrawal

TRANSFER = "transfer"  # a transfer of the target work, or an answer to an offer of it
CLAIM = "claim"  # a notice or counter-notice on the target work
REPLY = "reply"  # a counter-notice answering the target claim
LINKED_KINDS = frozenset({Transfer.KIND, Acceptance.KIND, Withdrawal.KIND, Claim.KIND})

Target = int | str
"""A linked entry's seq, or a content hash still to be resolved to the earliest work with it."""

Link = tuple[int, int, str]
"""(target seq, linking entry's seq, relation): one `entry_links` row."""


def links_of(doc: Entry) -> tuple[tuple[Target, str], ...]:
    """The (target, relation) pairs `doc` names, a str target being a work's content hash."""
    if isinstance(doc, Transfer | Acceptance | Withdrawal):
        return ((doc.work.seq, TRANSFER),)
    if not isinstance(doc, Claim):
        return ()
    out: dict[tuple[Target, str], None] = {}
    for w in doc.works or ():
        if w.seq is not None:
            out[(w.seq, CLAIM)] = None
        elif w.sha256 is not None:
            out[(w.sha256, CLAIM)] = None
    if doc.refers_to is not None:
        out[(doc.refers_to, REPLY)] = None
    return tuple(out)


def resolve(
    seq: int, targets: Iterable[tuple[Target, str]], first_work: Callable[[str], int | None]
) -> list[Link]:
    """The link rows of the entry at `seq`, sorted: hash targets become the earliest work with
    that hash (`first_work`) if it precedes `seq`, else are dropped."""
    rows: set[Link] = set()
    for target, rel in targets:
        if isinstance(target, str):
            found = first_work(target)
            if found is None or found >= seq:
                continue
            target = found
        rows.add((target, seq, rel))
    return sorted(rows)
