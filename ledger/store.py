"""Storage: SQLAlchemy Core over SQLite (WAL, embedded default) or PostgreSQL.

The store only reads and writes rows; it never decides what a hash should be. Writes come in one
shape, a whole sealed block in one transaction, so a crash leaves either the whole block or nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hmac
import logging
import os
import re
import socket
import sqlite3
import threading
import time
from collections import namedtuple
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, NamedTuple

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import (
    Connection,
    Engine,
    Select,
    Table,
    bindparam,
    create_engine,
    event,
    func,
    inspect,
    null,
    or_,
    select,
    text,
    tuple_,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import IntegrityError as SAIntegrityError

from copyledger.ledger import merkle, runs
from copyledger.ledger.entry import valid_sha256
from copyledger.ledger.errors import (
    Conflict,
    IntegrityError,
    LockLost,
    NotFound,
    WrongSecret,
    said,
)
from copyledger.ledger.links import Link
from copyledger.ledger.note import BlockHeader
from copyledger.ledger.schema import (
    FINGERPRINTED_WHERE,
    FRESH_COSIGNATURES_FROM,
    TEXT_KEYS_BEFORE,
    WRITTEN_FROM,
    block_timestamps,
    blocks,
    claim_contacts,
    cosignatures,
    entries,
    entries_text_keys,
    entry_links,
    fresh_cosignatures,
    handoff_secret,
    idempotency_written,
    key_bytes,
    key_text,
    merkle_nodes,
    sequencer_address,
    text_key,
)

log = logging.getLogger("copyledger.store")

UPKEEP_WAIT_S = (1.0, 60.0)  # the wait after a failed step of the runs' upkeep: first, at most
UPKEEP_ROWS_AN_ENTRY = 8  # rows of the runs' upkeep a written entry owes (D142)
# A writer with blocks waiting steps anyway past either bound (D144): rows of upkeep owed
# (those of 25,000 entries), or level-0 runs listed (each a block's, each sought by every
# lookup, the writer's own included: small blocks must not pile up thousands).
UPKEEP_MOST_OWED = 25_000 * UPKEEP_ROWS_AN_ENTRY
UPKEEP_MOST_BLOCK_RUNS = 4 * runs.FANOUT
# SQLite's steps between two looks at the audit's stop (D143): each look takes the GIL, so
# 100,000 (some 470 a second) made the check twice as slow beside a busy thread; this is about
# one look in 0.2 s.
RUNS_CHECK_STEPS = 10_000_000

LOCK_IDLE_PING_S = 1.0
"""A sequencer idle this long asks its lock's session for a round trip before its next block
(`check_sequencer_lock`): a session that ended while no block was written (a PostgreSQL
restart overnight) is then found before the block is signed, not by the block failing. Under
load blocks come every few milliseconds and none is asked (D109)."""

_COPY_FROM = 8
"""Rows from which a PostgreSQL insert goes by COPY. psycopg's executemany costs ~20 µs of our
CPU a row, COPY a few: a block of 30 entries (and its ~60 nodes) took 1.64 ms of the
sequencer's CPU by executemany and 0.70 by COPY, 8 entries 0.88 and 0.64; at 1-4 rows the two
are within 10 % (D96)."""
_ENTRY_COLS = ("seq", "leaf_hash", "data", "kind", "sha256", "registrant", "block_height")
_NODE_COLS = ("level", "idx", "hash")
_COPY_BINARY = {
    "entries": ("int8", "bytea", "bytea", "varchar", "bytea", "varchar", "int8"),
    "merkle_nodes": ("int2", "int8", "bytea"),
}
"""PostgreSQL types of the columns a block's COPY sends in binary, in `_ENTRY_COLS` and
`_NODE_COLS` order: bytes go as they are, not hex-escaped as text, and the server parses no
text. A block of 1,000 entries and 2,000 nodes: our CPU 4.36 -> 3.09 ms, wall 19.6 -> 17.3 ms
(D100). Not every mistake here fails the COPY (text and varchar are alike on the wire, two
columns of one type could be swapped, and psycopg's int2 writer wraps a value out of range:
a Merkle level is below 64), so a test reads them from `schema` in that order."""
_BLOCK_COLS = ("height", "hash", "prev_hash", "batch_root", "first_seq", "count", "tree_size",
               "tree_root", "sealed_at", "checkpoint", "block_note")
MIGRATIONS = Path(__file__).with_name("migrations")
SEQUENCER_LOCK_ID = 0x636F70796C656467  # "copyledg": PostgreSQL advisory lock for the one sequencer
MIGRATION_LOCK_ID = 0x636F70796D696772  # "copymigr": one migrating process at a time (D115)
MIGRATION_WAIT_S = 600  # how long a starting process waits for another's migrations
SQLITE_BUSY_MS = 10_000  # how long a SQLite statement waits for another process's write lock


class EntryRow(NamedTuple):
    """An entries row, its fields in the table's column order (`_ENTRY_COLS`), so a block's
    rows go to the driver as they are. A named tuple: made thousands of times a block, at a
    seventh of a frozen dataclass's cost (D82)."""

    seq: int
    leaf_hash: bytes
    data: bytes
    kind: str
    sha256: str
    registrant: str
    block_height: int


EntryTuple = tuple[int, bytes, bytes, str, str, str, int]
"""An entry row as `Store.iter_entry_tuples` reads it: (seq, leaf_hash, data, kind, sha256,
registrant, block_height)."""
ScanMark = tuple[object, int]
"""Where a page of `Store.content_hashes` ended: the last row's stored key and seq."""
BlockTuple = tuple[int, bytes, bytes, bytes, int, int, int, bytes, str, str, str]
"""A blocks row as the driver gives it: height, hash, prev_hash, batch_root, first_seq, count,
tree_size, tree_root, sealed_at, checkpoint, block_note."""


@dataclass(frozen=True)
class BlockRow:
    header: BlockHeader
    hash: bytes
    checkpoint: str
    block_note: str


class CachedReader:
    """In-memory node hashes first, then a fallback reader (the store) for the rest. The
    sequencer proves fresh entries from the nodes it just computed; the audit checks roots from
    nodes it recomputed. `also`: nodes to fetch with the first read that goes to the fallback
    (a proof's leaf and roots, with its path: one statement for the whole proof, D84)."""

    def __init__(self, nodes: dict[merkle.NodeId, bytes], fallback: merkle.HashReader,
                 also: Sequence[merkle.NodeId] = ()) -> None:
        self.nodes = nodes
        self.fallback = fallback
        self.also = also

    def read_hashes(self, ids: Sequence[merkle.NodeId]) -> list[bytes]:
        wanted = (*ids, *self.also) if self.also else ids
        missing = [i for i in wanted if i not in self.nodes]
        if missing:
            self.also = ()
            self.nodes.update(zip(missing, self.fallback.read_hashes(missing), strict=True))
        return [self.nodes[i] for i in ids]


def _block_values(block: BlockRow) -> tuple[Any, ...]:
    """A block's row of `blocks`, in `_BLOCK_COLS` order."""
    h = block.header
    return (h.height, block.hash, h.prev_block_hash, h.batch_root, h.first_seq, h.count,
            h.tree_size, h.tree_root, h.sealed_at, block.checkpoint, block.block_note)


_HEX_LIST = re.compile(r"[0-9a-f]+(?:,[0-9a-f]+)*")


def _text_array(values: list[str]) -> str | list[str]:
    """A PostgreSQL `text[]` parameter: content hashes (lowercase hex, as validated) as the
    array's literal, which psycopg sends as one string; its list dumper took 2.45-2.50 ms of
    this thread's CPU for 1,000 hashes against 0.86-0.99 (D100). Anything else goes as the list: a
    literal element may not hold a comma, a brace, a quote or spell NULL."""
    joined = ",".join(values)
    plain = _HEX_LIST.fullmatch(joined) and joined.count(",") == len(values) - 1  # no comma in one
    return "{" + joined + "}" if plain else values


SQLITE_CACHE_KIB = 16_384
"""Each SQLite connection's page cache, in KiB (D87)."""
SQLITE_WAL_PAGES = 50_000
"""WAL pages after which a commit checkpoints (D87, D100; SQLite's default is 1,000)."""


def _wal(cur: Any) -> None:
    """Put the database in WAL mode. Processes opening a new database at once (hosts or
    `serve --workers` starting together, D115) each switch it, and SQLite answers one of them
    "database is locked" at once, without waiting: each holds a read lock the other's switch
    must wait for. Measured with three processes, 38 of 100 starts on a fresh file; so the
    switch is tried again, for up to the busy timeout."""
    deadline = time.monotonic() + SQLITE_BUSY_MS / 1000
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if e.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
        time.sleep(0.01)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
    _wal(cur)
    # FULL: a commit is on disk before the receipt goes out, even across a power cut.
    cur.execute("PRAGMA synchronous=FULL")
    # A 16 MiB page cache (SQLite's default is 2 MiB): a block's entries land at random places
    # in the two content-hash indexes, and with the small cache each of those pages was read
    # again from the file for every block once the indexes outgrew it (past ~20,000 entries;
    # D87: with the checkpoint below, the seal at 62,000 entries 30 -> 22-24 µs an entry).
    # Durability is unchanged.
    cur.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
    # The WAL copied back into the database every 50,000 pages (~200 MB), not SQLite's 1,000:
    # a 1,000-entry block dirties ~2,000 index pages, so every commit also checkpointed, and
    # the same hot pages were copied back block after block (D87: the commit 10-12 -> 8 µs an
    # entry, at 10,000 pages). The more blocks between checkpoints, the more of those random
    # pages each copy-back writes once for several blocks: at 600,000 entries the commit's
    # bytes an entry 22.5 -> 17.3 KB and batches 12,059-12,628 -> 14,430-14,699 entries/s
    # (D100). Each commit is still synced before it returns; recovery replays a longer WAL.
    cur.execute(f"PRAGMA wal_autocheckpoint={SQLITE_WAL_PAGES}")
    cur.close()


TCP_KEEPALIVE = (10, 5, 3)
"""A TCP connection between hosts, idle: first probed after 10 s, then every 5 s, dropped after
3 probes unanswered; busy: dropped when what it sent stays unacknowledged (10 + 5 x 3) s. A
host that vanished (its power, a partition) is noticed in about 25 s either way; Linux's own
defaults wait 15 minutes to over two hours. The hand-over's connections use it
(`service.handoff`), and both sides of each PostgreSQL connection (PG_SERVER_KEEPALIVE,
PG_CLIENT_KEEPALIVE)."""

_IDLE, _INTERVAL, _COUNT = TCP_KEEPALIVE
TCP_USER_TIMEOUT_MS = (_IDLE + _INTERVAL * _COUNT) * 1000
"""What was sent may stay unacknowledged this long (TCP_KEEPALIVE's busy case)."""
PG_SERVER_KEEPALIVE = {"tcp_keepalives_idle": _IDLE, "tcp_keepalives_interval": _INTERVAL,
                       "tcp_keepalives_count": _COUNT, "tcp_user_timeout": TCP_USER_TIMEOUT_MS}
"""TCP_KEEPALIVE on the server's side of each PostgreSQL session over TCP (D112). The server's
default is the operating system's: a host that vanished kept its sessions for hours, and with
them the sequencer's advisory lock, so no other host could take the log over. Ignored by the
server on a Unix socket."""


LOCK_STUCK_S = TCP_USER_TIMEOUT_MS / 1000
"""A round trip on the lock's session unanswered this long may never be answered (D126): the
server ends a session whose host it cannot reach in this time (PG_SERVER_KEEPALIVE), but a
host cut off in the middle of a statement learns it only when its kernel next retransmits
after the link is back, up to two minutes later by TCP's backoff. Past this, the lock's
watch asks the server on a connection of its own whether the session still holds the lock."""
LOCK_WATCH_S = 1.0
"""How often the lock's watch looks at the lock's session."""
_LOCK_PROBE_TIMEOUT_S = 5
"""The watch's question to the server gives up about this long after the server stops
answering: connecting, data unacknowledged, or an answer that never comes (keepalives)."""
_LOCK_PROBE = {"connect_timeout": _LOCK_PROBE_TIMEOUT_S,
               "tcp_user_timeout": _LOCK_PROBE_TIMEOUT_S * 1000,
               "keepalives": 1, "keepalives_idle": 2, "keepalives_interval": 1,
               "keepalives_count": 3}
_LOCK_LIVES_BACKOFF_S = 5.0
"""After the server says a slow statement's session still holds the lock, the watch asks
again this much later, not every LOCK_WATCH_S."""


PG_CLIENT_KEEPALIVE = {"keepalives": 1, "keepalives_idle": _IDLE,
                       "keepalives_interval": _INTERVAL, "keepalives_count": _COUNT,
                       "tcp_user_timeout": TCP_USER_TIMEOUT_MS}
"""TCP_KEEPALIVE on this process's side of each PostgreSQL connection over TCP (libpq's
settings; a Unix socket ignores them): a call waiting for an answer that a vanished server, or
a cut link, will never bring fails in about 25 s (the keepalives, D126), and so does one whose
statement stays unacknowledged (`tcp_user_timeout`, D127), not after the operating system's
two hours or TCP's 15 minutes of retransmissions. The user timeout also ends a write into a
server that has stopped reading (Linux counts the answered zero-window probes against it,
seen here on 6.18): a COPY, the statement that sends megabytes while the server works through
them, lifts it for its duration (`sends_may_wait`). A setting the database URL names is left
as the URL gives it; a URL that names any keepalive setting gets no user timeout it did not
name either (on Linux a user timeout also decides when unanswered keepalives end a
connection, which would change what the URL asked for)."""


