"""Several API processes, one sequencer (decision D48).

With `serve --workers N` every process validates, canonicalises and authenticates on its own,
and all of them race for the log's sequencer lock (the PostgreSQL advisory lock or the SQLite
`flock`, as with one process). The winner runs the `Sequencer` and listens on a Unix socket in
the data directory; the others connect to it and hand their entries over, and a writer still
gets its receipt only after the sequencer has committed its block. Each block the sequencer
seals is sent to every connected process before the receipts it holds, so a process's reads
(tree size, checkpoint) are never behind a receipt it has given out.

Every process keeps trying the lock. When the sequencer dies its lock goes with it (the kernel
drops the `flock`, PostgreSQL ends the session), another process takes it, reloads the tree from
the database and binds the socket afresh: what was committed is the log, and what was queued
in the dead process was never acknowledged. Its writers are told that their entry may or may
not be recorded (as when a commit fails), and writes that arrive before a new sequencer is
listening are refused with 503 and Retry-After, nothing recorded.

The socket is in the data directory (mode 0700): only the registry's own user can reach it.
Frames are JSON of a fixed shape (D59), not pickles: a frame can only ever be read as data.

Several hosts on one PostgreSQL (D110): with `handoff_listen`, the sequencer also listens on
TCP and writes the address the other hosts reach it at into the database; a process whose
host has no sequencer connects there. A TCP connection starts with a handshake in which each
side proves it holds a secret all hosts share, and every later frame carries an HMAC, so no
one without the secret can hand over an entry, answer as the sequencer, or change a frame.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import os
import queue
import re
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson

from copyledger.ledger import errors
from copyledger.ledger import links as links_mod
from copyledger.ledger.entry import KINDS, MAX_ENTRY_BYTES, valid_registrant, valid_sha256
from copyledger.ledger.errors import (
    AlreadyRegistered,
    Conflict,
    CopyledgerError,
    InvalidInput,
    Said,
    Unavailable,
    Uncertain,
    WrongLogKey,
    WrongSecret,
    said,
)
from copyledger.ledger.note import BlockHeader
from copyledger.ledger.sequencer import LogState, Pending, Receipt, Sequencer
from copyledger.ledger.store import TCP_KEEPALIVE, TCP_USER_TIMEOUT_MS, BlockRow
from copyledger.ledger.throttle import Throttle
from copyledger.ledger.throttle import db_reason as _db_reason
from copyledger.service import idempotency
from copyledger.service.fsperm import write_public
from copyledger.service.settings import Settings

log = logging.getLogger("copyledger.handoff")

SOCKET_NAME = "sequencer.sock"
PID_NAME = "sequencer.pid"  # the pid of the process that holds the lock, for operators
MAX_SOCKET_PATH = 107  # sun_path is 108 bytes with its NUL
ELECT_EVERY_S = 0.05  # how often a process that is not the sequencer tries the lock
REFUSED_RETRY_S = 1.0  # how often a process asks again a sequencer of another version
GREETING_S = 10.0  # how long a process waits for the sequencer's hello
MISMATCH_LOG_S = 60.0  # how often the sequencer logs the same other version
SILENT_GREETINGS = 3  # hellos cut off unanswered before a process takes the peer for older
MAX_IN_FLIGHT = 50_000  # entries one process may have handed over and not yet had answered

_LEN = struct.Struct(">I")
_T = TypeVar("_T")
_LOST = ("the sequencer stopped before answering; the entry may or may not be recorded: check "
         "GET /v1/search?sha256=... before retrying")
_NO_SEQUENCER = "the sequencer is changing hands; retry shortly"
_NOT_TRUSTED = said("this host cannot hand entries to the log's sequencer: the two hosts do "
                    "not share the hand-over secret; nothing was recorded")

Request = tuple[int, list[Pending]]  # (request id, the entries queued as one)
Bundle = list[Request]  # the requests one event-loop turn handed over: one wake-up of the sender
Message = list[Any]  # one message of the wire format below, ready to send


def socket_path(data_dir: Path) -> Path:
    path = data_dir / SOCKET_NAME
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise InvalidInput(said("--workers needs a Unix socket at {path}, which is longer than "
                                "{max_socket_path} bytes: use a data directory with a shorter path",
                                path=path, max_socket_path=MAX_SOCKET_PATH))
    return path


# -- the wire format (D59) ----------------------------------------------------------------------
#
# A frame is a 4-byte big-endian length, then that many bytes of JSON (UTF-8): an array of
# messages, whatever queued up since the last frame. Bytes travel as lowercase hex (hashes) or
# base64 (an entry's canonical data). Nothing but these shapes is accepted: a frame that does
# not parse, or has another shape, ends the connection (WireError), as a closed socket would.
#
#   first, both ways:   ["hello", WIRE_VERSION]   (the process's, then the sequencer's answer;
#                       a process from before D98 sends "entries" first, and each is
#                       answered with an error, nothing recorded)
#   to the sequencer:   ["entries", rid, [[data_b64, kind, sha256, registrant,
#                                          [[target, relation], ...], once, received_at,
#                                          claim], ...]]
#                       (received_at: as in the entry's data, 27 characters, or "": D117;
#                        claim: [account, key, request_sha256] of its Idempotency-Key, or null:
#                        D132)
#   from the sequencer: ["block", header (BlockHeader.to_json), hash_hex, checkpoint, note]
#                       ["answer", rid, [outcome, ...]]
#   outcome:            ["receipt", seq, leaf_hash_hex, block_height, tree_size, root_hex,
#                                   [proof_hex, ...], checkpoint]
#                     | ["earlier", seq]    (AlreadyRegistered: nothing written, D94; or,
#                                           for an entry with a claim, the entry already
#                                           recorded under it, D134: version 4)
#                     | ["error", class name, detail, internal, template or null, values]

WIRE_VERSION = 4
"""The shape of these messages. A process that speaks another (copyledger upgraded on disk
while `serve --workers N` runs, and a worker restarted onto the new code) is refused at the
hello, with a log line that says so, instead of failing on its first frame (D98). 2: each
entry carries its `received_at` (D117). 3: and its Idempotency-Key claim (D132)."""
MAX_FRAME = 1 << 30  # a frame longer than this is not ours
FRAME_ITEMS = 256  # messages in one frame from the sequencer (answers of up to 1,000 receipts)
FRAME_ENTRIES = 2_000  # entries in one frame to the sequencer (each at most 16 KiB of JSON)


class WireError(ValueError):
    """A frame that is not of the handoff's format."""


def _send(sock: socket.socket, messages: Sequence[Any]) -> None:
    data = _dump(messages)
    sock.sendall(_LEN.pack(len(data)) + data)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return bytes(buf)


def _recv(sock: socket.socket) -> list[Any]:
    (n,) = _LEN.unpack(_recv_exact(sock, _LEN.size))
    if n > MAX_FRAME:
        raise WireError(f"a frame of {n} bytes")
    return _load(_recv_exact(sock, n))


