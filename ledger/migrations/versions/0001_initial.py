"""Initial ledger schema with append-only triggers on both engines."""

from __future__ import annotations

from alembic import op

from copyledger.ledger.migrations.triggers import append_only
from copyledger.ledger.schema import api_keys, blocks, entries, merkle_nodes

revision = "0001"
down_revision = None


def upgrade() -> None:
    bind = op.get_bind()
    for table in (entries, merkle_nodes, blocks, api_keys):
        table.create(bind)
    for name in ("entries", "merkle_nodes", "blocks"):
        append_only(name)