@contextmanager
def sends_may_wait(driver: Any) -> Iterator[None]:
    """While inside, what this psycopg connection sends may stay unacknowledged for as long
    as the server takes to read it (its TCP user timeout lifted, then restored): for a COPY,
    whose rows fill the window while the server waits on a lock or a slow disk and answers
    only the zero-window probes, which a user timeout would count as a dead link (D127). The
    price: a link that dies while the COPY sends is noticed only after TCP's retransmissions
    (about 15 minutes), as before D127; the lock's session has its watch for that (D126).
    Nothing to lift on a Unix socket, or where the system has no such option."""
    opt = getattr(socket, "TCP_USER_TIMEOUT", None)
    if opt is None:
        yield
        return
    fd = os.dup(driver.pgconn.socket)
    try:
        sock = socket.socket(fileno=fd)
    except BaseException:
        os.close(fd)
        raise
    with sock:
        tcp = sock.family in (socket.AF_INET, socket.AF_INET6)
        was = sock.getsockopt(socket.IPPROTO_TCP, opt) if tcp else 0
        if was:
            sock.setsockopt(socket.IPPROTO_TCP, opt, 0)
        try:
            yield
        finally:
            if was:
                with suppress(OSError):  # (a connection that broke meanwhile: nothing to keep)
                    sock.setsockopt(socket.IPPROTO_TCP, opt, was)


def _set_all(settings: Mapping[str, object]) -> str:
    return "SELECT " + ", ".join(f"set_config('{k}', '{v}', false)" for k, v in settings.items())


_PG_SESSION = _set_all(PG_SERVER_KEEPALIVE)
_PG11_SESSION = _set_all({k: v for k, v in PG_SERVER_KEEPALIVE.items()
                          if k != "tcp_user_timeout"})  # (PostgreSQL 12's)
# A read connection (`_read_pool`) also plans each statement once, its parameters unseen
# (D151; PostgreSQL 12's setting, so 11 keeps its own choice). Left to choose, PostgreSQL
# planned the proofs' node read afresh at every execution: its generic plan's estimate (a
# range of leaves it cannot see, D149, and an array it takes for ten) looked dearer than each
# custom plan, though both read the same rows through the primary key, and the planning cost
# about 0.1 ms a read. The reads on these connections (the API's, the sequencer's, the
# audit's) are probes and ranges of the primary keys and of the registrant's index; those
# checked keep the plan their custom one had. And no JIT compilation (D153): a generic plan's
# cost is that estimate, which grows with the table, and past `jit_above_cost` PostgreSQL
# compiled the node read at every execution, about 5 ms, at 10 M entries (at 2 M it was under).
_PG_READ_SESSION = _set_all({**PG_SERVER_KEEPALIVE, "plan_cache_mode": "force_generic_plan",
                             "jit": "off"})


def _pg_session(dbapi_conn: Any, _record: Any, session: str = _PG_SESSION) -> None:
    """Each new PostgreSQL connection: `session`'s settings (`PG_SERVER_KEEPALIVE`, and a
    read connection's plan mode and JIT; every one a session may set), in one statement; on
    PostgreSQL 11 the keepalives it has."""
    with dbapi_conn.cursor() as cur:
        cur.execute(session if dbapi_conn.info.server_version >= 120000 else _PG11_SESSION)
    dbapi_conn.commit()


def _client_keepalive(given: Mapping[str, Any]) -> dict[str, int]:
    """PG_CLIENT_KEEPALIVE less what the URL's query names, and less the user timeout when
    the URL tunes its keepalives itself (see there)."""
    tuned = any(k.startswith("keepalives") for k in given)
    return {k: v for k, v in PG_CLIENT_KEEPALIVE.items()
            if k not in given and not (tuned and k == "tcp_user_timeout")}


def _pg_engine(url: Any, session: str = _PG_SESSION, **kw: Any) -> Engine:
    engine = create_engine(url, pool_size=10, max_overflow=10,
                           connect_args=_client_keepalive(make_url(url).query), **kw)
    event.listen(engine, "connect", functools.partial(_pg_session, session=session))
    return engine


# Proofs read a few dozen nodes scattered over the levels. One statement per proof, by the
# primary key, sent to the driver as a plain string (SQLite's and psycopg's statement caches
# then skip the parsing): building it with SQLAlchemy cost 7 ms of CPU a proof at 1M (D70).
# A row-value `IN ((level, idx), ...)` would make SQLite scan the whole table (D59).
_NODES_PER_QUERY = 64


@functools.lru_cache(maxsize=_NODES_PER_QUERY * 4)
def _nodes_sql(n: int, mark: str, leaves: bool = False) -> str:
    """SELECT of `n` nodes by (level, idx): an OR of primary-key equalities, which SQLite
    answers with one index probe each; with `leaves`, first a range of leaves (level 0, idx
    from the first parameter up to the second), one more probe (D149)."""
    terms = [f"(level = 0 AND idx >= {mark} AND idx < {mark})"] if leaves else []
    terms += [f"(level = {mark} AND idx = {mark})"] * n
    return f"SELECT level, idx, hash FROM merkle_nodes WHERE {' OR '.join(terms)}"


# PostgreSQL's read of any number of nodes: ONE text whatever the count, so psycopg prepares it
# on each connection after a few uses (`prepare_threshold`) and PostgreSQL plans it once there
# (a nested loop of primary-key probes; once only since D151, which the read connections need
# for it); the OR above had a text per count, each planned anew until prepared, and planning
# cost as much as running it (0.15-0.7 ms at 10 M, D89).
# Always with the range of leaves of D149 (empty when none is wanted): still one text, and
# its bounds sent as text like the arrays, so psycopg prepares it once whatever their size
# (it keys a prepared statement by its parameters' types, and types an int by its value).
_PG_NODES_SQL = ("SELECT m.level, m.idx, m.hash FROM unnest(%s::smallint[], %s::bigint[]) "
                 "AS w(level, idx) JOIN merkle_nodes m ON m.level = w.level AND m.idx = w.idx "
                 "UNION ALL SELECT level, idx, hash FROM merkle_nodes "
                 "WHERE level = 0 AND idx >= %s::bigint AND idx < %s::bigint")


def _pg_array(values: list[int]) -> str:
    """PostgreSQL's text form of an integer array, `{1,2,3}`."""
    return "{" + ",".join([str(v) for v in values]) + "}"


# Nodes at level >= UPPER_LEVEL (subtrees of 1,024 leaves and more) are kept in memory once a
# read has fetched them: a log of n entries has about n/512 of them, and every proof and root
# needs some. At most UPPER_MAX_NODES are kept: about 12 MiB (a tuple key, a 32-byte bytes
# value and the dict slot, ~180 bytes each), all of them up to 33 million entries (D70).
UPPER_LEVEL = 10
UPPER_MAX_NODES = 1 << 16
# Levels below UPPER_LEVEL, from the lowest whose nodes (with those of the levels above it, up
# to UPPER_LEVEL) fit in LEVELS_MAX_BYTES, are kept once `warm_levels` has read them at start:
# each level as one bytes string of its hashes in idx order, 32 bytes a node and no object a
# node (D148). At 10 M entries: levels 5-9, 606,072 nodes, 18.5 MiB (each API process).
LEVELS_MAX_BYTES = 32 << 20
_LEVEL_READ_ROWS = 1 << 16  # `warm_levels` reads a level this many nodes at a time
# A read that wants two or more nodes below this level within one aligned block of
# 2**LEAF_BLOCK_LEVEL leaves (a proof's lowest siblings) reads that block's leaves as one range
# and makes those nodes from them (D149): one or two pages instead of a page a node.
LEAF_BLOCK_LEVEL = 5


def _leaf_block(wanted: Sequence[merkle.NodeId]) -> tuple[int, int, list[merkle.NodeId]]:
    """The aligned block of 2**LEAF_BLOCK_LEVEL leaves that holds the most of `wanted`'s nodes
    below LEAF_BLOCK_LEVEL, as (first leaf, end, those nodes); (0, 0, []) if none holds two."""
    blocks: dict[int, list[merkle.NodeId]] = {}
    for lv, ix in wanted:
        if 0 <= lv < LEAF_BLOCK_LEVEL and ix >= 0:
            blocks.setdefault((ix << lv) >> LEAF_BLOCK_LEVEL, []).append((lv, ix))
    if not blocks:
        return 0, 0, []
    block, nodes = max(blocks.items(), key=lambda b: len(b[1]))
    if len(nodes) < 2:
        return 0, 0, []
    return block << LEAF_BLOCK_LEVEL, (block + 1) << LEAF_BLOCK_LEVEL, nodes


_BLOCK_FOR_SIZE = (select(blocks).where(blocks.c.tree_size == bindparam("tree_size"))
                   .order_by(blocks.c.height).limit(1))
# A bundle's reads by key (D89): on the read path, one round trip each on PostgreSQL instead of
# a ping, a BEGIN, the SELECT and a ROLLBACK.
_GET_BLOCK = select(blocks).where(blocks.c.height == bindparam("height"))
_GET_TIMESTAMPS = (select(block_timestamps.c.tsa, block_timestamps.c.token)
                   .where(block_timestamps.c.height == bindparam("height"))
                   .order_by((block_timestamps.c.tsa != "notary"), block_timestamps.c.tsa))
_BLOCKS_BY_SIZE_MAX = 1024  # blocks kept by block_for_size: ~2 KiB each (two signed notes)


class _DriverQuery:
    """A hot read statement run straight on the driver's cursor (`Store._cursor`): compiled
    once for the engine's dialect (so one code path serves SQLite and PostgreSQL), its rows
    named as SQLAlchemy's would be. The Connection layer cost about 130 µs of CPU a call
    against 30 µs this way (SQLite, the D36 read `find_work` then; D69)."""

    def __init__(self, store: Store, stmt: Select[Any]) -> None:
        compiled = stmt.compile(dialect=store.engine.dialect)
        self.store = store
        self.sql = str(compiled)
        self.defaults = compiled.construct_params(  # the literals; each call gives the rest
            {name: None for name, b in compiled.binds.items() if b.required})
        self.positions = compiled.positiontup  # None for a named paramstyle
        self.row = namedtuple("Row", [c.name for c in stmt.selected_columns])  # type: ignore[misc]

    def _args(self, values: dict[str, Any]) -> Any:
        params = {**self.defaults, **values}
        return params if self.positions is None else tuple(params[n] for n in self.positions)

    def first(self, **values: Any) -> Any:
        with self.store._cursor() as run:
            r = run(self.sql, self._args(values)).fetchone()
        return None if r is None else self.row(*r)

    def all(self, **values: Any) -> list[Any]:
        with self.store._cursor() as run:
            return [self.row(*r) for r in run(self.sql, self._args(values)).fetchall()]


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        _private_sqlite_files(make_url(url).database)
        engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return _pg_engine(url, pool_pre_ping=True)


def _read_pool(engine: Engine) -> Engine | None:
    """PostgreSQL's connections for the hot raw reads (D84): in autocommit, so a SELECT sends
    no BEGIN and a check-in no ROLLBACK, and not pinged at check-out. A read that finds its
    connection dead gets a fresh one and runs again (`Store._cursor`): reads change nothing,
    so running one twice is harmless. None for SQLite: its reads are calls into this process,
    with no round trip to save."""
    if engine.dialect.name != "postgresql":
        return None
    return _pg_engine(engine.url, _PG_READ_SESSION, pool_pre_ping=False,
                      pool_reset_on_return=None, isolation_level="AUTOCOMMIT")


_OWN_SESSION = ("SELECT pid, backend_start FROM pg_stat_activity "
                "WHERE pid = pg_backend_pid()")
# A session (its server process and start) that holds the log's lock. Asked of the lock, not
# of the session alone: a pooler (PgBouncer) that drops a client frees its advisory locks
# (DISCARD ALL) but keeps the server session, and may hand it to another client.
_HELD_BY = ("FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND l.classid = %s AND l.objid = %s AND a.pid = %s AND a.backend_start = %s")
_HOLDS_LOCK = "SELECT 1 " + _HELD_BY
_END_SESSION = "SELECT pg_terminate_backend(a.pid) " + _HELD_BY


def _held_by(session: tuple[int, Any]) -> tuple[Any, ...]:
    """`_HELD_BY`'s values for `session`: the lock's key (a bigint's two halves), then it."""
    return (SEQUENCER_LOCK_ID >> 32, SEQUENCER_LOCK_ID & 0xFFFFFFFF, *session)


_PG_IDLE = 0  # libpq's PQTRANS_IDLE (psycopg.pq.TransactionStatus.IDLE): no command running


