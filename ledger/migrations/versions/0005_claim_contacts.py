"""Claimants' contact details off the log, in an erasable table (decision D32).

Claims logged before this revision keep their contact details in the entry: the log is
append-only, so they cannot be moved; `docs/privacy.md` says so.
"""

from __future__ import annotations

from alembic import op

from copyledger.ledger.schema import claim_contacts

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    claim_contacts.create(op.get_bind())
