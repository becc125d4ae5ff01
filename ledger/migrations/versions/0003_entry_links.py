"""Links from transfers and claims to the works (and claims) they name, backfilled from the log.

Before this revision chains of title and claims were found by content hash, so entries anyone
registered with the same hash made them slow and, past a row limit, wrong.
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import select

from copyledger.ledger.documents import parse_entry
from copyledger.ledger.errors import CopyledgerError
from copyledger.ledger.links import LINKED_KINDS, links_of, resolve
from copyledger.ledger.migrations.triggers import append_only
from copyledger.ledger.schema import entries_text_keys as entries
from copyledger.ledger.schema import entry_links

revision = "0003"
down_revision = "0002"

# `entries` here is the table as revision 0001 made it: content hashes as hex text (D124).


def upgrade() -> None:
    bind = op.get_bind()
    entry_links.create(bind)
    append_only("entry_links")

    def first_work(sha256: str) -> int | None:
        q = (select(entries.c.seq)
             .where(entries.c.sha256 == sha256, entries.c.kind == "work")
             .order_by(entries.c.seq).limit(1))
        found = bind.execute(q).scalar()
        return None if found is None else int(found)

    q = (select(entries.c.seq, entries.c.data)
         .where(entries.c.kind.in_(sorted(LINKED_KINDS))).order_by(entries.c.seq))
    rows = []
    for seq, data in bind.execute(q).all():
        try:
            doc = parse_entry(bytes(data))
        except CopyledgerError:  # a damaged entry: the audit names it; nothing to link
            continue
        rows += resolve(seq, links_of(doc), first_work)
    if rows:
        bind.execute(entry_links.insert(),
                     [{"target": t, "seq": s, "rel": r} for t, s, r in rows])
