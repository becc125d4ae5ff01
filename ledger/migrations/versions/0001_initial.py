"""Initial ledger schema with append-only triggers on both engines."""

from __future__ import annotations

from alembic import op

from copyledger.ledger.migrations.triggers import append_only
from copyledger.ledger.schema import api_keys, blocks, entries_text_keys, merkle_nodes

revision = "0001"
down_revision = None


def upgrade() -> None:
    bind = op.get_bind()
    # Content hashes as hex text, as this revision made them; 0012 makes them bytes (D124).
    for table in (entries_text_keys, merkle_nodes, blocks, api_keys):
        table.create(bind)
    for name in ("entries", "merkle_nodes", "blocks"):
        append_only(name)
