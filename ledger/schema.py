"""The database schema (SQLAlchemy Core), shared by the store and the Alembic migrations."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
)

from copyledger.ledger.entry import valid_sha256

metadata = MetaData()


def key_text(value: object) -> str:
    """The text of a stored content-hash key: its 64 lowercase hex characters. Anything but 32
    bytes (a tampered SQLite row may hold text of any length there) comes out as a string no
    valid hash spells, so a check comparing it with an entry's hash fails instead of passing."""
    if type(value) is bytes and len(value) == 32:
        return value.hex()
    if isinstance(value, (bytearray, memoryview)) and len(value) == 32:
        return bytes(value).hex()
    return _no_hash(value)


def _no_hash(value: object) -> str:
    """A stored key that is not a hash, as text no hash spells (it cannot match an entry's)."""
    return f"<stored key {value!r}>"


def key_bytes(sha256: str) -> bytes | None:
    """The stored form of a content hash given as text: its 32 bytes when it is 64 lowercase
    hex characters (the only form entries take), else None, which a query compares as
    `IS NULL` and no row matches (the column is NOT NULL), so a lookup by a malformed hash
    finds nothing rather than failing. Writes do not come here: the store writes
    `bytes.fromhex` of hashes the entries were validated with."""
    return bytes.fromhex(sha256) if valid_sha256(sha256) else None


def text_key(value: object) -> str:
    """`key_text` for a schema before revision 0012, whose keys are the hex text itself: there
    anything but text (bytes, which SQLite lets in) reads as no hash, since every lookup
    compares text and would miss that row."""
    return value if isinstance(value, str) else _no_hash(value)


def _entries_table(md: MetaData, sha256: Any) -> Table:
    """One row per log entry. seq is the RFC 6962 leaf index; data is the canonical JSON leaf
    data; sha256 the content hash every lookup goes by, of type `sha256`."""
    return Table(
        "entries",
        md,
        Column("seq", BigInteger, primary_key=True, autoincrement=False),
        Column("leaf_hash", LargeBinary(32), nullable=False),
        Column("data", LargeBinary, nullable=False),
        Column("kind", String(16), nullable=False),
        Column("sha256", sha256, nullable=False),
        Column("registrant", String(64), nullable=False),
        Column("block_height", BigInteger, nullable=False),
        Index("ix_entries_sha256", "sha256", "seq"),
    )


# Content hashes as their 32 bytes since revision 0012 (D124): the two content-hash indexes are
# half the size of hex text's and compare bytes, not the server's collation. The store converts
# (`key_bytes`, `key_text`): every read and write of the column goes through it.
entries = _entries_table(metadata, LargeBinary(32))
# The table as revisions 0001-0011 have it, content hashes as 64 hex characters: what revision
# 0001 creates (a database at a revision has that revision's schema: `db copy` builds its
# target at the source's and copies rows as they are), and what the store reads an older
# schema by (`audit` reads one without upgrading it).
entries_text_keys = _entries_table(MetaData(), String(64))
TEXT_KEYS_BEFORE = "0012"  # the revision that stores content hashes as bytes (D124)
FRESH_COSIGNATURES_FROM = "0014"  # the revision that keeps each witness's newest line (D133)
WRITTEN_FROM = "0013"  # the revision that records entries written under a key (D132)
# An account's own registrations of a content hash (`Store.registered`); created by revision 0006,
# so it is not part of the table revision 0001 creates.
ENTRIES_BY_REGISTRANT = ("ix_entries_registrant_sha256", ("registrant", "sha256", "seq"))
# The works whose bytes hold the key "fingerprints" (`Store.iter_fingerprinted`: the
# near-duplicate index's rebuild reads only these, and nothing when none do; D90). A superset:
# a string value "fingerprints" matches too, and the parse decides. Each engine's predicate is
# written as the queries write it, so the planner can match the two; created by revision 0009.
# PostgreSQL's is bytea's escape form with no backslash, so it means the same bytes whatever
# the server's standard_conforming_strings (D91).
ENTRIES_FINGERPRINTED = "ix_entries_fingerprinted"
FINGERPRINTED_WHERE = {
    "sqlite": "kind = 'work' AND instr(data, X'2266696e6765727072696e747322') > 0",
    "postgresql":
        "kind = 'work' AND position('\"fingerprints\"'::bytea IN data) > 0",
}

# Every complete subtree hash: (level, idx) covers leaves [idx << level, (idx + 1) << level).
merkle_nodes = Table(
    "merkle_nodes",
    metadata,
    Column("level", SmallInteger, primary_key=True, autoincrement=False),
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", LargeBinary(32), nullable=False),
)