def _dump(messages: Sequence[Any]) -> bytes:
    try:
        return orjson.dumps(messages, default=str)
    except TypeError:  # a lone surrogate (say, in a notary's error text): not UTF-8 as it is
        return json.dumps(messages, default=str, ensure_ascii=False).encode("utf-8", "replace")


def _load(data: bytes) -> list[Any]:
    try:
        messages = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise WireError(str(e)) from None
    if not isinstance(messages, list):
        raise WireError("a frame is an array of messages")
    return messages


# -- across hosts (D110) ------------------------------------------------------------------------
#
# Over TCP a connection starts with a handshake on a secret both hosts were given (never sent):
#
#   process -> sequencer:  ["auth", AUTH_VERSION, nonce_p]          (32 random bytes, hex)
#   sequencer -> process:  ["auth", nonce_s, HMAC(secret, "server" | nonce_p | nonce_s)]
#   process -> sequencer:  ["auth", HMAC(secret, "client" | nonce_p | nonce_s)]
#
# (each label is "copyledger handoff <label>" and a NUL). Each side checks the other's proof
# before it sends anything else, so neither takes a frame from, nor hands an entry to, a peer
# without the secret. Every later frame, both ways, is followed by a 32-byte
# HMAC-SHA256(session key, direction | 8-byte frame counter | frame's JSON), the session key
# being HMAC(secret, "session" | nonce_p | nonce_s): a frame changed, dropped, replayed,
# reordered or reflected fails its tag and ends the connection. Frames are not encrypted:
# entries and receipts are what the log publishes moments later. Before the handshake a frame
# may be at most AUTH_FRAME bytes and the whole handshake takes at most HANDSHAKE_S.

AUTH_VERSION = 1
AUTH_FRAME = 512
HANDSHAKE_S = 5.0  # the whole handshake, both ways, however the peer paces its bytes
CONNECT_S = 2.0  # to open a TCP connection to the published address
MIN_SECRET = 32  # bytes of the shared secret
BARRED_RECHECK_S = 30.0
"""How often a process barred for its secret (D113) reads the recorded check again: once it
is forgotten (`copyledger db forget-handoff-secret`) or is this process's, it may lead."""
_TAG = 32


def _mac(key: bytes, label: bytes, *parts: bytes) -> bytes:
    return hmac.new(key, b"copyledger handoff " + label + b"\0" + b"".join(parts),
                    hashlib.sha256).digest()


def _hex32(raw: Any) -> bytes:
    """32 bytes from their hex, or WireError."""
    if not (isinstance(raw, str) and len(raw) == 64):
        raise WireError("a handshake value of another shape")
    try:
        return bytes.fromhex(raw)
    except ValueError:
        raise WireError("a handshake value of another shape") from None


class _Channel:
    """A connection's frames: as above on the Unix socket; over TCP each one tagged (D110)."""

    __slots__ = ("_got", "_key", "_mine", "_sent", "_theirs", "sock")

    def __init__(self, sock: socket.socket, key: bytes | None = None,
                 mine: bytes = b"", theirs: bytes = b"") -> None:
        self.sock = sock
        self._key, self._mine, self._theirs = key, mine, theirs
        self._sent = self._got = 0

    @staticmethod
    def _tag(key: bytes, direction: bytes, counter: int, data: bytes) -> bytes:
        """A frame's HMAC: its direction and number in the connection, then its bytes."""
        return hmac.new(key, direction + counter.to_bytes(8, "big") + data,
                        hashlib.sha256).digest()

    def send(self, messages: Sequence[Any]) -> None:
        if self._key is None:
            _send(self.sock, messages)
            return
        data = _dump(messages)
        tag = self._tag(self._key, self._mine, self._sent, data)
        self._sent += 1
        self.sock.sendall(_LEN.pack(len(data)) + data + tag)

    def recv(self) -> list[Any]:
        if self._key is None:
            return _recv(self.sock)
        (n,) = _LEN.unpack(_recv_exact(self.sock, _LEN.size))
        if n > MAX_FRAME:
            raise WireError(f"a frame of {n} bytes")
        data = _recv_exact(self.sock, n + _TAG)
        want = self._tag(self._key, self._theirs, self._got, data[:n])
        if not hmac.compare_digest(want, data[n:]):
            raise WireError("a frame whose tag does not match: changed, replayed or forged")
        self._got += 1
        return _load(data[:n])


def _recv_by(sock: socket.socket, n: int, deadline: float) -> bytes:
    """`n` bytes, all by `deadline` (monotonic): a peer sending a byte at a time cannot stretch
    a handshake past it (a socket timeout bounds each `recv` only)."""
    buf = bytearray()
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the hand-over handshake took too long")
        sock.settimeout(left)
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return bytes(buf)


def _recv_small(sock: socket.socket, deadline: float) -> list[Any]:
    """A handshake frame: at most AUTH_FRAME bytes, by `deadline`."""
    (n,) = _LEN.unpack(_recv_by(sock, _LEN.size, deadline))
    if n > AUTH_FRAME:
        raise WireError(f"a handshake frame of {n} bytes")
    return _load(_recv_by(sock, n, deadline))


def _one(frame: list[Any], size: int) -> list[Any]:
    """The frame's only message, an ["auth", ...] of `size` items, or WireError."""
    if not (len(frame) == 1 and isinstance(frame[0], list) and len(frame[0]) == size
            and frame[0][0] == "auth"):
        raise WireError("a handshake message of another shape")
    return frame[0]


def auth_client(sock: socket.socket, secret: bytes) -> _Channel:
    """The API process's side of the handshake; the tagged channel once the sequencer has
    proved it holds the secret. WireError if it has not."""
    deadline = time.monotonic() + HANDSHAKE_S
    mine = os.urandom(32)
    sock.settimeout(HANDSHAKE_S)
    _send(sock, [["auth", AUTH_VERSION, mine.hex()]])
    _, theirs_hex, proof = _one(_recv_small(sock, deadline), 3)
    theirs = _hex32(theirs_hex)
    if not hmac.compare_digest(_hex32(proof), _mac(secret, b"server", mine, theirs)):
        raise WireError("the sequencer did not prove it holds the hand-over secret")
    _send(sock, [["auth", _mac(secret, b"client", mine, theirs).hex()]])
    sock.settimeout(None)
    return _Channel(sock, _mac(secret, b"session", mine, theirs), b"C", b"S")


def auth_server(sock: socket.socket, secret: bytes) -> _Channel:
    """The sequencer's side of the handshake; the tagged channel once the process has proved
    it holds the secret. WireError if it has not."""
    deadline = time.monotonic() + HANDSHAKE_S
    _, version, theirs_hex = _one(_recv_small(sock, deadline), 3)
    if version != AUTH_VERSION:
        raise WireError("another handshake version")
    theirs, mine = _hex32(theirs_hex), os.urandom(32)
    _send(sock, [["auth", mine.hex(), _mac(secret, b"server", theirs, mine).hex()]])
    (_, proof) = _one(_recv_small(sock, deadline), 2)
    if not hmac.compare_digest(_hex32(proof), _mac(secret, b"client", theirs, mine)):
        raise WireError("a process that does not hold the hand-over secret")
    sock.settimeout(None)
    return _Channel(sock, _mac(secret, b"session", theirs, mine), b"S", b"C")