class _ReadLink:
    """A connection checked out for reads, replaced if the database dropped it."""

    def __init__(self, store: Store) -> None:
        self.own_pool = store._reads is not None
        self.engine = store._reads or store.engine
        self.conn = self.engine.raw_connection()
        self.dead = False

    def lost(self, e: Any, cur: Any) -> bool:
        """Whether `e` leaves the connection unusable (`_unusable`, or the dialect says it
        was dropped: a restart, `pg_terminate_backend`); if so it is marked dead, so that it
        never goes back to the pool."""
        gone = self._unusable() or self.engine.dialect.is_disconnect(
            e, self.conn.dbapi_connection, cur)
        self.dead = self.dead or gone
        return gone

    def _unusable(self) -> bool:
        """Closed, or (PostgreSQL) still in the middle of a command. Between statements, and
        after any error a statement can cause, a live connection in autocommit is idle; one
        that is not (a statement interrupted by an exception that is not the driver's; once
        in CI after terminated backends, cause not found, D108) answers "another command is
        already in progress" to anything sent, so it would fail every later read that drew
        it from the pool, which does not ping."""
        c = self.conn.dbapi_connection
        pgconn = getattr(c, "pgconn", None)  # psycopg's; SQLite's connection has none
        return bool(getattr(c, "closed", False)) or (
            pgconn is not None and pgconn.transaction_status != _PG_IDLE)

    def replace(self) -> None:
        """Drop this connection and check out a fresh one. The read pool's idle ones go too
        (a restart killed them all, and the pool does not ping them); the store's main engine,
        which SQLite reads on, is never disposed from here."""
        self.conn.invalidate()
        if self.own_pool:
            self.engine.dispose()
        self.conn = self.engine.raw_connection()
        self.dead = False

    def close(self) -> None:
        """Back to the pool, unless the database dropped it or it is otherwise unusable
        (then it is discarded)."""
        if self.dead or self._unusable():
            self.conn.invalidate()
        else:
            self.conn.close()


def _session_ended(conn: Connection, *, ping: bool) -> bool:
    """Whether the lock's connection is dead: invalidated by SQLAlchemy on a disconnect,
    closed, or its driver connection closed (checked in that order, since asking an
    invalidated Connection for its driver connection would open a new session); with `ping`,
    also if a round trip on it fails (a session that ended while idle is only seen so)."""
    if conn.invalidated or conn.closed:
        return True
    if getattr(conn.connection.dbapi_connection, "closed", False):
        return True
    if not ping:
        return False
    try:
        conn.exec_driver_sql("SELECT 1")
        conn.rollback()
    except DBAPIError:
        return True
    return False


def _private_sqlite_files(db: str | None) -> None:
    """Create the SQLite file 0600 before SQLite does (it would use 0644 minus the umask, so
    0666 under umask 000), and narrow an existing one. SQLite gives its -wal and -shm files the
    database file's mode; those left by an older process are narrowed too."""
    if not db or db == ":memory:" or db.startswith("file:"):
        return
    fd = os.open(db, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if os.fstat(fd).st_uid == os.geteuid():
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    for suffix in ("-wal", "-shm", "-journal", ".sequencer-lock"):
        side = Path(db + suffix)
        if side.exists() and side.stat().st_uid == os.geteuid():
            os.chmod(side, 0o600)


def migrate(engine: Engine) -> tuple[str | None, str]:
    """Bring the schema to the latest Alembic revision; the revisions it was at and is at.
    Conflict, and nothing changed, for a schema a newer release wrote (a revision this one
    does not know): migrating "head" from there is not defined.

    One process at a time, and all or nothing (D115): several hosts or processes starting
    on one database at once would each run the same migrations, and all but one fail on a
    table the first had created. On PostgreSQL the transaction first takes an advisory lock
    (its DDL is transactional); on SQLite it is `BEGIN IMMEDIATE`, which takes the write lock
    first and holds the DDL in the transaction (pysqlite opens none for DDL, so a migration
    cut short was left half done). Either waits up to MIGRATION_WAIT_S for another's. The
    migration scripts are read before the lock is taken, and a schema already at this
    release's revision, as at almost every start, is only read under it: a process starting
    beside a sequencer under load holds SQLite's write lock for one read."""
    head = head_revision()
    barred: IO[str] | None = None
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{MIGRATION_WAIT_S}s'")
                conn.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK_ID)))
                conn.exec_driver_sql("SET LOCAL lock_timeout TO DEFAULT")  # the DDL: the server's
            else:
                conn.exec_driver_sql(f"PRAGMA busy_timeout={MIGRATION_WAIT_S * 1000}")
                try:
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                finally:
                    conn.exec_driver_sql(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
            was = schema_revision(conn)
            _known(was)
            if was != head:
                if was is not None:  # (a new schema has no sequencer of an older release)
                    barred = _bar_sequencers(conn)
                upgrade(conn, "head")
    finally:
        if barred is not None:
            barred.close()
    return was, head


def _bar_sequencers(conn: Connection) -> IO[str] | None:
    """Hold the log's sequencer lock for the rest of the migration's transaction (PostgreSQL:
    a transaction-level advisory lock, freed at its commit or rollback; SQLite: the lock
    file, returned for the caller to close after it), so no process sequences the log while
    its schema changes. Conflict if a process holds it now: a process of this release
    migrates before it takes the lock, so the holder runs an older release (or is a `db
    copy`), which would write to the schema as it knew it (revision 0012 changes a column it
    writes: its keys would be stored as text, D124). A process of the older release that
    takes the lock after the migration is not seen: every one stops before the first of the
    new release starts (operations §9)."""
    if conn.dialect.name == "postgresql":
        if conn.execute(select(func.pg_try_advisory_xact_lock(SEQUENCER_LOCK_ID))).scalar():
            return None
    elif not (db := conn.engine.url.database) or db == ":memory:":
        return None
    else:
        with suppress(Conflict):  # held: refused below
            return sqlite_sequencer_lock(db)
    raise Conflict(said("another process sequences this log (a process of an older release, "
                        "or a `db copy`): stop it, on every host, then upgrade; an older "
                        "release would write to the upgraded schema as it knew it"))


def _migrations() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


@functools.cache
def _revisions() -> tuple[str, frozenset[str]]:
    """This release's newest schema revision, and every one it knows."""
    script = ScriptDirectory.from_config(_migrations())
    head = script.get_current_head()
    assert head is not None  # one linear history
    return head, frozenset(r.revision for r in script.walk_revisions())


def head_revision() -> str:
    """The schema revision this release's migrations end at."""
    return _revisions()[0]


def schema_revision(conn: Connection) -> str | None:
    """The database's schema revision, or None where no migration has run."""
    if not inspect(conn).has_table("alembic_version"):
        return None
    at = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    return None if at is None else str(at)


def _known(at: str | None) -> None:
    if at is not None and at not in _revisions()[1]:
        raise Conflict(said("the database's schema is at revision {at}, which this release of "
                            "copyledger does not know: a newer release wrote it; upgrade "
                            "copyledger", at=at))


def require_known_schema(engine: Engine) -> str | None:
    """The database's schema revision; Conflict if a newer release wrote it (whose tables
    this release would read wrongly, or pass as sound in an audit)."""
    with engine.connect() as conn:
        at = schema_revision(conn)
    _known(at)
    return at


def require_current_schema(engine: Engine) -> None:
    """Conflict unless the database's schema is at this release's revision: a command meeting
    an older schema would fail on a table or column the migrations since then add, with the
    database's own error instead of what to do."""
    at = require_known_schema(engine)
    if at != (head := head_revision()):
        raise Conflict(said("the database's schema is at revision {at}, this release's at "
                            "{head}: run `copyledger db upgrade` first (a server of this "
                            "release upgrades it when it starts)", at=at or "none", head=head))


def upgrade(conn: Connection, revision: str) -> None:
    """Run the migrations up to `revision` on `conn`, inside its transaction (`db copy` builds
    the target's schema and fills it in one)."""
    cfg = _migrations()
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, revision)