blocks = Table(
    "blocks",
    metadata,
    Column("height", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", LargeBinary(32), nullable=False, unique=True),
    Column("prev_hash", LargeBinary(32), nullable=False),
    Column("batch_root", LargeBinary(32), nullable=False),
    Column("first_seq", BigInteger, nullable=False),
    Column("count", BigInteger, nullable=False),
    Column("tree_size", BigInteger, nullable=False),
    Column("tree_root", LargeBinary(32), nullable=False),
    Column("sealed_at", String(40), nullable=False),
    Column("checkpoint", Text, nullable=False),
    Column("block_note", Text, nullable=False),
    Index("ix_blocks_tree_size", "tree_size"),
)

# RFC 3161 tokens over block hashes: our notary's, sealed with the block, and external TSAs'
# (added later, when they answer). One row per (block, TSA).
block_timestamps = Table(
    "block_timestamps",
    metadata,
    Column("height", BigInteger, primary_key=True, autoincrement=False),
    Column("tsa", String(255), primary_key=True),
    Column("token", LargeBinary, nullable=False),
)

# Which entry names which: transfers and claims on a work, counter-notices on a claim
# (`ledger/links.py`). Written with the entries, in the same transaction; recomputed by the audit.
entry_links = Table(
    "entry_links",
    metadata,
    Column("target", BigInteger, primary_key=True, autoincrement=False),
    Column("rel", String(16), primary_key=True),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Index("ix_entry_links_seq", "seq"),
)

# C2SP cosignatures of our checkpoints, one row per (tree size, witness vkey): the note signature
# line the witness returned, kept as it came (`notary/witnesses.py`, decision D30).
cosignatures = Table(
    "cosignatures",
    metadata,
    Column("tree_size", BigInteger, primary_key=True, autoincrement=False),
    Column("witness", String(255), primary_key=True),
    Column("line", Text, nullable=False),
)

# The newest cosignature each witness returned (D133), whatever tree size it cosigned: a witness
# asked again about an unchanged tree cosigns it again with a new time, so readers of the
# cosigned checkpoint and monitors can tell a log that is idle from one that froze. NOT
# append-only: one row per witness, replaced only by a line of a larger (size, time); the first
# line of each size stays in `cosignatures`.
fresh_cosignatures = Table(
    "fresh_cosignatures",
    metadata,
    Column("witness", String(255), primary_key=True),
    Column("tree_size", BigInteger, nullable=False),
    Column("cosigned_at", BigInteger, nullable=False),  # the line's timestamp (POSIX seconds)
    Column("line", Text, nullable=False),
)

# Claimants' contact details, kept off the log (decision D32): one row per claim entry that
# commits to them (`ledger/contact.py`). NOT append-only: erasure deletes the row, and the
# commitment left in the log then proves nothing about anyone.
claim_contacts = Table(
    "claim_contacts",
    metadata,
    Column("commitment", String(64), primary_key=True),
    Column("salt", String(64), nullable=False),
    Column("contact", Text, nullable=False),  # the RFC 8785 JSON of the contact object
    Column("created_at", String(40), nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key_hash", LargeBinary(32), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False),
    Column("role", String(16), nullable=False),
    Column("account", String(64), nullable=False),
    Column("created_at", String(40), nullable=False),
    Column("revoked_at", String(40), nullable=True),
)

# Idempotency-Key answers (decision D41): the first successful answer to a keyed write, replayed
# to a retry with the same key and body. NOT append-only: rows past their lifetime are deleted.
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("account", String(64), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("request_sha256", String(64), nullable=False),  # of the request it answered
    Column("status", SmallInteger, nullable=False),
    Column("answer", Text, nullable=False),  # the JSON answer, as sent
    Column("created", BigInteger, nullable=False, index=True),  # Unix seconds
    # While in flight, the token of the claim that holds it, so a claim acts on its own row
    # only, never on a later claim of the same request (D139); "" once that claim ended, and
    # in rows written by a release before D139.
    Column("holder", String(32), nullable=False, server_default=""),
)

# The entries written under an Idempotency-Key claim (D132), one row an entry, inserted by the
# block's own transaction: whether a keyed request was recorded is then known exactly, so a
# claim taken over from a dead process (or a kept 503) is answered with its entry, never
# written again. Only the sequencer inserts (keyed by seq, so never a conflict, and no lock on
# a row another process holds); rows past the keys' lifetime are deleted.
idempotency_written = Table(
    "idempotency_written",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("account", String(64), nullable=False),
    Column("key", String(255), nullable=False),
    Column("request_sha256", String(64), nullable=False),
    Column("created", BigInteger, nullable=False, index=True),  # Unix seconds, at the block
    Index("ix_idempotency_written_key", "account", "key"),
)

APPEND_ONLY = ("entries", "merkle_nodes", "blocks", "block_timestamps", "entry_links",
               "cosignatures")

# Who stands behind an account id, as the operator states it (D50): shown beside the id on
# certificates and pages, never written into the log. One row per account that has a profile.
accounts = Table(
    "accounts",
    metadata,
    Column("account", String(64), primary_key=True),
    Column("display_name", String(200), nullable=False),
    Column("kind", String(16), nullable=False),  # "person" or "organisation"
    Column("updated_at", String(40), nullable=False),
)

# Where the log's sequencer takes entries from the API processes of other hosts (D110): one
# row, written on the lock's own session by the process that starts to sequence with a network
# hand-over. NOT append-only: each new sequencer replaces it.
sequencer_address = Table(
    "sequencer_address",
    metadata,
    Column("id", SmallInteger, primary_key=True),  # always 1
    Column("address", String(300), nullable=False),  # host:port, as the other hosts reach it
    Column("since", String(40), nullable=False),  # when it was written (RFC 3339, UTC)
)

# Which hand-over secret the hosts share (D113): one row, the secret's check (an HMAC under the
# secret of a fixed label, never the secret), recorded by the first process to sequence with a
# network hand-over; a process with another secret does not sequence. NOT append-only:
# `copyledger db forget-handoff-secret` deletes it when every host's secret is changed.
handoff_secret = Table(
    "handoff_secret",
    metadata,
    Column("id", SmallInteger, primary_key=True),  # always 1
    Column("secret_check", String(64), nullable=False),  # hex
    Column("since", String(40), nullable=False),  # when it was recorded (RFC 3339, UTC)
)