@dataclass(frozen=True)
class Network:
    """A hand-over across hosts (D110): where this host's sequencer, when it is one, listens;
    the address it publishes for the others (the lock's database holds it); the secret all
    hosts share."""

    listen: tuple[str, int]
    advertise: str
    secret: bytes

    @property
    def secret_check(self) -> str:
        """What the database keeps of the secret to tell the hosts' own from another (D113):
        an HMAC under it of a label no handshake uses, so it proves nothing in a handshake and,
        the secret being 32 bytes or more, does not give the secret away."""
        return _mac(self.secret, b"secret check").hex()


def handoff_network(settings: Settings) -> Network | None:
    """The network hand-over `settings` ask for (`handoff_listen`), checked; None if none.
    It needs PostgreSQL (SQLite's lock is a file on one host) and a secret of at least
    MIN_SECRET bytes in the variable `handoff_secret_env` names."""
    if not settings.handoff_listen:
        return None
    if not settings.database_url.startswith("postgresql"):
        raise InvalidInput(said("handoff_listen needs a PostgreSQL database: hosts share "
                                "the log through it"))
    secret = os.environb.get(os.fsencode(settings.handoff_secret_env), b"")
    if len(secret) < MIN_SECRET:
        raise InvalidInput(said("handoff_listen needs a secret of at least {n} bytes, shared "
                                "by every host, in the environment variable {name}",
                                n=MIN_SECRET, name=settings.handoff_secret_env))
    listen = parse_address(settings.handoff_listen)
    advertise = settings.handoff_advertise or settings.handoff_listen
    host, _ = parse_address(advertise)
    if host in ("0.0.0.0", "::", ""):
        raise InvalidInput(said("handoff_advertise: other hosts cannot reach {value}; set "
                                "the address they reach this host at", value=repr(advertise)))
    return Network(listen, advertise, secret)


MAX_HANDSHAKES = 32  # handshakes under way at once; a connection beyond them is closed
MAX_HANDSHAKES_PER_PEER = 8  # of them from one address (a host's processes each connect)