def sqlite_sequencer_lock(db: str) -> IO[str]:
    """Take the exclusive lock on the file beside the SQLite database `db` that its one
    sequencer holds, without writing to the database; the lock lasts while the returned file
    stays open. Conflict if another process holds it."""
    fd = os.open(db + ".sequencer-lock", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    f = os.fdopen(fd, "a")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise Conflict(said("another process is already sequencing {db}", db=db)) from None
    return f


class Store:
    """Reads and batched writes. Also a `merkle.HashReader` over the stored node hashes."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._block_for_size = _DriverQuery(self, _BLOCK_FOR_SIZE)
        self._get_block = _DriverQuery(self, _GET_BLOCK)
        self._get_timestamps = _DriverQuery(self, _GET_TIMESTAMPS)
        self._reads = _read_pool(engine)
        self._reading = threading.local()  # .link: the connection of `reading()`, if any
        self._lock_conn: Connection | None = None  # PostgreSQL: the lock's session; blocks too
        self._lock_wanted = False  # PostgreSQL: this store sequences, whether or not it holds
        self._lock_seen = 0.0  # PostgreSQL: monotonic time the lock's session was last in use
        self._lock_session: tuple[int, Any] = (0, None)  # its server process id and start time
        self._lock_socket: socket.socket | None = None  # its socket's twin, to abandon it (D126)
        self._lock_busy: float | None = None  # monotonic start of a round trip on it, if one runs
        self._lock_watch: threading.Thread | None = None
        self._lock_file: IO[str] | None = None
        self._lock_guard = threading.Lock()
        self._lock_kept = False  # see keep_sequencer_lock
        self._closed = False
        self._upper: dict[merkle.NodeId, bytes] = {}
        self._levels: dict[int, bytes] = {}  # level: its hashes from idx 0 on (D148)
        self._by_size: dict[int, BlockRow] = {}
        self.runs = runs.Runs()  # SQLite's content-hash runs: the writer's upkeep (D142)
        self._upkeep_after = 0.0  # monotonic time before which no step is tried (after failures)
        self._upkeep_wait = 0.0  # the wait after the last failure, doubled at each one
        self._upkeep_debt = 0  # rows of steps the blocks written since still owe

    @functools.cached_property
    def _text_keys(self) -> bool:
        """Whether the schema predates revision 0012 and keeps content hashes as hex text:
        `audit` reads such a database as it is (D114), so its reads of the column (and the
        API's) go by the table and key form the schema has; the sequencer's own reads
        (`registered`, `content_hashes`) and writes need this release's schema, which a
        sequencing process migrated to before it started. Asked at the first read, not when
        the store is made (a process may start while its database is down, D111)."""
        return self._schema_before(TEXT_KEYS_BEFORE)

    @functools.cached_property
    def has_runs(self) -> bool:
        """Whether the content-hash indexes are runs (SQLite from revision 0016, D142): then
        a block writes its keys as a run and every read by content hash seeks the runs. An
        older SQLite schema (`audit` reads one as it is) and PostgreSQL have B-tree indexes."""
        return self.dialect == "sqlite" and not self._schema_before(runs.RUNS_FROM)

    def schema_at(self) -> str | None:
        """The database's schema revision now (None where no migration has run)."""
        with self.engine.connect() as conn:
            return schema_revision(conn)

    def _schema_before(self, revision: str) -> bool:
        """Whether the database's schema is at a revision before `revision` (None, where no
        migration has run, is not: its tables were made as this release makes them)."""
        at = self.schema_at()
        return at is not None and at.isdigit() and int(at) < int(revision)

    @functools.cached_property
    def _entries(self) -> Table:
        return entries_text_keys if self._text_keys else entries

    @functools.cached_property
    def _key(self) -> Callable[[object], str]:
        """A stored content hash as its hex text."""
        return text_key if self._text_keys else key_text

    @functools.cached_property
    def _key_arg(self) -> Callable[[str], object]:
        """A content hash as a query compares it with the stored ones."""
        return str if self._text_keys else key_bytes

    @functools.cached_property
    def _tuple_cols(self) -> tuple[Any, ...]:
        return tuple(self._entries.c[n] for n in _ENTRY_COLS)

    @functools.cached_property
    def _get_entry(self) -> _DriverQuery:
        return _DriverQuery(self, select(self._entries)
                            .where(self._entries.c.seq == bindparam("seq")))

    @classmethod
    def open(cls, url: str, *, migrate_schema: bool = True) -> Store:
        engine = make_engine(url)
        if migrate_schema:
            migrate(engine)
        return cls(engine)

    def close(self) -> None:
        """Give up the sequencer lock (unless a stopped sequencer's thread still seals under
        it: that thread gives it up, and disposes the pools again for what it opened since,
        D104) and close the pools."""
        self._closed = True
        try:
            self.release_sequencer_lock()
        finally:
            self._dispose()

    @property
    def database_errors(self) -> tuple[type[Exception], ...]:
        """What a call that reached for the database raises when the database fails it:
        SQLAlchemy's wrapping, or the driver's own (the raw-cursor reads raise those)."""
        return (DBAPIError, self.engine.dialect.loaded_dbapi.Error)

    @property
    def closed(self) -> bool:
        """Whether `close` was called: a background task retrying on this store stops."""
        return self._closed

    def _dispose(self) -> None:
        if self._reads is not None:
            self._reads.dispose()
        self.engine.dispose()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    # -- the one sequencer ------------------------------------------------------------------

    def acquire_sequencer_lock(self) -> None:
        """Make this process the only sequencer of this log: a PostgreSQL session advisory lock,
        or an exclusive lock on a file beside the SQLite database. Refused while a stopped
        sequencer's thread still seals under it (`keep_sequencer_lock`). Taking, keeping and
        giving up the lock go under one guard, so an acquire never finds a lock that a
        release is giving up and takes it for its own."""
        with self._lock_guard:
            if self._lock_kept:
                raise Conflict("this log's last sequencer is still sealing a block")
            if self.dialect != "postgresql":
                self._lock_sqlite()
                self.runs.forget()  # another process may have merged since this one held it
                return
            if self._lock_conn is not None:
                return
            if not self._take_lock():
                raise Conflict("another sequencer already holds this log's lock")
            self._lock_wanted = True

    def _take_lock(self) -> bool:
        """Under `_lock_guard`, on PostgreSQL: try the log's advisory lock on a connection of
        its own, kept as `_lock_conn` if it was granted, with its session's server process
        and start (`_lock_session`: to end that session if this side ever loses it while the
        server keeps it). A connection that fails or is interrupted on the way is discarded,
        never pooled with the lock on its session."""
        conn = self.engine.connect()
        try:
            got = conn.execute(select(func.pg_try_advisory_lock(SEQUENCER_LOCK_ID))).scalar()
            session = conn.exec_driver_sql(_OWN_SESSION).one() if got else None
            conn.commit()
        except BaseException:
            conn.invalidate()
            conn.close()
            raise
        if session is None:
            conn.close()
            return False
        try:
            driver = conn.connection.driver_connection
            assert driver is not None
            twin = socket.socket(fileno=os.dup(driver.pgconn.socket))
            if self._lock_watch is None:
                watch = threading.Thread(target=self._watch_lock, daemon=True,
                                         name="sequencer-lock-watch")
                watch.start()
                self._lock_watch = watch
        except BaseException:
            conn.invalidate()  # (the lock goes with its session)
            conn.close()
            raise
        self._lock_conn, self._lock_session = conn, (int(session[0]), session[1])
        self._lock_socket = twin
        self._lock_seen = time.monotonic()
        return True

    def _drop_lock_conn(self) -> Connection | None:
        """Under `_lock_guard`: forget the lock's connection (the caller closes it) and close
        the twin of its socket, which would otherwise keep the connection open."""
        conn, self._lock_conn = self._lock_conn, None
        sock, self._lock_socket = self._lock_socket, None
        if sock is not None:
            sock.close()
        return conn

    @contextmanager
    def _on_lock_session(self) -> Iterator[None]:
        """A round trip (or a block's transaction) on the lock's session, for its watch."""
        self._lock_busy = time.monotonic()
        try:
            yield
        finally:
            self._lock_busy = None

    def _watch_lock(self) -> None:
        """While this store sequences (PostgreSQL): a round trip on the lock's session that has gone
        unanswered for LOCK_STUCK_S is abandoned once the server says that session no longer
        holds the lock (D126). This host was cut off from the server mid-statement, and the
        server has since ended the session and the lock with it (another process may lead
        now); the statement fails at once (its writers hear that their entries may or may
        not be recorded) and the next block finds the lock gone or takes it again
        (`check_sequencer_lock`), instead of waiting for TCP's next retransmission. While
        the server cannot be reached, or says the session still holds the lock (a slow
        statement: asked again `_LOCK_LIVES_BACKOFF_S` later), nothing is done. The socket
        is shut down through a twin of it made when the lock was taken, so a descriptor the
        driver closed meanwhile and the system gave to another is never touched."""
        quiet_until = 0.0
        while True:
            time.sleep(LOCK_WATCH_S)
            with self._lock_guard:
                # (a stopped sequencer still sealing keeps the lock after `close`, D104)
                if not self._lock_wanted or (self._closed and not self._lock_kept):
                    self._lock_watch = None
                    return
                conn, session, since = self._lock_conn, self._lock_session, self._lock_busy
            now = time.monotonic()
            if conn is None or since is None or now - since < LOCK_STUCK_S or now < quiet_until:
                continue
            try:
                holds = self._holds_lock(session)
                if holds:
                    quiet_until = time.monotonic() + _LOCK_LIVES_BACKOFF_S
                elif holds is False and self._abandon(conn):
                    log.warning("the sequencer lock's database session was ended by the "
                                "server while a statement on it went unanswered for %.0f s "
                                "(this host was cut off from the database?): the statement "
                                "is abandoned", time.monotonic() - since,
                                extra={"backend_pid": session[0]})
            except Exception:  # (the watch must outlive any one look)
                log.exception("the sequencer lock's watch failed; it looks again")

    def _abandon(self, conn: Connection) -> bool:
        """Shut the lock's socket down if `conn` is still the lock's connection: the call
        waiting on it fails at once. Whether it was."""
        with self._lock_guard:
            if self._lock_conn is not conn or self._lock_socket is None:
                return False
            with suppress(OSError):
                self._lock_socket.shutdown(socket.SHUT_RDWR)
            return True

    def _holds_lock(self, session: tuple[int, Any]) -> bool | None:
        """Whether `session` (its server process id and start) still holds the log's lock,
        asked on a connection of its own that gives up within seconds (`_LOCK_PROBE`); None
        if the server cannot be asked."""
        import psycopg

        cargs, cparams = self.engine.dialect.create_connect_args(self.engine.url)
        try:
            with psycopg.connect(*cargs, **{**cparams, **_LOCK_PROBE, "autocommit": True}
                                 ) as probe:
                return probe.execute(_HOLDS_LOCK, _held_by(session)).fetchone() is not None
        except psycopg.Error:
            return None

    def check_sequencer_lock(self) -> None:
        """Before each block (PostgreSQL): the lock's session still held, or taken again.
        Blocks are written on that session (`append_block`), so a block commits only while
        the session, and with it the lock, lives. The session can end under a sequencer (a
        PostgreSQL restart, `pg_terminate_backend`, an idle-session timeout, a dropped TCP
        connection); its block then fails, and the next block finds the connection dead
        here: the lock is taken again on a fresh one if it is free, and LockLost is raised
        if another process took it meanwhile (nothing written; the next block tries again).
        Without this fence two processes could each believe they sequence the log (D109).
        The round trip runs outside `_lock_guard`, so a hung one never holds up `stop`
        (D104); only the sequencer's thread calls this."""
        if not self._lock_wanted:
            return
        conn = self._lock_conn
        now = time.monotonic()
        idle = now - self._lock_seen > LOCK_IDLE_PING_S
        self._lock_seen = now
        if conn is not None:
            with self._on_lock_session() if idle else contextlib.nullcontext():
                if not _session_ended(conn, ping=idle):
                    return
        with self._lock_guard:
            if not self._lock_wanted or self._lock_conn is not conn:
                return  # given up or replaced meanwhile: nothing of ours to take again
            old = self._lock_session if conn is not None else None
            if conn is not None:
                self._drop_lock_conn()
                conn.invalidate()  # its session, and the lock with it, are gone (or going)
                conn.close()
            if not self._take_lock() and not (old and self._end_own_session(old)
                                              and self._take_lock()):
                raise LockLost(said("this process no longer sequences the log: the database "
                                    "session holding its lock ended and another process "
                                    "took the lock"))
            log.warning("the sequencer lock's database session had ended: the lock was taken "
                        "again on a new one")

    def _end_own_session(self, session: tuple[int, Any]) -> bool:
        """Under `_lock_guard`: end the server side of this store's old lock session if it
        still holds the log's lock (this side lost the connection, the server has not
        noticed: a middlebox's reset, a timeout; it would keep the lock until its TCP
        keepalive, hours), and wait until it is gone. The server process and its start time
        name that session alone (a process id alone could be reused by another's); one that
        no longer holds the lock is left alone, since behind a pooler it may serve another
        client now (D126). Whether it ended one."""
        with self.engine.connect() as conn:
            ended = conn.exec_driver_sql(_END_SESSION, _held_by(session)).scalar()
            conn.commit()
            deadline = time.monotonic() + 10
            while ended and time.monotonic() < deadline and conn.exec_driver_sql(
                    "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (session[0],)).first():
                conn.rollback()
                time.sleep(0.02)
            conn.rollback()
        if ended:
            log.warning("ended this process's own orphaned lock session on the server",
                        extra={"backend_pid": session[0]})
        return bool(ended)

    def _lock_sqlite(self) -> None:
        db = self.engine.url.database
        if not db or db == ":memory:" or self._lock_file is not None:
            return
        self._lock_file = sqlite_sequencer_lock(db)  # held open for the lock's life

    def keep_sequencer_lock(self) -> None:
        """Leave the lock to the sequencer's thread still sealing (`Sequencer.stop`): only its
        `release_sequencer_lock(kept=True)` gives it up, not `close` nor another release."""
        with self._lock_guard:
            self._lock_kept = True

    def release_sequencer_lock(self, *, kept: bool = False) -> None:
        try:
            with self._lock_guard:
                if self._lock_kept and not kept:
                    return
                try:
                    self._free_lock()
                finally:
                    self._lock_kept = False  # (given up, or gone with its session)
        finally:
            if kept and self._closed:
                self._dispose()  # what the thread opened after `close` disposed the pools

    def publish_sequencer_address(self, address: str, secret_check: str) -> None:
        """Say where this process, which has just taken the log's lock, takes entries from
        other hosts' API processes (D110), if its hand-over secret is the hosts' (D113): the
        first to publish records its secret's check, and one whose check differs is refused
        (WrongSecret) with nothing written. In the fenced transaction of a block
        (`_block_transaction`): on a lock lost meanwhile it is refused (LockLost), so no
        process that does not hold the lock ever names itself."""
        since = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        with self._block_transaction() as conn:
            held = conn.execute(select(handoff_secret.c.secret_check,
                                       handoff_secret.c.since)).first()
            if held is None:
                conn.execute(handoff_secret.insert().values(id=1, secret_check=secret_check,
                                                            since=since))
            elif not hmac.compare_digest(held[0].encode(), secret_check.encode()):
                raise WrongSecret(said(
                    "this host's hand-over secret is not the one the registry's hosts share "
                    "(recorded {since}): it does not sequence the log; give it their secret, "
                    "or, if every host's secret was changed, run `copyledger db "
                    "forget-handoff-secret` first", since=held[1]))
            conn.execute(sequencer_address.delete())
            conn.execute(sequencer_address.insert().values(id=1, address=address, since=since))

    def handoff_secret_check(self) -> str | None:
        """The hosts' recorded hand-over secret check (D113), if one is recorded."""
        with self.engine.connect() as conn:
            return conn.execute(select(handoff_secret.c.secret_check)).scalar()

    def forget_handoff_secret(self) -> str | None:
        """Delete the hosts' recorded hand-over secret check (D113), for a secret changed on
        every host: the next process to take the lock with a network hand-over records its
        own. Refused (Conflict) while any process sequences the log: the delete's own
        transaction takes the log's lock on PostgreSQL (`pg_try_advisory_xact_lock`, given up
        when it ends), and on SQLite the lock's file is held around it; this store's own lock
        state is not touched. When the one deleted had been recorded, if there was one."""
        refused = Conflict(said("a process still sequences this log: stop every host, barred "
                                "ones included, before forgetting the hand-over secret"))
        db = self.engine.url.database
        with contextlib.ExitStack() as held:
            if self.dialect != "postgresql" and db and db != ":memory:":
                try:
                    held.enter_context(sqlite_sequencer_lock(db))
                except Conflict:
                    raise refused from None
            with self.engine.begin() as conn:
                if self.dialect == "postgresql" and not conn.execute(
                        select(func.pg_try_advisory_xact_lock(SEQUENCER_LOCK_ID))).scalar():
                    raise refused
                since = conn.execute(select(handoff_secret.c.since)).scalar()
                conn.execute(handoff_secret.delete())
        return since

    def published_sequencer_address(self) -> str | None:
        """The address the last sequencer published, if any; it may have died since."""
        with self.engine.connect() as conn:
            return conn.execute(select(sequencer_address.c.address)).scalar()

    def _free_lock(self) -> None:
        """Under `_lock_guard`: close the flock's file, or unlock the advisory lock; a failed
        unlock ends its connection's session, and the lock with it. An unlock the database
        refuses (the session had already ended, D109) has given the lock up all the same: it
        is logged, not raised, so closing the store goes on."""
        if self._lock_file is not None:
            self._lock_file.close()  # closing releases the flock
            self._lock_file = None
        conn = self._drop_lock_conn()
        self._lock_wanted = False
        if conn is None:
            return
        try:
            # The connection goes back to the pool, session and all: unlock explicitly.
            conn.execute(select(func.pg_advisory_unlock(SEQUENCER_LOCK_ID)))
            conn.commit()
        except DBAPIError as e:
            conn.invalidate()
            log.warning("unlocking the sequencer lock failed; its session is ended instead: %s",
                        type(e.orig).__name__)
        except BaseException:
            conn.invalidate()
            raise
        finally:
            conn.close()

    # -- writes -------------------------------------------------------------------------------

    def append_block(
        self,
        rows: Sequence[EntryRow],
        nodes: Sequence[tuple[int, int, bytes]],
        block: BlockRow,
        timestamps: Sequence[tuple[str, bytes]] = (),
        links: Sequence[Link] = (),
        claims: Sequence[tuple[int, str, str, str]] = (),
    ) -> None:
        """Write one sealed block, its entries, their links, its new Merkle nodes and its
        time-stamp tokens in ONE transaction; in it too, each of `claims` (seq, account, key,
        request_sha256): an entry written under an Idempotency-Key claim, so whether a keyed
        request was recorded is known exactly as the log knows it (D132)."""
        h = block.header
        try:
            with self._block_transaction() as conn:
                if rows:
                    stored = _stored_rows(rows)
                    self._insert_many(conn, "entries", _ENTRY_COLS, stored)
                    if self.has_runs:
                        # (a block's seqs are consecutive: its run is copied by their range)
                        assert rows[-1].seq - rows[0].seq == len(rows) - 1
                        with contextlib.closing(self._driver_cursor(conn)) as cur:
                            runs.add(cur, self.runs.next_run(cur), rows[0].seq, len(rows))
                if links:
                    conn.exec_driver_sql(
                        self._insert_sql("entry_links", ("target", "seq", "rel")), list(links)
                    )
                if nodes:
                    self._insert_many(conn, "merkle_nodes", _NODE_COLS, nodes)
                conn.exec_driver_sql(self._insert_sql("blocks", _BLOCK_COLS),
                                     _block_values(block))
                if timestamps:
                    conn.exec_driver_sql(
                        self._insert_sql("block_timestamps", ("height", "tsa", "token")),
                        [(h.height, tsa, token) for tsa, token in timestamps],
                    )
                if claims:
                    now = int(time.time())
                    conn.exec_driver_sql(
                        self._insert_sql("idempotency_written",
                                         ("seq", "account", '"key"', "request_sha256", "created")),
                        [(*c, now) for c in claims])
            if rows and self.has_runs:
                self.runs.added()
                self._upkeep_debt += len(rows) * UPKEEP_ROWS_AN_ENTRY
        except (SAIntegrityError, self._driver_integrity_error) as e:
            raise Conflict(said("block {height} conflicts with stored rows (another writer?)",
                                height=h.height)) from e

    def recorded_claims(self, claims: Iterable[tuple[str, str, str]], since: int
                        ) -> dict[tuple[str, str, str], int]:
        """Of these Idempotency-Key claims (account, key, request hash), each under which an
        entry was recorded after `since` (Unix seconds), with the first such entry's seq: what
        the sequencer answers instead of writing a claimed request twice (D134). Read by the
        (account, key) index, 500 claims a statement: the cost is the caller's own claims.
        (`account IN … AND key IN …`, not a row-value IN, which SQLite answers by scanning the
        whole index; pairs the two lists cross that are not claims are dropped here.)"""
        w = idempotency_written.c
        wanted = set(claims)
        pairs = sorted({(a, k) for a, k, _ in wanted})
        out: dict[tuple[str, str, str], int] = {}
        with self.engine.connect() as conn:
            for i in range(0, len(pairs), 500):
                chunk = pairs[i:i + 500]
                q = (select(w.account, w.key, w.request_sha256, func.min(w.seq))
                     .where(w.account.in_(sorted({a for a, _ in chunk})),
                            w.key.in_(sorted({k for _, k in chunk})), w.created > since)
                     .group_by(w.account, w.key, w.request_sha256))
                for account, key, request, seq in conn.execute(q):
                    claim = (str(account), str(key), str(request))
                    if claim in wanted:
                        out[claim] = int(seq)
        return out

    def written_fault(self) -> tuple[int, str, str | None] | None:
        """The first row of `idempotency_written` (seq, account, the entry's registrant or
        None) whose entry is missing or was recorded under another account (for the audit): a
        retried request is answered with the entry its row names (D134), so a row changed by
        hand would answer one account's retry with another's entry. None if there is none, or
        on a schema from before the table."""
        if self._schema_before(WRITTEN_FROM):
            return None
        w, e = idempotency_written.c, entries.c
        q = (select(w.seq, w.account, e.registrant)
             .select_from(idempotency_written.outerjoin(entries, e.seq == w.seq))
             .where(or_(e.seq.is_(None), e.registrant != w.account))
             .order_by(w.seq).limit(1))
        with self.engine.connect() as conn:
            row = conn.execute(q).first()
        if row is None:
            return None
        return (_stored_int(row[0], "idempotency_written.seq"), str(row[1]),
                None if row[2] is None else str(row[2]))

    def claims_at(self, seqs: Iterable[int]) -> dict[int, tuple[str, str, str]]:
        """The Idempotency-Key claim (account, key, request hash) each of these entries was
        recorded under, for those that were (D132)."""
        w = idempotency_written.c
        q = (select(w.seq, w.account, w.key, w.request_sha256)
             .where(w.seq.in_(sorted(set(seqs)))))
        with self.engine.connect() as conn:
            return {int(seq): (str(a), str(k), str(h)) for seq, a, k, h in conn.execute(q)}

    def upkeep(self, waiting: Callable[[], bool] | None = None) -> bool:
        """The content-hash runs' upkeep (`runs.Runs.step`: merges' steps, garbage deleted),
        each step in a transaction of its own; the sequencer calls it after each block it
        seals and while it is idle (`upkeep_due`). One step, and more while the blocks
        written since owe work (`UPKEEP_ROWS_AN_ENTRY` rows of steps an entry: about a copy
        and a deletion a level), so merges keep up with blocks of any size.

        `waiting`: whether blocks wait to be sealed. While it says so, no step is taken
        unless more than `UPKEEP_MOST_OWED` rows are owed or more than
        `UPKEEP_MOST_BLOCK_RUNS` level-0 runs are listed (D144): a block's writers wait for
        their receipts behind the steps before it, so the steps are left for the writer's
        idle moments, and only a writer that has none falls behind, by a bounded amount.

        Whether it did anything; False on PostgreSQL and on a schema without runs. It never
        raises: a failure is logged, the step forgotten (the block before it is committed
        either way, and the next step reads the state again) and the next one tried after a
        wait that doubles with each failure in a row (1 s to 60 s), so the upkeep can neither
        stop the sequencer nor spin."""
        did = False
        while self.upkeep_due():
            if (waiting is not None and self._upkeep_debt <= UPKEEP_MOST_OWED
                    and self.runs.listed(0) <= UPKEEP_MOST_BLOCK_RUNS and waiting()):
                return did  # (what is owed stays owed)
            done = self._upkeep_step()
            did |= done > 0
            self._upkeep_debt -= done
            if done <= 0 or self._upkeep_debt <= 0:
                break
        if not self.upkeep_due():
            self._upkeep_debt = 0  # (nothing due: what is owed is paid)
        self._upkeep_debt = max(0, self._upkeep_debt)
        return did

    def _upkeep_step(self) -> int:
        """One step (`upkeep`): the rows it did, 0 if none or it failed."""
        try:
            with self.engine.connect() as conn:
                cur = self._driver_cursor(conn)
                try:
                    # Not synced at its commit: the next block's commit syncs the WAL, and
                    # every frame before it with it. A crash may lose the last steps, each
                    # whole (the merges they belonged to start over), never a block.
                    cur.execute("PRAGMA synchronous=NORMAL")
                    with conn.begin():
                        done = self.runs.step(cur)
                    self.runs.committed()
                finally:
                    try:
                        cur.execute("PRAGMA synchronous=FULL")
                        cur.close()
                    except BaseException:
                        conn.invalidate()  # never back in the pool unsynced
                        raise
        except Exception:
            self.runs.forget()
            least, most = UPKEEP_WAIT_S
            self._upkeep_wait = min(most, max(least, 2 * self._upkeep_wait))
            self._upkeep_after = time.monotonic() + self._upkeep_wait
            log.exception("a step of the content-hash runs' upkeep failed; the next in %.0f s",
                          self._upkeep_wait)
            return 0
        self._upkeep_wait = 0.0
        return done

    def upkeep_due(self) -> bool:
        """Whether `upkeep` has a step to take now."""
        return self.upkeep_wait() == 0.0

    def upkeep_wait(self) -> float | None:
        """Seconds until `upkeep` may take a step (0: now), or None if it has none to take:
        the content-hash runs have work, this store holds the sequencer's lock (only the
        sequencing process merges: two would each take the other's run under construction
        for garbage), and a failure may ask it to wait."""
        if not (self.has_runs and self.runs.due() and self._holds_sqlite_lock()):
            return None
        return max(0.0, self._upkeep_after - time.monotonic())

    def _holds_sqlite_lock(self) -> bool:
        db = self.engine.url.database
        return self._lock_file is not None or not db or db == ":memory:"

    @staticmethod
    def _driver_cursor(conn: Connection) -> Any:
        """A driver cursor of `conn`'s connection: its statements are in `conn`'s transaction
        (pysqlite opens it at the first write, on the connection, whatever the cursor)."""
        driver = conn.connection.driver_connection
        assert driver is not None
        return driver.cursor()

    @contextmanager
    def _block_transaction(self) -> Iterator[Connection]:
        """A block's transaction: on PostgreSQL, while this store sequences, on the session
        that holds the log's lock (the fence of `check_sequencer_lock`: a block commits only
        while its writer holds the lock); otherwise on a pooled connection (SQLite's lock is
        a file's, held by the process; a tool writing with no lock)."""
        if not self._lock_wanted:
            with self.engine.begin() as conn:
                yield conn
            return
        lock_conn = self._lock_conn
        if lock_conn is None:  # lost, and not taken again: never write unfenced
            raise LockLost(said("this process no longer holds the log's sequencer lock"))
        with self._on_lock_session(), lock_conn.begin():
            yield lock_conn

    @functools.cached_property
    def _driver_integrity_error(self) -> type[Exception]:
        """The driver's own IntegrityError: what a COPY (no SQLAlchemy around it) raises."""
        dbapi = self.engine.dialect.dbapi
        return SAIntegrityError if dbapi is None else dbapi.IntegrityError

    def _insert_many(self, conn: Connection, table: str, cols: Sequence[str],
                     rows: Sequence[tuple[Any, ...]]) -> None:
        """Many rows, straight to the driver (no per-row SQL compilation): sqlite3's
        `executemany`; on PostgreSQL a block's thousands of rows by binary `COPY` (the table's
        types in `_COPY_BINARY`), one stream instead of a statement a row (psycopg encodes each
        row in C)."""
        if self.engine.dialect.name != "postgresql" or len(rows) < _COPY_FROM:
            conn.exec_driver_sql(self._insert_sql(table, cols), list(rows))
            return
        driver = conn.connection.driver_connection
        assert driver is not None
        with sends_may_wait(driver), driver.cursor() as cur, cur.copy(
                f"COPY {table} ({', '.join(cols)}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(list(_COPY_BINARY[table]))
            for row in rows:
                copy.write_row(row)

    def _mark(self) -> str:
        """The driver's placeholder: sqlite3's qmark, psycopg's format."""
        return "?" if self.engine.dialect.paramstyle == "qmark" else "%s"

    def _insert_sql(self, table: str, cols: Sequence[str]) -> str:
        return (f"INSERT INTO {table} ({', '.join(cols)}) "
                f"VALUES ({', '.join([self._mark()] * len(cols))})")

    # -- reads --------------------------------------------------------------------------------

    @contextmanager
    def reading(self) -> Iterator[None]:
        """Run this thread's hot reads inside on ONE checked-out connection (D80); nested uses
        share the outer one. On PostgreSQL it is a read connection (`_read_pool`: autocommit,
        no ping), so a read costs one round trip and the block none more (D84).

        The reads do NOT see one snapshot: pysqlite begins no transaction for a SELECT, and
        PostgreSQL in autocommit takes a snapshot per statement, so a commit between two
        reads shows in the second. Proofs need none: the nodes and blocks they read are
        append-only and never change once written (a later read may only see more rows)."""
        if getattr(self._reading, "link", None) is not None:
            yield
            return
        link = _ReadLink(self)
        self._reading.link = link
        try:
            yield
        finally:
            self._reading.link = None
            link.close()

    @contextmanager
    def _cursor(self) -> Iterator[Callable[[str, Any], Any]]:
        """The one raw path of the hot reads (D69, D70): a function that runs a plain SQL
        string with its driver parameters on a driver cursor and returns the cursor, on the
        connection of `reading()` or on one checked out for this use. The rows come as the
        driver's tuples. A statement that finds the connection dead (PostgreSQL restarted,
        the backend terminated) runs once more on a fresh one (D84). The engine's cursor
        events still see each statement (what counts or refuses statements, in tests,
        listens there); they get no Connection or context."""
        shared = getattr(self._reading, "link", None)
        link = shared if shared is not None else _ReadLink(self)
        cur: Any = None
        events = self.engine.dispatch
        errors = link.engine.dialect.loaded_dbapi.Error

        def run(sql: str, args: Any) -> Any:
            nonlocal cur
            for retry in (False, True):
                try:
                    if cur is None:
                        cur = link.conn.cursor()
                    if events.before_cursor_execute:
                        events.before_cursor_execute(None, cur, sql, args, None, False)
                    cur.execute(sql, args)
                except errors as e:
                    if not link.lost(e, cur) or retry:
                        raise  # (a dead connection is discarded by link.close())
                    cur = None
                    link.replace()
                    continue
                if events.after_cursor_execute:
                    events.after_cursor_execute(None, cur, sql, args, None, False)
                break
            return cur

        try:
            yield run
        finally:
            try:
                if cur is not None:
                    cur.close()
            finally:
                if shared is None:
                    link.close()

    def read_hashes(self, ids: Sequence[merkle.NodeId], *, cached: bool = True) -> list[bytes]:
        """Stored hashes of `ids`, in order. Nodes at level `UPPER_LEVEL` or above come from
        memory once read, and the lower levels `warm_levels` kept (D148); of the rest, the
        lowest ones of a proof are made from their leaves (D149); a stored node never
        changes. `cached=False` reads every one from the database (the audit, which must see a
        rewritten row)."""
        if not ids:
            return []
        upper = self._upper if cached else {}
        levels = self._levels if cached else {}
        got: dict[merkle.NodeId, bytes] = {}
        wanted: list[merkle.NodeId] = []
        for node in dict.fromkeys(ids):  # one lookup each: another thread may start it again
            row = levels.get(node[0])
            if (row is not None and node[1] >= 0
                    and (end := (node[1] + 1) * merkle.HASH_SIZE) <= len(row)):
                got[node] = row[end - merkle.HASH_SIZE:end]
            elif (h := upper.get(node)) is None:
                wanted.append(node)
            else:
                got[node] = h
        if wanted:
            # Not for the audit (`cached=False`): it must read each stored node itself.
            lo, hi, made = _leaf_block(wanted) if cached else (0, 0, [])
            with self._cursor() as run:

                def fetch(ids: Sequence[merkle.NodeId], lo: int = 0, hi: int = 0) -> None:
                    for sql, args in self._node_statements(ids, lo, hi):
                        for lv, ix, hs in run(sql, args).fetchall():
                            got[(lv, ix)] = hs if type(hs) is bytes else _bytes(hs)

                fetch([n for n in wanted if n not in made] if made else wanted, lo, hi)
                self._made_from_leaves(made, got)
                # A leaf missing (a damaged table): those nodes are read as stored.
                if unmade := [n for n in made if n not in got]:
                    fetch(unmade)
            if cached:
                self._remember_upper(got)
        try:
            return [got[i] for i in ids]
        except KeyError as e:
            raise NotFound(said("stored Merkle hash {index} is missing", index=e.args[0])) from None

    @staticmethod
    def _made_from_leaves(made: Sequence[merkle.NodeId], got: dict[merkle.NodeId, bytes]
                          ) -> None:
        """Into `got`, each node of `made` (below LEAF_BLOCK_LEVEL) as the Merkle root of its
        leaves, which `got` holds once read; a node one of whose leaves is not there (or not
        a hash) is left out, to be read as stored. A stored node is exactly that root (the
        audit checks it), so this answers as the stored one would."""
        for lv, ix in made:
            if lv:
                leaves = [h for i in range(ix << lv, (ix + 1) << lv)
                          if len(h := got.get((0, i), b"")) == merkle.HASH_SIZE]
                if len(leaves) == 1 << lv:
                    got[(lv, ix)] = merkle.root(leaves)

    def _node_statements(self, ids: Sequence[merkle.NodeId], lo: int = 0, hi: int = 0
                         ) -> Iterator[tuple[str, Any]]:
        """The statements that read `ids`, and the leaves lo <= idx < hi: on PostgreSQL one,
        of a fixed text with the ids as two arrays; on SQLite the OR of equalities,
        `_NODES_PER_QUERY` a statement (no round trip to save there, and a join on a
        table-valued function would scan, D59), the range in the first."""
        if self.dialect == "postgresql":  # arrays as text: a third of the CPU of list params
            yield _PG_NODES_SQL, (_pg_array([lv for lv, _ in ids]),
                                  _pg_array([ix for _, ix in ids]), str(lo), str(hi))
            return
        leaves = lo < hi
        for i in range(0, max(len(ids), leaves), _NODES_PER_QUERY):
            part = ids[i : i + _NODES_PER_QUERY]
            first = leaves and not i
            yield (_nodes_sql(len(part), self._mark(), first),
                   [*((lo, hi) if first else ()), *(v for lx in part for v in lx)])

    def warm_upper(self, size: int) -> int:
        """Read the upper levels of the tree of `size` leaves into memory in one range read,
        so that no proof pays for them (D89): without it each random proof at 10 M found about
        ten of its upper nodes missing until some thousands of proofs had filled the cache.
        Starts at the lowest level >= `UPPER_LEVEL` whose nodes and those above fill at most
        half of `UPPER_MAX_NODES` (all of them up to 16 M leaves), leaving room for the log to
        grow. Returns how many nodes it read."""
        level = UPPER_LEVEL
        while sum(size >> lv for lv in range(level, 64)) > UPPER_MAX_NODES // 2:
            level += 1
        if not size >> level:
            return 0
        with self._cursor() as run:
            rows = run(f"SELECT level, idx, hash FROM merkle_nodes WHERE level >= {level}",
                       ()).fetchall()
        self._remember_upper({(lv, ix): hs if type(hs) is bytes else _bytes(hs)
                              for lv, ix, hs in rows})
        return len(rows)

    def warm_levels(self, size: int) -> int:
        """Read the levels below `UPPER_LEVEL` of the tree of `size` leaves into memory, from
        the lowest whose nodes and those of the levels above it fit in `LEVELS_MAX_BYTES`,
        each level as one string of its hashes in idx order (D148): on a cold page cache each
        node a proof reads is a random page read, and at 10 M a proof then reads the 5 nodes
        of levels 0-4 instead of the 10 of levels 0-9. A stored node never changes, so what is
        read here stays right; the nodes of later blocks are read from the database as
        before. A level not wholly stored (fewer rows than the tree has complete nodes there,
        or a hash of another size) is left to the database. Returns the nodes kept."""
        low = UPPER_LEVEL
        while low and (sum(size >> lv for lv in range(low - 1, UPPER_LEVEL)) * merkle.HASH_SIZE
                       <= LEVELS_MAX_BYTES):
            low -= 1
        kept = {lv: hashes for lv, hashes in self._levels.items() if lv >= low}  # (the bound)
        for lv in range(low, UPPER_LEVEL):
            n = size >> lv
            if (n and len(kept.get(lv, b"")) < n * merkle.HASH_SIZE
                    and (hashes := self._whole_level(lv, n)) is not None):
                kept[lv] = hashes
        self._levels = kept
        return sum(map(len, kept.values())) // merkle.HASH_SIZE

    def _whole_level(self, level: int, n: int) -> bytes | None:
        """The hashes of nodes 0..n-1 at `level` as one string, read a range at a time (a
        level's rows as objects would take about three times its string's memory at once);
        None if any is missing or not `HASH_SIZE` bytes long."""
        parts: list[bytes] = []
        for lo in range(0, n, _LEVEL_READ_ROWS):
            if self._closed:  # (the node stopped meanwhile: no more reads)
                return None
            hi = min(n, lo + _LEVEL_READ_ROWS)
            hashes = self.read_level(level, lo, hi)
            if len(hashes) != hi - lo or any(len(h) != merkle.HASH_SIZE for h in hashes):
                return None
            parts.append(b"".join(hashes))
        return b"".join(parts)

    def _remember_upper(self, got: dict[merkle.NodeId, bytes]) -> None:
        """Keep the upper nodes just read, up to `UPPER_MAX_NODES` (then start again: the
        nodes proofs need most come back within a few reads)."""
        new = {k: h for k, h in got.items() if k[0] >= UPPER_LEVEL}
        if not new:
            return
        if len(self._upper) + len(new) > UPPER_MAX_NODES:
            self._upper = {}
        self._upper.update(new)

    def read_node_range(self, level: int, lo: int, hi: int) -> dict[int, bytes]:
        """Stored hashes at `level` with lo <= idx < hi, in one query (the audit; a tile)."""
        q = select(merkle_nodes.c.idx, merkle_nodes.c.hash).where(
            merkle_nodes.c.level == level, merkle_nodes.c.idx >= lo, merkle_nodes.c.idx < hi
        )
        with self.engine.connect() as conn:
            return {ix: _bytes(hs) for ix, hs in conn.execute(q)}

    def read_level(self, level: int, lo: int, hi: int) -> list[bytes]:
        """Stored hashes at `level` with lo <= idx < hi, in idx order (the audit compares them
        with the recomputed ones as one list; fewer than hi - lo means some are missing)."""
        q = (select(merkle_nodes.c.hash)
             .where(merkle_nodes.c.level == level, merkle_nodes.c.idx >= lo,
                    merkle_nodes.c.idx < hi)
             .order_by(merkle_nodes.c.idx))
        return [h if type(h) is bytes else _bytes(h)
                for (h,) in self._driver_rows(q)]

    def _driver_rows(self, q: Any) -> list[Any]:
        """The rows of `q` as the database driver returns them (tuples), without SQLAlchemy's
        result objects: a third of the cost of reading millions of small rows."""
        c = q.compile(dialect=self.engine.dialect)
        params = tuple(c.params[k] for k in c.positiontup or ()) if c.positional else c.params
        with self._cursor() as run:
            return list(run(str(c), params).fetchall())

    def read_entry_data(self, lo: int, hi: int) -> list[bytes]:
        """The canonical bytes of entries lo <= seq < hi, in seq order, in one query (an entry
        bundle). Fewer than hi - lo means some are not stored."""
        e = self._entries
        q = select(e.c.data).where(e.c.seq >= lo, e.c.seq < hi).order_by(e.c.seq)
        with self.engine.connect() as conn:
            return [_bytes(d) for (d,) in conn.execute(q)]

    def count_nodes(self, upto: int | None = None) -> int:
        """Stored Merkle nodes; with `upto`, those of the tree of `upto` leaves (complete
        subtrees within it: (idx + 1) x 2**level <= upto)."""
        q = select(func.count()).select_from(merkle_nodes)
        if upto is not None:
            q = q.where(((merkle_nodes.c.idx + 1).op("<<")(merkle_nodes.c.level)) <= upto)
        with self.engine.connect() as conn:
            return int(conn.execute(q).scalar_one())

    def count_nodes_past(self, size: int) -> int:
        """Stored Merkle nodes that a tree of `size` leaves does not hold."""
        q = select(func.count()).select_from(merkle_nodes).where(
            ((merkle_nodes.c.idx + 1).op("<<")(merkle_nodes.c.level)) > size)
        with self.engine.connect() as conn:
            return int(conn.execute(q).scalar_one())

    def count_links_past(self, size: int) -> int:
        """Stored link rows of entries a tree of `size` leaves does not hold (seq >= size)."""
        q = select(func.count()).select_from(entry_links).where(entry_links.c.seq >= size)
        with self.engine.connect() as conn:
            return int(conn.execute(q).scalar_one())

    def has_block(self, height: int) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(select(blocks.c.height).where(blocks.c.height == height)
                                ).first() is not None

    def tree_size(self) -> int:
        last = self.latest_block()
        return last.header.tree_size if last else 0

    def get_entry(self, seq: int) -> EntryRow:
        r = self._get_entry.first(seq=seq)
        if r is None:
            raise NotFound(said("no entry with seq {seq}", seq=seq))
        return _entry(r, self._key)

    def _pages(self, table: Table, key: str, start: int, chunk: int) -> Iterator[Sequence[Any]]:
        """Rows of an append-only table in key order, `chunk` at a time (keyset paging)."""
        col = table.c[key]
        while True:
            with self.engine.connect() as conn:
                rs = conn.execute(
                    select(table).where(col >= start).order_by(col).limit(chunk)
                ).all()
            if not rs:
                return
            yield rs
            start = getattr(rs[-1], key) + 1

    def iter_entries(self, start: int = 0, chunk: int = 10_000) -> Iterator[list[EntryRow]]:
        """Entries in seq order, a chunk at a time (for the audit)."""
        for rs in self._pages(self._entries, "seq", start, chunk):
            yield [_entry(r, self._key) for r in rs]

    def iter_entry_tuples(self, start: int = 0, chunk: int = 10_000) -> Iterator[list[EntryTuple]]:
        """Entries in seq order as plain tuples (seq, leaf_hash, data, kind, sha256,
        registrant, block_height), a chunk at a time: the audit reads millions, and a row
        object per entry costs more than checking the entry does."""
        for rs in self._driver_pages(self._tuple_cols, start, chunk):
            yield _entry_tuples(rs, self._key)

    def entry_tuples(self, lo: int, hi: int) -> list[EntryTuple]:
        """Entries lo <= seq < hi as `iter_entry_tuples` reads them, in seq order, in one query:
        an audit worker's own range (fewer than hi - lo means some are missing)."""
        seq = self._entries.c.seq
        return _entry_tuples(self._driver_rows(
            select(*self._tuple_cols).where(seq >= lo, seq < hi).order_by(seq)), self._key)

    def iter_fingerprinted(self, start: int, stop: int, chunk: int = 10_000
                           ) -> Iterator[list[tuple[int, bytes]]]:
        """(seq, data) of the works start <= seq < stop whose bytes hold the key "fingerprints"
        (a superset: the caller parses), a chunk at a time, read through revision 0009's
        partial index: the near-duplicate index's rebuild reads only these (D90)."""
        e = self._entries
        where = (e.c.seq < stop, text(FINGERPRINTED_WHERE[self.engine.dialect.name]))
        for rs in self._driver_pages((e.c.seq, e.c.data), start, chunk, *where):
            yield [(seq, _bytes(data)) for seq, data in rs]

    def _driver_pages(self, cols: Sequence[Any], start: int, chunk: int, *where: Any
                      ) -> Iterator[list[Any]]:
        """Rows of `cols` (the first the table's integer key) from key `start` on that meet
        `where`, in key order, `chunk` at a time, as the driver's tuples (`_driver_rows`;
        keyset paging)."""
        key = cols[0]
        while True:
            rs = self._driver_rows(select(*cols).where(key >= start, *where).order_by(key)
                                   .limit(chunk))
            if not rs:
                return
            yield rs
            start = rs[-1][0] + 1

    def get_entries(self, seqs: Sequence[int]) -> list[EntryRow]:
        """The entries at `seqs`, in seq order (NotFound if one is missing)."""
        wanted = sorted(set(seqs))
        got: list[EntryRow] = []
        with self.engine.connect() as conn:
            e = self._entries
            for i in range(0, len(wanted), 500):
                q = select(e).where(e.c.seq.in_(wanted[i : i + 500])).order_by(e.c.seq)
                got += [_entry(r, self._key) for r in conn.execute(q)]
        if len(got) != len(wanted):
            missing = sorted(set(wanted) - {r.seq for r in got})[0]
            raise NotFound(said("no entry with seq {missing}", missing=missing))
        return got

    def search_sha256(
        self, sha256: str, limit: int = 1000, *, kind: str | None = None, after: int = -1
    ) -> list[EntryRow]:
        """Entries with this content hash (of one kind, if given), oldest first, from seq
        `after` + 1 on (keyset paging)."""
        if self.has_runs:
            if (key := key_bytes(sha256)) is None or limit < 1:
                return []
            args = (key, after, limit) if kind is None else (key, after, limit, kind)
            with self._cursor() as run:
                return [EntryRow(*t) for t in
                        _entry_tuples(run(runs.search_sql(kind), args).fetchall(), key_text)]
        e = self._entries
        q = select(e).where(e.c.sha256 == self._key_arg(sha256), e.c.seq > after)
        if kind is not None:
            q = q.where(e.c.kind == kind)
        with self.engine.connect() as conn:
            return [_entry(r, self._key) for r in conn.execute(q.order_by(e.c.seq).limit(limit))]

    def holds_leaf(self, sha256: str, leaf_hash: bytes) -> bool:
        """Whether an entry with this content hash and leaf hash is stored."""
        if self.has_runs:
            with self._cursor() as run:
                return run(runs.HOLDS_LEAF_SQL, (key_bytes(sha256), leaf_hash)).fetchone() \
                    is not None
        e = self._entries
        q = (select(e.c.seq)
             .where(e.c.sha256 == self._key_arg(sha256), e.c.leaf_hash == leaf_hash).limit(1))
        with self.engine.connect() as conn:
            return conn.execute(q).first() is not None

    def registered(self, registrant: str, sha256s: Iterable[str]) -> dict[str, int]:
        """Which of these content hashes `registrant` has a `work` of: hash -> the earliest
        such seq. What the sequencer asks of every block (D94), so it is a plain statement on
        the driver (no SQLAlchemy compilation) that reads the index
        `ix_entries_registrant_sha256` by both columns for each hash, whatever the planner's
        statistics say (and a row only for a hash found, to see its kind). The sequencer's
        read: the schema is this release's (32-byte keys)."""
        wanted = sorted({h for h in sha256s if valid_sha256(h)})  # no other is ever stored
        with self._cursor() as run:
            if self.dialect == "postgresql":
                # One index probe a hash. `sha256 IN (...)` was planned, on a log too young
                # for statistics, as a scan of all of the registrant's rows filtered by the
                # list: 1.9 s a 1,000-work batch at 60,000 entries.
                # The hashes go as one text literal and the server decodes each (D124).
                rows = run("SELECT v.sha, (SELECT min(e.seq) FROM entries e WHERE "
                           "e.registrant = %s AND e.sha256 = decode(v.sha, 'hex') AND "
                           "e.kind = 'work') FROM unnest(%s::text[]) AS v(sha)",
                           (registrant, _text_array(wanted))).fetchall()
                return {sha: int(seq) for sha, seq in rows if seq is not None}
            found: dict[str, int] = {}
            for i in range(0, len(wanted), 500):  # well under SQLite's parameter limit
                part = [bytes.fromhex(h) for h in wanted[i:i + 500]]  # (validated above)
                sql = (runs.registered_sql(len(part)) if self.has_runs else
                       "SELECT sha256, seq FROM entries WHERE registrant = ? AND sha256 "
                       f"IN ({', '.join('?' * len(part))}) AND kind = 'work'")
                for key, seq in run(sql, (registrant, *part)).fetchall():
                    sha = key_text(key)
                    found[sha] = min(int(seq), found.get(sha, int(seq)))
        return found

    def content_hashes(self, after: ScanMark | None, limit: int
                       ) -> tuple[list[str], ScanMark | None]:
        """A page of the content hashes of entries of every kind, in the order of
        `ix_entries_sha256`, from just after `after`, and the mark the next page starts
        after (None once a page is empty): the sequencer's scan for its filter (`ledger.seen`,
        D103). Keyset pages on the covering index: each a short read of its own, so no
        snapshot is held across the whole log (a SQLite checkpoint could not pass it). The
        mark is the last row's stored key itself, not its text: a tampered key that is not
        32 bytes has no text that orders as it does, and would start the scan over (D124).
        The sequencer's read: the schema is this release's."""
        args: tuple[object, ...]
        if self.has_runs:
            sql, args = runs.SCAN_SQL, (*(after or (b"", -1)), int(limit))
        else:
            mark = "%s" if self.dialect == "postgresql" else "?"
            where = f"WHERE (sha256, seq) > ({mark}, {mark}) " if after is not None else ""
            sql = (f"SELECT sha256, seq FROM entries {where}ORDER BY sha256, seq "
                   f"LIMIT {int(limit)}")
            args = after or ()
        with self._cursor() as run:
            rows = run(sql, args).fetchall()
        if not rows:
            return [], None
        return [key_text(k) for k, _ in rows], (rows[-1][0], int(rows[-1][1]))

    def runs_fault(self, start: int, end: int) -> str | None:
        """What is wrong with SQLite's content-hash runs (D142) for the entries `start` to
        `end` - 1, if anything; None where the indexes are B-trees. From `start` 0 (a full
        audit), `runs_whole_fault`, then the entries past what its snapshot held. From a later
        `start` (a resumed audit, and those entries): each entry is listed once in each table
        under its own key (a seek a listed run, twice, an entry: what is new, not the whole
        log). The runs locate the entries that every read by content hash answers with."""
        if not self.has_runs:
            return None
        if start == 0:
            fault, start = self.runs_whole_fault()
            if fault is not None:
                return fault
        return self.runs_unlisted_fault(start, end)

    def runs_unlisted_fault(self, start: int, end: int) -> str | None:
        """The first entry from `start` to `end` - 1 not listed once in each table of SQLite's
        content-hash runs under its own key, as a problem; None if there is none (or no
        runs). A seek a listed run, twice, an entry."""
        if not self.has_runs or start >= end:
            return None
        with self._cursor() as run:
            bad = run(runs.UNLISTED_SQL, (start, end)).fetchone()
        if bad is not None:
            return said("entry {seq}'s content hash is not listed once in each index",
                        seq=int(bad[0]))
        return None

    def runs_whole_fault(self, stop: threading.Event | None = None) -> tuple[str | None, int]:
        """What is wrong with SQLite's content-hash runs, over every entry and every listed
        row, if anything; and how many entries that covered (the least of the two tables'
        snapshots: a block sealed meanwhile is past it). In each table the listed rows and
        those that match their entry's key are as many as the entries, and the i-th least
        listed seq is i, so every entry is listed once, under its own key (a read of every
        listed row, a sort, and a read of every entry in seq order: tens of seconds at 10 M
        entries). With a fault, it covered 0. Setting `stop`, from another thread, interrupts
        it (an OperationalError) within about RUNS_CHECK_STEPS of SQLite's steps."""
        raw = self.engine.raw_connection()
        driver = raw.driver_connection
        assert driver is not None
        covered: int | None = None
        try:
            if stop is not None:
                driver.set_progress_handler(lambda: int(stop.is_set()), RUNS_CHECK_STEPS)
            with contextlib.closing(driver.cursor()) as cur:
                for table in runs.KEYS:
                    n, rows, matched, place, found = cur.execute(runs.totals_sql(table)).fetchone()
                    covered = n if covered is None else min(covered, n)
                    if place is not None and found < place:  # (seqs 0, 1, 1, ...)
                        return said("{table}: entry {seq} is listed more than once", table=table,
                                    seq=int(found)), 0
                    if place is not None:  # (seqs 0, 1, 3, ...)
                        return said("{table}: entry {seq} is not listed", table=table,
                                    seq=int(place)), 0
                    if rows != n:
                        return said("{table}: {rows} listed rows, for {n} entries", table=table,
                                    rows=rows, n=n), 0
                    if matched != n:
                        return said("{table}: a listed row does not match its entry's key",
                                    table=table), 0
        finally:
            if stop is not None:
                driver.set_progress_handler(None, 0)
            raw.close()
        return None, int(covered or 0)

    def content_hashes_of(self, start: int, end: int) -> list[str]:
        """The content hashes of entries `start` to `end` - 1 (a block or a few, by seq)."""
        e = self._entries
        q = select(e.c.sha256).where(e.c.seq >= start, e.c.seq < end)
        with self.engine.connect() as conn:
            return [self._key(h) for h in conn.execute(q).scalars()]

    def first_work(self, sha256: str) -> int | None:
        """The seq of the earliest `work` entry with this content hash, if any."""
        if self.has_runs:
            with self._cursor() as run:
                found = run(runs.FIRST_WORK_SQL, (key_bytes(sha256),)).fetchone()[0]
            return None if found is None else int(found)
        e = self._entries
        q = (select(e.c.seq).where(e.c.sha256 == self._key_arg(sha256), e.c.kind == "work")
             .order_by(e.c.seq).limit(1))
        with self.engine.connect() as conn:
            found = conn.execute(q).scalar()
        return None if found is None else int(found)

    def linked(self, target: int, rel: str) -> list[int]:
        """Seqs of the entries linked to `target` by `rel` (`ledger/links.py`), in log order."""
        q = (select(entry_links.c.seq)
             .where(entry_links.c.target == target, entry_links.c.rel == rel)
             .order_by(entry_links.c.seq))
        with self.engine.connect() as conn:
            return [int(s) for s in conn.execute(q).scalars()]

    def links_to(self, target: int, limit: int, after: int = -1) -> list[tuple[int, str]]:
        """(seq, relation) of the entries linked to `target` by any relation, in log order,
        from seq `after` + 1 on, at most `limit` (keyset paging)."""
        q = (select(entry_links.c.seq, entry_links.c.rel)
             .where(entry_links.c.target == target, entry_links.c.seq > after)
             .order_by(entry_links.c.seq, entry_links.c.rel).limit(limit))
        with self.engine.connect() as conn:
            return [(int(s), str(r)) for s, r in conn.execute(q)]

    def links_between(self, lo: int, hi: int, *, exact: bool = False) -> list[Link]:
        """Stored link rows of the entries lo <= seq < hi, sorted. With `exact` (the audit),
        IntegrityError for a row whose values are not the integers and text the table
        declares (SQLite stores any type): read through `int`, a target of 0.5 would pass
        for 0, where the lookups by target (`linked`) compare it exactly and miss it."""
        q = (select(entry_links.c.target, entry_links.c.seq, entry_links.c.rel)
             .where(entry_links.c.seq >= lo, entry_links.c.seq < hi))
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        if exact and (odd := next((r for r in rows if not (
                type(r[0]) is int and type(r[1]) is int and type(r[2]) is str)), None)):
            raise IntegrityError(said("entry_links holds a row of other types than its "
                                      "columns': {row}", row=repr(tuple(odd))))
        return sorted((int(t), int(s), str(r)) for t, s, r in rows)

    def count_links(self, below: int | None = None) -> int:
        """Stored link rows; with `below`, those of the entries seq < `below`."""
        q = select(func.count()).select_from(entry_links)
        if below is not None:
            q = q.where(entry_links.c.seq < below)
        with self.engine.connect() as conn:
            return int(conn.execute(q).scalar_one())

    def get_block(self, height: int) -> BlockRow:
        r = self._get_block.first(height=height)
        if r is None:
            raise NotFound(said("no block at height {height}", height=height))
        return _block(r)

    def get_blocks(self, lo: int, hi: int) -> list[BlockRow]:
        """Blocks lo <= height < hi, in height order."""
        q = (select(blocks).where(blocks.c.height >= lo, blocks.c.height < hi)
             .order_by(blocks.c.height))
        with self.engine.connect() as conn:
            return [_block(r) for r in conn.execute(q)]

    def latest_block(self) -> BlockRow | None:
        with self.engine.connect() as conn:
            r = conn.execute(select(blocks).order_by(blocks.c.height.desc()).limit(1)).first()
        return _block(r) if r is not None else None

    def block_for_size(self, tree_size: int) -> BlockRow | None:
        """The first block whose tree reached `tree_size` exactly, if any. Kept in memory once
        found (a later block cannot be the first), so every proof at the latest size does not
        ask again."""
        if (hit := self._by_size.get(tree_size)) is not None:
            return hit
        r = self._block_for_size.first(tree_size=tree_size)
        if r is None:
            return None
        if len(self._by_size) >= _BLOCKS_BY_SIZE_MAX:
            self._by_size.clear()
        self._by_size[tree_size] = row = _block(r)
        return row

    def iter_blocks(self, start: int = 0, chunk: int = 1000) -> Iterator[BlockRow]:
        """Blocks from height `start` on, in height order."""
        for rs in self._pages(blocks, "height", start, chunk):
            yield from (_block(r) for r in rs)

    def iter_block_tuples(self, start: int = 0, chunk: int = 1000) -> Iterator[list[BlockTuple]]:
        """Blocks from height `start` on, in height order, as the driver's tuples in the
        table's column order (`block_of`), a chunk at a time: the audit reads every block and
        hands it to a worker, and row and header objects cost more to make and to pickle."""
        for rs in self._driver_pages(list(blocks.c), start, chunk):
            yield [r if all(type(r[i]) is bytes for i in (1, 2, 3, 7))
                   else (r[0], _bytes(r[1]), _bytes(r[2]), _bytes(r[3]), *r[4:7], _bytes(r[7]),
                         *r[8:]) for r in rs]

    def get_timestamps(self, height: int) -> list[tuple[str, bytes]]:
        """(tsa, DER token) pairs over block `height`'s hash, ours first."""
        return [(tsa, _bytes(tok)) for tsa, tok in self._get_timestamps.all(height=height)]

    def _missing_q(self, tsa: str) -> Any:
        stamped = select(block_timestamps.c.height).where(block_timestamps.c.tsa == tsa)
        return blocks.c.height.not_in(stamped)

    def blocks_missing_timestamp(self, tsa: str, limit: int = 100) -> list[tuple[int, bytes]]:
        """(height, block hash) of the oldest blocks without a token from `tsa`."""
        q = (
            select(blocks.c.height, blocks.c.hash)
            .where(self._missing_q(tsa))
            .order_by(blocks.c.height)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [(h, _bytes(x)) for h, x in conn.execute(q)]

    def count_missing_timestamps(self, tsa: str) -> int:
        q = select(func.count()).select_from(blocks).where(self._missing_q(tsa))
        with self.engine.connect() as conn:
            return int(conn.execute(q).scalar_one())

    def add_timestamp(self, height: int, tsa: str, token: bytes) -> None:
        """Keep a token that arrived after its block was sealed (an external TSA's)."""
        with self.engine.begin() as conn:
            conn.execute(block_timestamps.insert().values(height=height, tsa=tsa, token=token))

    def iter_timestamps(
        self, tsa: str = "notary", start: int = 0, chunk: int = 1_000
    ) -> Iterator[tuple[int, bytes]]:
        """(height, token) of one TSA's tokens over blocks from height `start` on, by height
        (for the audit). Read `chunk` tokens at a time, each chunk whole on a connection of
        its own, so no connection is held while the caller works between two tokens (the
        audit checks out others meanwhile; a held one could starve a small pool)."""
        if chunk < 1:
            raise ValueError(f"chunk must be at least 1, not {chunk}")
        after = start
        while True:
            q = (
                select(block_timestamps.c.height, block_timestamps.c.token)
                .where(block_timestamps.c.tsa == tsa, block_timestamps.c.height >= after)
                .order_by(block_timestamps.c.height)
                .limit(chunk)
            )
            with self.engine.connect() as conn:
                rows = [(_stored_int(height, "block_timestamps.height"), _bytes(tok))
                        for height, tok in conn.execute(q)]
            yield from rows
            if len(rows) < chunk:
                return
            after = rows[-1][0] + 1  # one token a (height, tsa): the next chunk starts after

    def stray_timestamps(self, tsa: str = "notary", start: int = 0) -> list[int]:
        """Heights >= `start`, or below 0, that one TSA's tokens name but no block has (for
        the audit: a height below 0 is never a block's, whatever audit resumed where)."""
        height = block_timestamps.c.height
        q = (
            select(height)
            .where(block_timestamps.c.tsa == tsa, or_(height >= start, height < 0),
                   ~height.in_(select(blocks.c.height)))
            .order_by(height)
        )
        with self.engine.connect() as conn:
            return [_stored_int(h, "block_timestamps.height") for h in conn.execute(q).scalars()]

    def add_cosignature(self, tree_size: int, witness: str, line: str,
                        cosigned_at: int) -> bool:
        """Keep a witness's cosignature line of the checkpoint of `tree_size`, whose timestamp
        is `cosigned_at`: the first line of each size for good (False if one was kept
        already), and the newest line of each witness, whatever its size, in place of one of
        a smaller (size, time) (D133): a witness asked again about an unchanged tree returns
        a line with a later time, which readers of the cosigned checkpoint then get. One
        statement for the newest, so two processes keeping lines at once leave the newer; one
        transaction for both, so a line is never the newest without being kept, which the
        audit checks (D138)."""
        insert = pg_insert if self.dialect == "postgresql" else sqlite_insert
        kept = insert(cosignatures).values(
            tree_size=tree_size, witness=witness, line=line,
        ).on_conflict_do_nothing(index_elements=[cosignatures.c.tree_size, cosignatures.c.witness])
        fresh = fresh_cosignatures.c
        ins = insert(fresh_cosignatures).values(witness=witness, tree_size=tree_size,
                                                cosigned_at=cosigned_at, line=line)
        with self.engine.begin() as conn:
            if self.dialect == "postgresql":  # where the row count came back -1 here
                first = conn.execute(kept.returning(cosignatures.c.tree_size)).first() is not None
            else:  # exact on SQLite, which has RETURNING only from 3.35
                first = conn.execute(kept).rowcount == 1
            conn.execute(ins.on_conflict_do_update(
                index_elements=[fresh.witness],
                set_={"tree_size": ins.excluded.tree_size,
                      "cosigned_at": ins.excluded.cosigned_at, "line": ins.excluded.line},
                where=tuple_(fresh.tree_size, fresh.cosigned_at)
                < tuple_(ins.excluded.tree_size, ins.excluded.cosigned_at)))
        return first

    def cosignature_lines(self, tree_size: int, witnesses: Sequence[str], *,
                          newest: bool = True) -> list[str]:
        """The cosignature lines of the checkpoint of `tree_size` by these witnesses, in the
        order given: each witness's newest line of that size (D133) if `newest` and there is
        one, else the first kept (what a bundle carries: it does not change while the tree
        stands still, so neither do the documents made from it)."""
        q = (select(cosignatures.c.witness, cosignatures.c.line)
             .where(cosignatures.c.tree_size == tree_size,
                    cosignatures.c.witness.in_(list(witnesses))))
        latest = (select(fresh_cosignatures.c.witness, fresh_cosignatures.c.line)
                  .where(fresh_cosignatures.c.tree_size == tree_size,
                         fresh_cosignatures.c.witness.in_(list(witnesses))))
        with self.engine.connect() as conn:
            found = {str(w): str(line) for w, line in conn.execute(q)}
            if newest:
                found.update((str(w), str(line)) for w, line in conn.execute(latest))
        return [found[w] for w in witnesses if w in found]

    def iter_fresh_cosignatures(self) -> Iterator[tuple[int, str, str, str | None, int]]:
        """Each witness's newest line (tree size, witness vkey, line) with the checkpoint the
        log signed at that size, as `iter_cosigned_checkpoints`, and the time its row gives
        the line (for the audit); nothing on a schema from before they were kept (the audit
        reads older schemas as they are)."""
        if self._schema_before(FRESH_COSIGNATURES_FROM):
            return
        fresh = fresh_cosignatures.c
        for size, witness, line, checkpoint, at in self._lines_with_checkpoints(
                fresh_cosignatures, fresh.witness, also=fresh.cosigned_at):
            yield size, witness, line, checkpoint, _stored_int(at, "fresh_cosignatures.cosigned_at")

    def iter_cosigned_checkpoints(self) -> Iterator[tuple[int, str, str, str | None]]:
        """Every kept cosignature (tree size, witness vkey, line) with the checkpoint the log
        signed at that size (that of the first block of that size; None if there is none), by
        size then witness (for the audit)."""
        for size, witness, line, checkpoint, _ in self._lines_with_checkpoints(
                cosignatures, cosignatures.c.tree_size, cosignatures.c.witness):
            yield size, witness, line, checkpoint

    def _lines_with_checkpoints(self, table: Table, *order: Any, also: Any = None
                                ) -> Iterator[tuple[int, str, str, str | None, Any]]:
        """Each row (tree size, witness, line, `also`'s column or None) of a table of
        cosignature lines, with the checkpoint of the first block of that size (None if there
        is none) before the last, in `order`."""
        first = (select(blocks.c.checkpoint).where(blocks.c.tree_size == table.c.tree_size)
                 .order_by(blocks.c.height).limit(1).scalar_subquery())
        q = select(table.c.tree_size, table.c.witness, table.c.line, first,
                   null() if also is None else also).order_by(*order)
        with self.engine.connect() as conn:
            for size, witness, line, checkpoint, extra in conn.execute(q):
                yield _stored_int(size, f"{table.name}.tree_size"), str(witness), str(line), (
                    None if checkpoint is None else str(checkpoint)), extra

    def last_cosigned(self, witness: str) -> int | None:
        """The largest tree size this witness has cosigned for us, if any."""
        q = select(func.max(cosignatures.c.tree_size)).where(cosignatures.c.witness == witness)
        with self.engine.connect() as conn:
            v = conn.execute(q).scalar()
        return None if v is None else int(v)

    def latest_quorum_size(self, witnesses: Sequence[str], quorum: int) -> int | None:
        """The largest tree size cosigned by at least `quorum` of these witnesses."""
        q = (select(cosignatures.c.tree_size)
             .where(cosignatures.c.witness.in_(list(witnesses)))
             .group_by(cosignatures.c.tree_size)
             .having(func.count() >= quorum)
             .order_by(cosignatures.c.tree_size.desc())
             .limit(1))
        with self.engine.connect() as conn:
            v = conn.execute(q).scalar()
        return None if v is None else int(v)

    # -- claimants' contact details (erasable, off the log: D32) ---------------------------

    def put_contact(self, commitment: str, salt: str, contact_json: str, created_at: str) -> None:
        """Keep the contact details a claim about to be logged commits to."""
        with self.engine.begin() as conn:
            conn.execute(claim_contacts.insert().values(
                commitment=commitment, salt=salt, contact=contact_json, created_at=created_at))

    def get_contact(self, commitment: str) -> tuple[str, str] | None:
        """(salt, contact JSON) kept for `commitment`, or None (never kept, or erased)."""
        q = (select(claim_contacts.c.salt, claim_contacts.c.contact)
             .where(claim_contacts.c.commitment == commitment))
        with self.engine.connect() as conn:
            row = conn.execute(q).first()
        return None if row is None else (str(row[0]), str(row[1]))

    def delete_contact(self, commitment: str) -> bool:
        """Erase the contact details kept for `commitment`; False if there were none."""
        with self.engine.begin() as conn:
            done = conn.execute(claim_contacts.delete()
                                .where(claim_contacts.c.commitment == commitment))
        return bool(done.rowcount)

    def execute_raw(self, sql: str) -> None:
        """For tests and operators' tooling only."""
        with self.engine.begin() as conn:
            conn.execute(text(sql))


def _stored_int(value: object, where: str) -> int:
    """An INTEGER column's value as stored: IntegrityError for another type (SQLite keeps
    any), which `int` would crash on (text) or read through (0.5 for 0)."""
    if type(value) is not int:
        raise IntegrityError(said("{where} holds a value that is not an integer: {value}",
                                  where=where, value=repr(value)))
    return value


def _bytes(v: object) -> bytes:
    """A BLOB column's value. SQLite lets any type into any column, so a tampered row may hold
    text: take its UTF-8 bytes, and let the hash checks report it, rather than crash."""
    if isinstance(v, str):
        return v.encode("utf-8", "surrogatepass")
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v)
    return str(v).encode()


def _entry_tuples(rs: list[Any], key: Callable[[object], str]) -> list[EntryTuple]:
    """The driver's rows as `EntryTuple`s, the content hash as hex text by `key`: where a
    tampered SQLite row holds text in a bytes column, its bytes, or a key no hash spells."""
    return [(r[0], r[1], r[2], r[3], key(r[4]), r[5], r[6])
            if type(r[1]) is bytes and type(r[2]) is bytes
            else (r[0], _bytes(r[1]), _bytes(r[2]), r[3], key(r[4]), *r[5:]) for r in rs]


def _stored_rows(rows: Sequence[EntryRow]) -> list[tuple[Any, ...]]:
    """A block's entry rows as the table stores them: the content hash as its 32 bytes (D124).
    The hashes were validated with their entries, so `fromhex` cannot fail here."""
    return [(r[0], r[1], r[2], r[3], bytes.fromhex(r[4]), r[5], r[6]) for r in rows]


def _entry(r: Any, key: Callable[[object], str]) -> EntryRow:
    return EntryRow(
        seq=r.seq, leaf_hash=_bytes(r.leaf_hash), data=_bytes(r.data), kind=r.kind,
        sha256=key(r.sha256), registrant=r.registrant, block_height=r.block_height,
    )


def block_of(t: BlockTuple) -> BlockRow:
    """The block of a row `iter_block_tuples` gave."""
    (height, hash_, prev_hash, batch_root, first_seq, count, tree_size, tree_root, sealed_at,
     checkpoint, block_note) = t
    return BlockRow(BlockHeader(height, prev_hash, batch_root, first_seq, count, tree_size,
                                tree_root, sealed_at), hash_, checkpoint, block_note)


def _block(r: Any) -> BlockRow:
    header = BlockHeader(
        height=r.height, prev_block_hash=_bytes(r.prev_hash), batch_root=_bytes(r.batch_root),
        first_seq=r.first_seq, count=r.count, tree_size=r.tree_size,
        tree_root=_bytes(r.tree_root), sealed_at=r.sealed_at,
    )
    return BlockRow(header=header, hash=_bytes(r.hash), checkpoint=r.checkpoint,
                    block_note=r.block_note)