def _tcp_ready(sock: socket.socket) -> socket.socket:
    """No Nagle delay (a frame is an answer someone waits on), and keepalives
    (`ledger.store.TCP_KEEPALIVE`): a host that vanished is noticed in about 25 s whether or
    not anything was being sent, and the writers waiting on it are told their entries may or
    may not be recorded."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    idle, interval, count = TCP_KEEPALIVE
    for name, value in (("TCP_KEEPIDLE", idle), ("TCP_KEEPINTVL", interval),
                        ("TCP_KEEPCNT", count), ("TCP_USER_TIMEOUT", TCP_USER_TIMEOUT_MS)):
        if hasattr(socket, name):  # Linux's; elsewhere the system's defaults stay
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
    return sock


_refusals = Throttle(MISMATCH_LOG_S)  # refused connections, logged once a minute a reason


class _Handshakes:
    """The sequencer's side of the handshake: at most MAX_HANDSHAKES under way at once, and at
    most MAX_HANDSHAKES_PER_PEER from one address, each at most HANDSHAKE_S long; a connection
    beyond them is refused at once. A stranger who opens connections and says nothing holds a
    thread each for seconds, so their number is bounded, and one address cannot take every
    slot (one that can open connections from many addresses is for a firewall to stop: the
    port should face only the registry's hosts)."""

    def __init__(self, secret: bytes) -> None:
        self.secret = secret
        self._lock = threading.Lock()
        self._busy = 0
        self._by_peer: dict[str, int] = {}

    def __call__(self, sock: socket.socket) -> _Channel:
        try:
            peer = str(sock.getpeername()[0])
        except (OSError, IndexError):
            peer = ""
        with self._lock:
            if self._busy >= MAX_HANDSHAKES or \
                    self._by_peer.get(peer, 0) >= MAX_HANDSHAKES_PER_PEER:
                raise WireError("too many hand-over handshakes at once")
            self._busy += 1
            self._by_peer[peer] = self._by_peer.get(peer, 0) + 1
        try:
            return auth_server(_tcp_ready(sock), self.secret)
        finally:
            with self._lock:
                self._busy -= 1
                self._by_peer[peer] -= 1
                if not self._by_peer[peer]:
                    del self._by_peer[peer]


def _listen_tcp(listen: tuple[str, int]) -> socket.socket:
    """A TCP listener at `listen`, of the address family its host is (`::` takes IPv4 too)."""
    host, port = listen
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    return socket.create_server((host, port), family=family, backlog=64,
                                dualstack_ipv6=host == "::" and socket.has_dualstack_ipv6())


def parse_address(address: str) -> tuple[str, int]:
    """`host:port` (an IPv6 host in brackets) as a pair, or InvalidInput."""
    host, sep, port = address.strip().rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not (port.isascii() and port.isdigit()) \
            or not 0 < int(port) < 65536:
        raise InvalidInput(said("{value} is not a host:port address", value=repr(address)))
    return host, int(port)


def _hello_version(raw: Any) -> int | None:
    """The version a peer's first message says it speaks; None if it is not a hello (a
    copyledger from before D98)."""
    if (isinstance(raw, list) and len(raw) == 2 and raw[0] == "hello"
            and isinstance(raw[1], int) and not isinstance(raw[1], bool)):
        return raw[1]
    return None


def _mismatch(theirs: int | None, ours: int, *, sequencer: bool) -> Said:
    """What is said of a peer of another hand-over version, the sequencer or another process
    (a peer from before D98 says none: version 0)."""
    if sequencer:
        return said("the sequencer speaks hand-over version {theirs} and this process {ours}: "
                    "copyledger was upgraded while `serve --workers` ran; restart all of its "
                    "processes", theirs=theirs or 0, ours=ours)
    return said("a process speaks hand-over version {theirs} and the sequencer {ours}: "
                "copyledger was upgraded while `serve --workers` ran; restart all of its "
                "processes", theirs=theirs or 0, ours=ours)


def _entries_message(rid: int, pendings: Sequence[Pending]) -> list[Any]:
    return ["entries", rid, [[base64.b64encode(p.data).decode(), p.kind, p.sha256, p.registrant,
                              [list(link) for link in p.links], p.once, p.received_at,
                              None if p.claim is None else list(p.claim)]
                             for p in pendings]]


_STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", re.ASCII)  # `entry.utc_now`'s


_ACCOUNT_MAX = 64  # `idempotency_keys.account`'s length, as the API's accounts are
_SEQ_END = 2**63  # a link's target seq is a BIGINT (`entry_links.target`)
_RELATIONS = frozenset({links_mod.TRANSFER, links_mod.CLAIM, links_mod.REPLY})


def _claim_shape(claim: Any) -> bool:
    """Whether an entry's Idempotency-Key claim is [account, key, request_sha256] as the API
    makes it (D132): the block inserts it, so a value the table refuses would fail the block."""
    return (isinstance(claim, list) and len(claim) == 3
            and all(isinstance(c, str) for c in claim)
            and 0 < len(claim[0]) <= _ACCOUNT_MAX and idempotency.valid_key(claim[1])
            and valid_sha256(claim[2]))


def _pending(raw: Any) -> Pending:
    """An entry as the API makes it, or WireError: every field the block stores is checked
    here, since one value its table refuses would fail the whole block, other writers' too
    (a kind, registrant or link the table cannot hold), and one entry over the size limit
    would be in an append-only log for good."""
    data, kind, sha256, registrant, links, once, received_at, claim = raw
    if not (isinstance(data, str) and kind in KINDS and valid_sha256(sha256)
            and valid_registrant(registrant) and isinstance(links, list)
            and isinstance(once, bool) and isinstance(received_at, str)
            and (not received_at or _STAMP.fullmatch(received_at))
            and (claim is None or _claim_shape(claim))):
        raise WireError("an entry of another shape")
    out: list[tuple[int | str, str]] = []
    for link in links:
        target, relation = link
        if not (((type(target) is int and 0 <= target < _SEQ_END) or valid_sha256(target))
                and relation in _RELATIONS):
            raise WireError("a link of another shape")
        out.append((target, relation))
    entry = base64.b64decode(data, validate=True)
    if len(entry) > MAX_ENTRY_BYTES:
        raise WireError("an entry over the size limit")
    return Pending(entry, kind, sha256, registrant, tuple(out), once, received_at,
                   None if claim is None else (claim[0], claim[1], claim[2]))


def _block_message(block: BlockRow) -> list[Any]:
    return ["block", block.header.to_json(), block.hash.hex(), block.checkpoint,
            block.block_note]


def _block(raw: list[Any]) -> BlockRow:
    _, header, hash_hex, checkpoint, block_note = raw
    if not (isinstance(hash_hex, str) and isinstance(checkpoint, str)
            and isinstance(block_note, str)):
        raise WireError("a block of another shape")
    return BlockRow(BlockHeader.from_json(header), bytes.fromhex(hash_hex), checkpoint,
                    block_note)


def _outcome(o: Receipt | CopyledgerError) -> list[Any]:
    if isinstance(o, Receipt):
        return ["receipt", o.seq, o.leaf_hash.hex(), o.block_height, o.tree_size, o.root.hex(),
                [h.hex() for h in o.proof], o.checkpoint]
    if isinstance(o, AlreadyRegistered):
        return ["earlier", o.seq]
    d = o.detail
    template, values = (d.template, d.values) if isinstance(d, Said) else (None, {})
    return ["error", type(o).__name__, str(d), o.internal, template, values]


def _decode(raw: Any) -> Receipt | CopyledgerError:
    if raw[0] == "receipt":
        _, seq, leaf, height, size, root, proof, checkpoint = raw
        if not (isinstance(seq, int) and isinstance(height, int) and isinstance(size, int)
                and isinstance(checkpoint, str) and isinstance(proof, list)):
            raise WireError("a receipt of another shape")
        return Receipt(seq, bytes.fromhex(leaf), height, size, bytes.fromhex(root),
                       [bytes.fromhex(h) for h in proof], checkpoint)
    if raw[0] == "earlier":
        _, seq = raw
        if not isinstance(seq, int):
            raise WireError("an earlier registration of another shape")
        return AlreadyRegistered(seq)
    if raw[0] != "error":
        raise WireError(f"an outcome {raw[0]!r}")
    _, name, detail, internal, template, values = raw
    cls = getattr(errors, str(name), None)
    if not (isinstance(cls, type) and issubclass(cls, CopyledgerError)):
        cls = Unavailable
    if isinstance(template, str) and isinstance(values, dict):
        with contextlib.suppress(KeyError, IndexError, ValueError):
            detail = Said(template, **values)  # still translatable in this process
    return cls(str(detail) if not isinstance(detail, Said) else detail, internal=str(internal))


def _coalesce(q: queue.Queue[_T | None], most: int = FRAME_ITEMS,
              weight: Callable[[_T], int] = lambda _: 1) -> list[_T] | None:
    """Wait for an item, then take what queued up meanwhile, up to a total `weight` of `most`
    (the rest waits for the next frame, so a legal frame never nears MAX_FRAME): one frame for
    them all. None (stop) once the queue's None is reached; it is left for the next call."""
    first = q.get()
    if first is None:
        return None
    batch, total = [first], weight(first)
    while total < most:
        try:
            item = q.get_nowait()
        except queue.Empty:
            return batch
        if item is None:
            q.put(None)
            return batch
        batch.append(item)
        total += weight(item)
    return batch


def _request(raw: Any) -> tuple[int, list[Pending]]:
    """An "entries" message (to the sequencer)."""
    try:
        kind, rid, pendings = raw
        if (kind != "entries" or not isinstance(rid, int) or not isinstance(pendings, list)
                or not pendings):  # (an API process never hands over none: nothing answers it)
            raise WireError("a message of another shape")
        return rid, [_pending(p) for p in pendings]
    except (ValueError, TypeError) as e:  # unpacking, hex, base64: all the peer's doing
        raise WireError(str(e)) from None


def _answer_or_block(raw: Any) -> BlockRow | tuple[int, list[Receipt | CopyledgerError]]:
    """A "block" or "answer" message (from the sequencer)."""
    try:
        if raw[0] == "block":
            return _block(raw)
        kind, rid, outcomes = raw
        if kind != "answer" or not isinstance(rid, int) or not isinstance(outcomes, list):
            raise WireError("a message of another shape")
        return rid, [_decode(o) for o in outcomes]
    except (ValueError, TypeError, IndexError, KeyError, CopyledgerError) as e:
        raise WireError(str(e)) from None


def _encode(fut: Future[Receipt]) -> list[Any]:
    e = fut.exception()
    if e is None:
        return _outcome(fut.result())
    if isinstance(e, CopyledgerError):
        return _outcome(e)
    return _outcome(Unavailable("the sequencer failed", internal=f"{type(e).__name__}: {e}"))


def _entries(bundle: Bundle) -> int:
    return sum(len(pendings) for _, pendings in bundle)


def _frames(requests: list[Request], most: int = FRAME_ENTRIES) -> list[list[Request]]:
    """The requests in frames of at most `most` entries each (a request is never split; one
    has at most `MAX_BATCH` entries, fewer than `most`), in order."""
    frames: list[list[Request]] = []
    size = 0
    for r in requests:
        if not frames or (frames[-1] and size + len(r[1]) > most):
            frames.append([])
            size = 0
        frames[-1].append(r)
        size += len(r[1])
    return frames


class _Server:
    """The sequencer's side: takes entries from every connected process and sends back each
    sealed block and the answers, coalesced into one frame per wake-up."""

    def __init__(self, sequencer: Sequencer, path: Path,
                 network: Network | None = None) -> None:
        self.sequencer = sequencer
        self.path = path
        self._conns: list[_Conn] = []
        self._lock = threading.Lock()
        self._tcp: socket.socket | None = None
        if network is not None:  # first: a port in use fails before the socket file is taken
            self._tcp = _listen_tcp(network.listen)
        try:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # a dead sequencer's socket: we hold the lock, so it is stale
            self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._listener.bind(str(path))
            self._inode = path.stat().st_ino  # which file at `path` is this server's
            os.chmod(path, 0o600)
            self._listener.listen(64)
        except BaseException:
            if self._tcp is not None:
                self._tcp.close()  # else the port stays bound in this process
            raise
        self._closed = False
        self._told = Throttle(MISMATCH_LOG_S)  # by the peer's version
        threading.Thread(target=self._accept, args=(self._listener, _Channel),
                         name="handoff-accept", daemon=True).start()
        if network is not None:
            threading.Thread(target=self._accept, args=(self._tcp, _Handshakes(network.secret)),
                             name="handoff-accept-tcp", daemon=True).start()

    def _accept(self, listener: socket.socket,
                channel: Callable[[socket.socket], _Channel]) -> None:
        while not self._closed:
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            conn = _Conn(sock, channel, self.sequencer, self._join, self._drop,
                         self._tell_mismatch)
            with self._lock:
                self._conns.append(conn)  # (closed with the server, greeted or not)
            conn.start()

    def _join(self, conn: _Conn) -> None:
        """A process said hello in this version: answer it, then send it every block."""
        conn.out.put(["hello", WIRE_VERSION])
        with self._lock:
            conn.greeted = True
        # The newest block first: a process that connects late (restarted, or following a
        # new sequencer) must not serve a tree older than one it may be asked about. Read
        # once `greeted` is set, so no block sealed meanwhile is missed; the client keeps
        # whichever is newer if the two cross.
        head = self.sequencer.state.last
        if head is not None:
            conn.out.put(_block_message(head))

    def _tell_mismatch(self, theirs: int | None) -> None:
        """The log line for a process of another version: once a minute a version, as such a
        process asks again every second."""
        if self._told.due(theirs or 0) is not None:
            log.error("%s", _mismatch(theirs, WIRE_VERSION, sequencer=False))

    def _drop(self, conn: _Conn) -> None:
        with self._lock:
            if conn in self._conns:
                self._conns.remove(conn)

    def sealed(self, block: BlockRow) -> None:
        """Called by the sequencer thread after each commit, before it answers anyone."""
        with self._lock:
            conns = [c for c in self._conns if c.greeted]
        message = _block_message(block)
        for c in conns:
            c.out.put(message)

    def close(self, *, remove: bool = True) -> None:
        """Stop serving; with `remove`, remove the socket file if it is still this server's
        (looked at while the listener still holds its inode, which a file bound after the
        close could be given again). A sequencer that stepped down (D109) removes nothing:
        its successor may have bound its own at the same path, and clears a stale one."""
        self._closed = True
        if self._tcp is not None:
            with contextlib.suppress(OSError):
                self._tcp.shutdown(socket.SHUT_RDWR)
            self._tcp.close()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        ours = False
        with contextlib.suppress(FileNotFoundError):
            ours = remove and self.path.stat().st_ino == self._inode
        self._listener.close()
        if ours:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            c.close()


class _Conn:
    """One API process's connection to the sequencer."""

    def __init__(self, sock: socket.socket, channel: Callable[[socket.socket], _Channel],
                 sequencer: Sequencer,
                 joined: Callable[[_Conn], None], dropped: Callable[[_Conn], None],
                 mismatched: Callable[[int | None], None]) -> None:
        self.sock = sock
        self._channel = channel  # the framing, after any handshake (D110)
        self.chan: _Channel | None = None
        self.sequencer = sequencer
        self.joined = joined
        self.dropped = dropped
        self.mismatched = mismatched
        self.greeted = False  # said hello in this version: sent the blocks from then on
        self.out: queue.Queue[Message | None] = queue.Queue()

    def start(self) -> None:
        threading.Thread(target=self._read, name="handoff-read", daemon=True).start()

    def _read(self) -> None:
        try:
            # (A handshake bounds its own time and leaves the socket blocking, HANDSHAKE_S.)
            self.chan = chan = self._channel(self.sock)
            threading.Thread(target=self._write, args=(chan,), name="handoff-write",
                             daemon=True).start()
            first, older = True, False
            while True:
                for message in chan.recv():
                    if first:  # a hello in this version, or nothing of it is taken
                        first = False
                        theirs = _hello_version(message)
                        if theirs == WIRE_VERSION:
                            self.joined(self)
                            continue
                        self.mismatched(theirs)
                        if theirs is not None:
                            raise WireError("another hand-over version")
                        older = True  # from before D98: kept, so it does not reconnect at once
                    if older:
                        self._refuse_older(message)
                    else:
                        rid, pendings = _request(message)
                        self._take(rid, pendings)
        except WireError as e:
            if self.chan is None and (held := _refusals.due(str(e))) is not None:
                # (after it, a peer of another version: logged as such)
                log.warning("refused a hand-over connection: %s", e,
                            extra={"held_back": held})
        except (OSError, ConnectionError):
            pass
        except Exception:  # a bug, not a peer's doing: say so, and drop only this connection
            log.exception("the handoff connection failed")
        self.close()
        if self.chan is None:
            self.sock.close()  # never handed to a channel: nothing else will close it

    def _refuse_older(self, message: Any) -> None:
        """Answer a process from before D98 in its own format: each entry refused, nothing
        recorded, saying why (a dropped connection would have it reconnect at once, and tell
        its writers their entries "may or may not be recorded")."""
        if not (isinstance(message, list) and len(message) == 3 and message[0] == "entries"
                and isinstance(message[1], int) and isinstance(message[2], list)):
            raise WireError("a message of another shape")
        why = Unavailable(_mismatch(WIRE_VERSION, 0, sequencer=True))
        self.out.put(["answer", message[1], [_outcome(why)] * len(message[2])])

    def _take(self, rid: int, pendings: list[Pending]) -> None:
        try:
            futures = self.sequencer.submit_many(pendings)
        except CopyledgerError as e:  # the queue is full, or sequencing stopped: nothing queued
            self.out.put(["answer", rid, [_outcome(e)] * len(pendings)])
            return
        left = [len(futures)]
        guard = threading.Lock()

        def one_done(_: Future[Receipt]) -> None:
            with guard:
                left[0] -= 1
                if left[0]:
                    return
            self.out.put(["answer", rid, [_encode(f) for f in futures]])

        for f in futures:
            f.add_done_callback(one_done)

    def _write(self, chan: _Channel) -> None:
        while (batch := _coalesce(self.out)) is not None:
            try:
                chan.send(batch)
            except Exception as e:  # a writer that stops must take its connection with it
                if not isinstance(e, OSError):
                    log.exception("answering a process failed")
                self.close()
                return

    def close(self) -> None:
        self.out.put(None)
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.dropped(self)


class _Waiter:
    """What a request handed over is waiting on: asyncio futures in a loop, or plain ones."""

    __slots__ = ("futures", "loop")

    def __init__(self, futures: list[Any], loop: asyncio.AbstractEventLoop | None) -> None:
        self.futures = futures
        self.loop = loop


def _settle_all(pairs: list[tuple[Any, Receipt | CopyledgerError]]) -> None:
    for fut, got in pairs:
        if fut.done():
            continue
        if isinstance(got, Receipt):
            fut.set_result(got)
        else:
            fut.set_exception(got)


class _Client:
    """An API process's side: hands entries to the sequencer and keeps a copy of the last
    sealed block for reads."""

    def __init__(self, path: Path, state: LogState, network: Network | None = None,
                 locate: Callable[[], str | None] = lambda: None) -> None:
        """`locate` names the sequencer's published address, for a sequencer on another host
        (D110): asked, with `network`, whenever the Unix socket has nobody listening."""
        self.path = path
        self.state = state
        self.network = network
        self.locate = locate
        self._sock: socket.socket | None = None
        self._waiting: dict[int, _Waiter] = {}
        self._in_flight = 0
        self._next = 0
        self._lock = threading.Lock()
        self._out: queue.Queue[Bundle | None] = queue.Queue()
        # Requests handed over during the current turn of an event loop, by (connection's
        # queue, loop); flushed to the sender as one bundle at the end of that turn. Only that
        # loop's thread touches its own list.
        self._turn: dict[tuple[int, asyncio.AbstractEventLoop], Bundle] = {}
        self._closed = False
        self._refused: Said | None = None  # why the last sequencer was refused (D98)
        self._silent = 0  # hellos in a row the sequencer cut off without answering
        self._connected = threading.Event()
        # Connected, and a block heard on this connection (the sequencer sends its newest
        # first): till then, and once cut off, what `state` holds may be far behind (D128).
        self.joined = False
        self.wakeups = 0  # event-loop wake-ups asked for to answer writers (D86)
        threading.Thread(target=self._run, name="handoff-client", daemon=True).start()

    # -- handing over -------------------------------------------------------------------------

    def hand(self, pendings: Sequence[Pending], waiter: _Waiter) -> None:
        with self._lock:
            if self._sock is None or self._closed:
                raise Unavailable(self._refused or _NO_SEQUENCER)
            if self._in_flight + len(pendings) > MAX_IN_FLIGHT:
                raise Unavailable("the sequencer's queue is full; retry shortly")
            rid = self._next
            self._next += 1
            self._waiting[rid] = waiter
            self._in_flight += len(pendings)
            out = self._out
        request = (rid, list(pendings))
        if waiter.loop is None:
            out.put([request])
            return
        # One wake-up of the sender thread per turn of the loop, not per request (D69): the
        # requests of every connection the loop served this turn go out in one bundle.
        turn = (id(out), waiter.loop)
        bundle = self._turn.get(turn)
        if bundle is None:
            bundle = self._turn[turn] = []
            waiter.loop.call_soon(self._flush, turn, out)
        bundle.append(request)

    def _flush(self, turn: tuple[int, asyncio.AbstractEventLoop],
               out: queue.Queue[Bundle | None]) -> None:
        """The end of a loop's turn: its requests to the sender, at once (a dead connection's
        queue drops them: `_lost` has failed their waiters already)."""
        out.put(self._turn.pop(turn))

    # -- the connection -----------------------------------------------------------------------

    def _connect(self) -> _Channel | None:
        """A channel to the sequencer: on this host's Unix socket, else (D110) at the address
        it published, once it has proved it holds the secret; None if neither answers."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(self.path))
            return _Channel(sock)
        except OSError:
            sock.close()
        if self.network is None:
            return None
        try:
            address = self.locate()
        except Exception as e:  # the database is down or restarting: nobody to reach yet
            log.debug("reading the sequencer's address failed: %s", e)
            return None
        if address is None:
            return None
        try:
            sock = socket.create_connection(parse_address(address), CONNECT_S)
        except (OSError, ValueError, CopyledgerError):  # (UnicodeError: a malformed name)
            return None
        try:
            _tcp_ready(sock)
            return auth_client(sock, self.network.secret)
        except WireError as e:
            log.error("refused the sequencer at %s: %s", address, e)
            sock.close()
            raise
        except (OSError, ConnectionError):
            sock.close()
            return None
        except BaseException:
            sock.close()
            raise

    def _run(self) -> None:
        while not self._closed:
            try:
                chan = self._connect()
            except WireError:  # a peer without the secret: not one to ask again at once
                self._refused = _NOT_TRUSTED
                time.sleep(REFUSED_RETRY_S)
                continue
            except (OSError, ConnectionError):
                chan = None
            except Exception:  # a bug: this loop must live on, or the process never writes
                log.exception("connecting to the sequencer failed")
                time.sleep(REFUSED_RETRY_S)
                continue
            if chan is None:
                self._refused, self._silent = None, 0  # nobody listens: it is changing hands
                time.sleep(ELECT_EVERY_S / 2)
                continue
            sock = chan.sock
            try:
                rest = self._greet(chan)
            except (OSError, ConnectionError, WireError):
                sock.close()
                time.sleep(ELECT_EVERY_S / 2 if self._refused is None else REFUSED_RETRY_S)
                continue
            # A queue per connection: what a dead connection's writer left behind (requests
            # already answered as lost, and its stop marker) never reaches the next one.
            out: queue.Queue[Bundle | None] = queue.Queue()
            with self._lock:
                if self._closed:  # closed while greeting: nothing more to do
                    sock.close()
                    return
                self._sock = sock
                self._out = out
            self._connected.set()
            writer = threading.Thread(target=self._write, args=(chan, out), name="handoff-send",
                                      daemon=True)
            writer.start()
            try:
                self._deliver(rest)
                while True:
                    self._deliver(chan.recv())
            except (OSError, ConnectionError, WireError):
                pass
            except Exception:
                log.exception("the handoff connection failed")
            self.joined = False
            self._connected.clear()
            self._lost(sock)
            out.put(None)
            writer.join()

    def _greet(self, chan: _Channel) -> list[Message]:
        """Say which version this process speaks and read the sequencer's: writes are taken
        only once both agree. Returns the rest of the sequencer's first frame."""
        sock = chan.sock
        sock.settimeout(GREETING_S)  # a peer that says nothing is not one to wait on
        chan.send([["hello", WIRE_VERSION]])
        try:
            first = chan.recv()
        except ConnectionError:  # cut off unanswered: a sequencer from before D98 does that
            self._silent += 1
            if self._silent >= SILENT_GREETINGS:
                self._refuse(None)
            raise
        sock.settimeout(None)
        theirs = _hello_version(first[0]) if first else None
        if theirs != WIRE_VERSION:
            self._refuse(theirs)
            raise WireError("another hand-over version")
        self._refused, self._silent = None, 0
        return first[1:]

    def _refuse(self, theirs: int | None) -> None:
        """The sequencer speaks another version: say so once, and refuse writes saying it."""
        why = _mismatch(theirs, WIRE_VERSION, sequencer=True)
        if self._refused is None:
            log.error("%s", why)
        self._refused = why

    @staticmethod
    def _write(chan: _Channel, out: queue.Queue[Bundle | None]) -> None:
        while (bundles := _coalesce(out, FRAME_ENTRIES, _entries)) is not None:
            try:
                for frame in _frames([r for bundle in bundles for r in bundle]):
                    chan.send([_entries_message(rid, pendings) for rid, pendings in frame])
            except Exception as e:  # a writer that stops must take its connection with it
                if not isinstance(e, OSError):
                    log.exception("sending to the sequencer failed")
                with contextlib.suppress(OSError):
                    chan.sock.shutdown(socket.SHUT_RDWR)  # the reader sees it, fails the rest
                return

    def _deliver(self, messages: list[Message]) -> None:
        parsed = [_answer_or_block(m) for m in messages]  # all parsed before any is applied
        with self._lock:  # and every answer's length checked: a waiter taken is answered
            if any(not isinstance(got, BlockRow) and (w := self._waiting.get(got[0])) is not None
                   and len(w.futures) != len(got[1]) for got in parsed):
                raise WireError("an answer of another length than its request")
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Any, Receipt | CopyledgerError]]]
        by_loop = {}
        for got in parsed:
            if isinstance(got, BlockRow):
                if got.header.tree_size >= self.state.size:  # never step back
                    self.state = LogState(got.header.tree_size, [], got)
                self.joined = True
                continue
            rid, outcomes = got
            with self._lock:
                waiter = self._waiting.pop(rid, None)
                if waiter is not None:
                    self._in_flight -= len(outcomes)
            if waiter is None:
                continue
            self._answer(waiter, outcomes, by_loop)
        self.wakeups += len(by_loop)
        for loop, pairs in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop has closed
                loop.call_soon_threadsafe(_settle_all, pairs)

    @staticmethod
    def _answer(waiter: _Waiter, got: list[Receipt | CopyledgerError],
                by_loop: dict[asyncio.AbstractEventLoop,
                              list[tuple[Any, Receipt | CopyledgerError]]]) -> None:
        pairs = list(zip(waiter.futures, got, strict=True))
        if waiter.loop is not None:
            by_loop.setdefault(waiter.loop, []).extend(pairs)
        else:
            _settle_all(pairs)

    def _lost(self, sock: socket.socket) -> None:
        """The sequencer went away: every entry it had not answered may or may not be in."""
        with self._lock:
            self._sock = None
            waiting, self._waiting = self._waiting, {}
            self._in_flight = 0
        sock.close()
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Any, Receipt | CopyledgerError]]]
        by_loop = {}
        for waiter in waiting.values():
            self._answer(waiter, [Uncertain(_LOST)] * len(waiter.futures), by_loop)
        for loop, pairs in by_loop.items():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle_all, pairs)
        if waiting:
            log.warning("lost the sequencer with %d requests unanswered", len(waiting))

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def close(self) -> None:
        self._closed = True
        with self._lock:
            sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class Handoff:
    """What `Node.sequencer` is in a process of `serve --workers N`: the local sequencer while
    this process holds the log's lock, otherwise a hand-over to the process that does. It
    offers the Sequencer's surface the operations use (`state`, `submit*`)."""

    def __init__(self, local: Sequencer, data_dir: Path,
                 prepare: Callable[[], None] = lambda: None,
                 on_lead: Callable[[], None] = lambda: None,
                 step_down: Callable[[], None] = lambda: os.kill(os.getpid(), signal.SIGTERM),
                 network: Network | None = None) -> None:
        """`prepare` runs once the lock is taken, before the sequencer starts; `on_lead` once
        it has started; `step_down` once the lock is found taken by another process while
        this one leads (by default the process ends itself, gracefully; uvicorn's supervisor
        starts a new one, which follows). With `network`, the sequencer also takes entries
        over TCP from other hosts, and a process follows one on another host (D110)."""
        self.local = local
        self.network = network
        self.step_down = step_down
        self.alone = False  # the only process of its data directory (a single `serve`)
        self.barred = False  # its secret is not the hosts' (D113): it never sequences
        self._barred_for_key = False  # barred for its log key instead (D116)
        self._stepped_down = False
        local.on_lock_lost = self._lock_lost
        self.prepare = prepare
        self.path = socket_path(data_dir)
        self.pid_path = data_dir / PID_NAME
        self._pid_file: int | None = None  # held open while leading: its inode stays ours
        self.on_lead = on_lead
        self.leading = False
        self._client: _Client | None = None
        self._count_lock = threading.Lock()
        self._followed_wakeups = 0  # those of clients dropped at a takeover: a running total
        self._server: _Server | None = None
        self._stop = threading.Event()
        self._elector: threading.Thread | None = None

    @property
    def stepped_down(self) -> bool:
        """Whether this process led and found the log's lock taken by another (`step_down`
        was called)."""
        return self._stepped_down

    @property
    def current(self) -> bool:
        """Whether `state` is the log's head but for a moment: this process sequences (and
        has not stepped down), or follows on a hand-over that has brought it a block. A
        process not yet joined, or cut off from the sequencer, may be far behind (D128)."""
        if self.leading:
            return not self._stepped_down
        client = self._client
        return client is not None and client.joined

    @property
    def state(self) -> LogState:
        client = self._client  # (read once: a takeover drops it under a reader)
        if self.leading or client is None:
            return self.local.state
        return client.state

    @property
    def spent(self) -> dict[str, float]:
        """Seconds this process's sequencer has spent sealing, by phase (zero while following)."""
        return self.local.spent

    @property
    def upkeep_spent(self) -> dict[str, float]:
        """Seconds this process's sequencer has spent in the runs' upkeep (not growing while
        it follows: only the sequencing process merges)."""
        return self.local.upkeep_spent

    @property
    def upkeep_rows(self) -> dict[str, int]:
        """Rows this process's runs' upkeep copied and deleted while it sequenced."""
        return self.local.upkeep_rows

    @property
    def content_runs_listed(self) -> int:
        """The content-hash runs listed, as this process last read them; 0 unless it
        sequences (what it read when it did grows stale)."""
        if not self.leading or self._stepped_down:
            return 0
        return self.local.content_runs_listed

    @property
    def clock_refused(self) -> int:
        """Entries this process's sequencer refused for a clock too far ahead (D117)."""
        return self.local.clock_refused

    @property
    def clock_ahead_blocks(self) -> int:
        """Blocks this process's sequencer sealed at a `received_at` ahead of its clock."""
        return self.local.clock_ahead_blocks

    @property
    def content_filter_ready(self) -> bool:
        """Whether this process sequences (not stepping down) and its filter of the log's
        content hashes is ready."""
        return self.leading and not self._stepped_down and self.local.content_filter_ready

    @property
    def wakeups(self) -> int:
        """Event-loop wake-ups this process asked for to answer its writers: from sealing here
        and from answers handed back."""
        with self._count_lock:
            client = self._client
            return (self.local.wakeups + self._followed_wakeups
                    + (client.wakeups if client is not None else 0))

    def start(self) -> None:
        """Lead if the lock is free, else follow; either way keep trying for the lock. A
        database that cannot be reached (restarting) is no reason to fail: the process follows
        and its elector takes the lock once it can. Failing here would fail the worker's
        startup, and uvicorn's supervisor then stops every process (a worker it starts in
        place of one that stepped down, D109, during an outage; D111)."""
        try:
            led = self._try_lead()
        except self.local.store.database_errors as e:
            log.warning("the database cannot be reached yet; following until it can be: %s",
                        _db_reason(e))
            led = False
        if not led:
            self._client = _Client(self.path, self.local.state, self.network,
                                   self.local.store.published_sequencer_address)
            self._elector = threading.Thread(target=self._elect, name="handoff-elect",
                                             daemon=True)
            self._elector.start()
            self._client.wait_connected(5.0)

    def _try_lead(self) -> bool:
        if self.leading:  # (taken already: never a second server or sequencer thread)
            return True
        store = self.local.store
        try:
            store.acquire_sequencer_lock()
        except Conflict:
            return False
        try:
            self.prepare()
            # It refuses entries until the start below.
            server = _Server(self.local, self.path, self.network)
        except BaseException as e:
            store.release_sequencer_lock()
            if not isinstance(e, WrongLogKey):
                raise
            self.barred = self._barred_for_key = True  # another registry's keys (D116)
            log.critical("this process will not sequence the log: %s", e)
            return False
        try:
            if self.network is not None:  # before the sequencer's thread uses the lock's session
                store.publish_sequencer_address(self.network.advertise,
                                                self.network.secret_check)
            self.local.start()  # the lock is ours already; reloads the tree from the database
        except BaseException as e:
            server.close()
            store.release_sequencer_lock()
            if not isinstance(e, WrongSecret):
                raise
            self.barred = True  # no more attempts while the check stays another's (D113)
            log.critical("this process will not sequence the log: %s", e)
            return False
        self._server = server
        self.leading = True
        # The head just reloaded, to the processes that greeted before the reload (each was
        # sent the head this node loaded at its start, which may lack the last block the dead
        # sequencer committed) and any sealed before `_server` was set, which `sealed` did
        # not announce: a follower keeps the newer of two heads, so none steps back.
        if (head := self.local.state.last) is not None:
            server.sealed(head)
        # From here on this process sequences, whatever fails next: a failure is logged, never
        # raised to the elector, which would take the lock (ours) again and start a second
        # server and sequencer thread on the same queue.
        try:
            # A file of its own (a new inode), held open so that no later file can get its
            # inode: on stop, the file at the path is removed only if it is still this one
            # (D120).
            write_public(self.pid_path, f"{os.getpid()}\n")
            self._pid_file = os.open(self.pid_path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            log.exception("writing the sequencer's pid file failed; this process sequences "
                          "without it")
        log.info("this process is the sequencer", extra={"pid": os.getpid(),
                                                         "tree_size": self.local.state.size})
        try:
            self.on_lead()
        except Exception:
            log.exception("starting the sequencing process's helpers failed (external "
                          "time-stamps, witnesses); it sequences without them")
        return True

    def _lock_lost(self) -> None:
        """The sequencer's thread found the log's lock taken by another process: this one's
        session had ended under it (D109), and a process that followed took over. This process
        stops leading the only way that leaves nothing half-done: it ends, once. Its
        followers' hand-overs drop with it and reach the new sequencer."""
        if self._stepped_down:
            return
        self._stepped_down = True
        log.critical("another process took the log's lock: this process stops",
                     extra={"pid": os.getpid()})
        self.step_down()

    def _elect(self) -> None:
        failures = Throttle(10.0)  # every 50 ms while the database is down: said once in 10 s
        recheck = 0.0
        while not self._stop.wait(ELECT_EVERY_S):
            try:
                if self.barred:  # (D113) not the lock: a read now and then, until ours may lead
                    if time.monotonic() < recheck:
                        continue
                    recheck = time.monotonic() + BARRED_RECHECK_S
                    if self.network is not None and self.local.store.handoff_secret_check() \
                            not in (None, self.network.secret_check):
                        continue
                    for_key, self.barred = self._barred_for_key, False
                    self._barred_for_key = False  # (D116: tried again now and then; the try says)
                    if not for_key:
                        log.warning("the hosts' hand-over secret is no longer another's: this "
                                    "process may sequence the log again")
                if self._try_lead():
                    break
            except Exception as e:
                if (held := failures.due((type(e), _db_reason(e)))) is not None:
                    log.exception("taking over the sequencer failed; trying again",
                                  extra={"held_back": held})
        else:
            return
        self._drop_client()

    def _drop_client(self) -> None:
        """Close the hand-over once this process leads, keeping its wake-ups in the total (a
        counter an operator reads must not go back, D91)."""
        with self._count_lock:
            client, self._client = self._client, None
            if client is not None:
                self._followed_wakeups += client.wakeups
        if client is not None:
            client.close()

    def sealed(self, header: BlockHeader) -> None:
        """A Node listener: tell every other process of the block just sealed here."""
        if self._server is not None and self.local.state.last is not None \
                and self.local.state.last.header == header:
            self._server.sealed(self.local.state.last)

    def stop(self) -> None:
        self._stop.set()
        if self._elector is not None:
            self._elector.join(5.0)
        if self._client is not None:
            self._client.close()
        if self.leading:
            # One that stepped down leaves the socket and pid file to its successor (D109),
            # unless it is its data directory's only process (D112).
            leave = self._stepped_down and not self.alone
            if self._server is not None:
                self._server.close(remove=not leave)
            if self._pid_file is not None:
                # Not a successor's: two single `serve`s may share a data directory. (A
                # successor's rename between the two calls is a window of microseconds.)
                with contextlib.suppress(FileNotFoundError):
                    if not leave and os.path.samestat(self.pid_path.stat(),
                                                      os.fstat(self._pid_file)):
                        self.pid_path.unlink()
                os.close(self._pid_file)
                self._pid_file = None
            self.local.stop()
            self.leading = False

    # -- the Sequencer's writers' side ----------------------------------------------------------

    def _route(self) -> _Client | None:
        if self.leading:
            return None
        client = self._client
        if client is None:  # between losing and taking over: nobody sequences here yet
            if self.leading:
                return None
            raise Unavailable(_NO_SEQUENCER)
        return client

    def submit(self, pending: Pending) -> Future[Receipt]:
        client = self._route()
        if client is None:
            return self.local.submit(pending)
        fut: Future[Receipt] = Future()
        client.hand([pending], _Waiter([fut], None))
        return fut

    def submit_async(self, pending: Pending) -> asyncio.Future[Receipt]:
        client = self._route()
        if client is None:
            return self.local.submit_async(pending)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Receipt] = loop.create_future()
        client.hand([pending], _Waiter([fut], loop))
        return fut

    def submit_many_async(self, pendings: Sequence[Pending]) -> list[asyncio.Future[Receipt]]:
        client = self._route()
        if client is None:
            return self.local.submit_many_async(pendings)
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Receipt]] = [loop.create_future() for _ in pendings]
        if futures:
            client.hand(pendings, _Waiter(list(futures), loop))
        return futures
