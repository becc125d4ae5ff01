"""The audit: recompute everything from the rows, trust nothing stored.

Every leaf hash from its entry's bytes, every stored Merkle node from the leaves, every block
header from the tree, every link of the block chain, every checkpoint and block signature
under the log's verifier key, every RFC 3161 token, every `entry_links` row from the entries,
every chain of title (each transfer made by the holder of its moment, each acceptance by the
recipient of a pending offer, so a double assignment fails), and every kept witness
cosignature (over a checkpoint the log signed at that size, under the witness's key). A row
edited behind the triggers' back shows up here, named by its sequence number or block height.

The checks of one block or one entry need nothing from the others, so they run in worker
processes (`workers`), a chunk at a time. Each worker reads its own range of entries (aligned
to a power of two) and checks everything the range shows alone: the entries, their leaves,
every stored node inside it, which block holds each, the batch and tree roots of the blocks
ending in it; this process only joins the ranges (a few subtree hashes each) and the links
and chains of title, in order (D85). An audit that ends well reports an `AuditState`; given back as
`since`, the next audit checks that the head it ended on is unchanged and then only what was
appended after it (D39).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import multiprocessing
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from copyledger.ledger import cosignature, merkle, note, sm2, sodium
from copyledger.ledger import entry as entry_mod
from copyledger.ledger.documents import (
    Acceptance,
    Entry,
    Transfer,
    Withdrawal,
    parse_entry,
    parse_logged_entry,
)
from copyledger.ledger.errors import CopyledgerError, IntegrityError, said
from copyledger.ledger.links import LINKED_KINDS, TRANSFER, Link, Target, links_of, resolve
from copyledger.ledger.note import GENESIS_PREV, BlockHeader, check_header, check_link
from copyledger.ledger.quick_entry import quick_logged
from copyledger.ledger.sm2_timestamp import TSA_LABEL as SM2_TSA_LABEL
from copyledger.ledger.store import (
    BlockRow,
    BlockTuple,
    EntryTuple,
    Store,
    block_of,
    make_engine,
)
from copyledger.ledger.title import TITLE_KINDS, Title

if TYPE_CHECKING:
    from copyledger.ledger.token_templates import TokenTemplates

BLOCK_CHUNK = 512
"""Blocks per unit of work handed to a worker."""

ENTRY_CHUNK = 16_384
"""Entries per unit of work: a range a worker reads and checks alone (a power of two, or the
largest one below it is used)."""


@dataclass(frozen=True)
class AuditState:
    """Where an audit that found nothing wrong ended: enough to resume from there.

    The frontier is the hashes of the maximal complete subtrees of the first `tree_size`
    entries (what the next entries are appended to); `nodes` and `links` count the stored
    rows the audit accounted for, so a row added or deleted before the head shows up.
    `sm2_first` is the first block the audits found an SM2 token on (None: none so far), so a
    resumed audit keeps the rule that every later block has one without reading it back from
    the table it protects (version 2, D187); a version 1 state does not say
    (`sm2_known` False), and the resumed audit reads it from the last block's token.
    """

    tree_size: int
    root: str
    height: int
    block_hash: str
    frontier: tuple[str, ...]
    nodes: int
    links: int
    sm2_first: int | None = None
    sm2_known: bool = True

    def to_dict(self) -> dict[str, Any]:
        d = {"version": 2, "tree_size": self.tree_size, "root": self.root,
             "height": self.height, "block_hash": self.block_hash,
             "frontier": list(self.frontier), "nodes": self.nodes, "links": self.links,
             "sm2_first": self.sm2_first}
        if not self.sm2_known:  # (resumed from a version 1 state and nothing sealed since)
            del d["sm2_first"]
            d["version"] = 1
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AuditState:
        """InvalidInput-free strict parse: CopyledgerError if anything is off."""
        want = {"version", "tree_size", "root", "height", "block_hash", "frontier", "nodes",
                "links"}
        version = d.get("version") if isinstance(d, dict) else None
        if type(version) is not int or version not in (1, 2) or set(d) != (
                want | {"sm2_first"} if version == 2 else want):
            raise CopyledgerError("not an audit state (version 1 or 2)")
        sm2_first = d.get("sm2_first")
        ints = [d[k] for k in ("tree_size", "height", "nodes", "links")]
        ints += [sm2_first] if sm2_first is not None else []
        hexes = [d["root"], d["block_hash"], *d["frontier"]] if isinstance(
            d["frontier"], list) else None
        if (not all(type(v) is int and 0 <= v < 2**63 for v in ints) or hexes is None
                or not all(isinstance(h, str) and len(h) == 64
                           and h == bytes.fromhex(h).hex() for h in hexes)
                or (sm2_first is not None and sm2_first > d["height"])):
            raise CopyledgerError("the audit state is malformed")
        return cls(d["tree_size"], d["root"], d["height"], d["block_hash"],
                   tuple(d["frontier"]), d["nodes"], d["links"], sm2_first, version == 2)


@dataclass
class AuditReport:
    ok: bool = True
    entries: int = 0
    blocks: int = 0
    nodes: int = 0
    tree_size: int = 0
    root: str = ""
    problem: str | None = None
    bad_seq: int | None = None
    bad_height: int | None = None
    checked: list[str] = field(default_factory=list)
    resumed_from: int | None = None
    """The tree size an incremental audit resumed from (None: everything was checked)."""
    state: AuditState | None = None
    """Where this audit ended, if it found nothing wrong."""

    def fail(self, problem: str, *, seq: int | None = None, height: int | None = None) -> None:
        if self.ok:
            self.ok, self.problem, self.bad_seq, self.bad_height = False, problem, seq, height


Progress = Callable[[int], None]


class _Fault(CopyledgerError):
    """A fault found by a check, with where it is."""

    def __init__(self, detail: str, *, seq: int | None = None, height: int | None = None):
        super().__init__(detail)
        self.seq, self.height = seq, height


class _Head(NamedTuple):
    """What the tree walk needs of a block (its notes and token are checked in a worker)."""

    height: int
    first_seq: int
    tree_size: int
    tree_root: bytes
    batch_root: bytes


def audit(
    store: Store,
    verifier_key: str | Sequence[str],
    progress: Progress | None = None,
    *,
    tsa_roots_pem: bytes | None = None,
    workers: int = 1,
    since: AuditState | None = None,
    witness_keys: Sequence[str] = (),
    sm2_tsa_roots_pem: bytes | None = None,
    sm2_tsa_retired: Sequence[tuple[str, str]] = (),
) -> AuditReport:
    """Audit the log (from `since` on, if given); stop at the first fault and name where it
    is. With the notary's TSA roots, also check that every block carries a valid RFC 3161
    token over its hash. `workers` > 1 checks blocks and entries in that many processes.
    `witness_keys` are the configured witnesses' vkeys: the report says how many kept
    cosignatures are by others (each is still checked under the key its row names).
    SM2 keys among the verifier keys (an SM-suite log, D40) must also have signed every
    checkpoint and block note; with `sm2_tsa_roots_pem`, every SM2/SM3 token kept (D51) is
    checked too, and every block after the first that has one must have one; none may be by a
    retired SM2 TSA certificate, `sm2_tsa_retired` (certificate SM3 hex, retired_at), after its
    retirement (D57)."""
    rep = AuditReport()
    keys = [verifier_key] if isinstance(verifier_key, str) else list(verifier_key)
    _verifiers(tuple(keys))  # every key parses, before anything is read
    try:
        with _pool(workers) as pool, _runs_beside(store, since) as full_runs:
            _run(store, keys, (tsa_roots_pem, sm2_tsa_roots_pem, tuple(sm2_tsa_retired)), pool,
                 since, progress, rep)
            if store.has_runs:
                _check_runs(store, rep, full_runs)
            _check_written(store)
            newest: dict[str, tuple[int, int]] = {}
            for cosigned in (_check_cosignatures(store, witness_keys, newest),
                             _check_fresh_cosignatures(store, newest)):
                if cosigned:
                    rep.checked.append(cosigned)
    except _Fault as e:
        rep.fail(e.detail, seq=e.seq, height=e.height)
    except IntegrityError as e:  # a row the store refuses to read (of another type)
        rep.fail(e.detail)
    if not rep.ok:
        rep.state = None
    return rep


@contextlib.contextmanager
def _runs_beside(store: Store, since: AuditState | None
                 ) -> Iterator[Future[tuple[str | None, int]] | None]:
    """A full audit's check of SQLite's content-hash runs (`Store.runs_whole_fault`), started
    in a thread beside the other checks (D143: tens of seconds at 10 M entries, which SQLite
    runs without the GIL); None for a resumed audit (its check of the new entries is a seek
    each, done after), where there are no runs, and for an in-memory database (a second
    connection would open another, empty one). If the audit stops first (another check's
    fault, an interrupt), the check is interrupted, and waited for."""
    if not store.has_runs or since is not None or _own_url(store) is None:
        yield None
        return
    stop = threading.Event()
    with ThreadPoolExecutor(1, thread_name_prefix="audit-runs") as beside:
        try:
            yield beside.submit(store.runs_whole_fault, stop)
        except BaseException:
            stop.set()
            raise


def _check_runs(store: Store, rep: AuditReport,
                whole: Future[tuple[str | None, int]] | None) -> None:
    """SQLite's content-hash runs (D142) list every entry audited once, under its own key:
    all of them, and every listed row, on a full audit (`whole`: the check started beside
    the others, whose snapshot may end before the audit's last block: the entries past it are
    checked one by one here); the new ones on a resumed one."""
    start = rep.resumed_from or 0
    if whole is not None and start == 0:
        fault, covered = whole.result()
        if fault is None:
            fault = store.runs_unlisted_fault(covered, rep.tree_size)
    else:
        fault = store.runs_fault(start, rep.tree_size)
    if fault is not None:
        raise _Fault(said("the content-hash index: {fault}", fault=fault))
    rep.checked.append(
        said("the content-hash index lists every entry once, under its own key") if start == 0
        else said("the content-hash index lists each of the {n} new entries once, under its "
                  "own key", n=rep.tree_size - start))


def _run(
    store: Store,
    keys: list[str],
    roots_pem: _Roots,
    pool: Executor | None,
    since: AuditState | None,
    progress: Progress | None,
    rep: AuditReport,
) -> None:
    start = _resume(store, since) if since is not None else None
    heads, sm2 = _check_blocks(store, keys, roots_pem, pool, start, rep)
    if not heads:
        if start is None:
            rep.checked.append(said("no blocks yet"))
            rep.state = None
        else:
            st = start.state
            # (rows added since without a block show here too, as after new blocks)
            _check_rows_up_to(store, st.tree_size, st.height, st.nodes, st.links)
            rep.resumed_from = rep.entries = rep.tree_size = st.tree_size
            rep.root, rep.nodes, rep.state = st.root, st.nodes, st
            rep.checked.append(said("resumed from the audit of tree size {size} (block "
                                    "{height}): that block, its root and the stored frontier "
                                    "nodes are unchanged; nothing was appended since",
                                    size=st.tree_size, height=st.height))
        return
    for h in heads:
        if h.tree_size == 0 and h.tree_root != merkle.EMPTY_ROOT:
            raise _Fault(said("block {height}: root of the empty tree is wrong",
                              height=h.height), height=h.height)
    _check_entries(store, pool, heads, start, progress, rep)
    if rep.state is not None:
        rep.state = replace(rep.state, sm2_first=sm2[0], sm2_known=sm2[1])


# -- Resuming -------------------------------------------------------------------------------


@dataclass
class _Start:
    state: AuditState
    block: BlockRow


def _resume(store: Store, st: AuditState) -> _Start:
    """The head the last audit ended on must be exactly as it was: its block's hash, tree size
    and root, and the stored frontier nodes the next entries hang from."""
    try:
        block = store.get_block(st.height)
    except CopyledgerError:
        raise _Fault(said("block {height}, where the last audit ended, is gone", height=st.height),
                     height=st.height) from None
    h = block.header
    if (block.hash.hex(), h.tree_size, h.tree_root.hex()) != (st.block_hash, st.tree_size,
                                                              st.root):
        raise _Fault(said("block {height} differs from the one the last audit ended on (tree size "
                          "{tree_size}, root {root})",
                          height=st.height, tree_size=st.tree_size, root=st.root), height=st.height)
    ids = merkle.frontier_ids(st.tree_size)
    try:
        stored = store.read_hashes(ids, cached=False)
    except CopyledgerError:
        stored = []
    if [x.hex() for x in stored] != list(st.frontier):
        raise _Fault(said("the stored Merkle nodes of the first {tree_size} entries changed since "
                          "the last audit",
                          tree_size=st.tree_size))
    return _Start(st, block)


# -- Blocks ---------------------------------------------------------------------------------


_Roots = tuple[bytes | None, bytes | None, tuple[tuple[str, str], ...]]
"""(the notary TSA's roots, its SM2 TSA's roots), PEM, None: those tokens are not checked;
then the retired SM2 TSA certificates (SM3 hex, retired_at)."""
_BlockJob = tuple[BlockTuple | None, list[BlockTuple],
                  list[tuple[bytes | None, bytes | None]], list[str], _Roots]
"""The block before (None: from the genesis), the blocks as read (`store.block_of`), their
tokens (notary, SM2), the verifier keys and the roots."""


class _Tokens:
    """One TSA's tokens (height order), handed out beside the blocks they stamp; a token
    naming no block is a fault."""

    def __init__(self, store: Store, tsa: str, start: int, check: bool) -> None:
        if check:
            for stray in store.stray_timestamps(tsa, start=start)[:1]:
                _stray_token(stray)
        self._it = store.iter_timestamps(tsa, start=start) if check else iter(())
        self._next = next(self._it, None)
        self.first: int | None = None  # the first height that had one

    def at(self, height: int) -> bytes | None:
        while self._next is not None and self._next[0] < height:
            _stray_token(self._next[0])
        if self._next is None or self._next[0] != height:
            return None
        token = self._next[1]
        self._next = next(self._it, None)
        self.first = height if self.first is None else self.first
        return token

    def finish(self, store: Store) -> None:
        """Past the last block the scan read: a token of a block sealed since (the server
        writing meanwhile: it commits with its block) is the next audit's; one whose block
        does not exist is a fault."""
        if self._next is not None and not store.has_block(self._next[0]):
            _stray_token(self._next[0])


def _check_blocks(
    store: Store,
    keys: list[str],
    roots_pem: _Roots,
    pool: Executor | None,
    start: _Start | None,
    rep: AuditReport,
) -> tuple[list[_Head], tuple[int | None, bool]]:
    """Check every block after the start (all, if None), in chunks: hash, link, notes, tokens.
    Also the first block with an SM2 token, as far as the audits know (None: none), and
    whether they know: an audit without the SM2 TSA roots reads no SM2 token, so it passes on
    what the last audit knew (D187)."""
    prev, since = (start.block, start.state) if start is not None else (None, None)
    first = 0 if prev is None else prev.header.height + 1
    tokens = _Tokens(store, "notary", first, roots_pem[0] is not None)
    sm2_tokens = _Tokens(store, SM2_TSA_LABEL, first, roots_pem[1] is not None)
    if since is not None and since.sm2_known and roots_pem[1] is not None:
        # Resumed: every block after the first with an SM2 token has one (the rule below),
        # from the first the audits found (D184, D187).
        sm2_tokens.first = since.sm2_first
    elif prev is not None and roots_pem[1] is not None:
        # Resumed from a version 1 state: if the block the last audit ended on has an SM2
        # token, so must every later one (D184). It had to, if any block before it had one,
        # or that audit would have failed.
        had = next(store.iter_timestamps(SM2_TSA_LABEL, start=prev.header.height, chunk=1),
                   None)
        if had is not None and had[0] == prev.header.height:
            sm2_tokens.first = prev.header.height
    heads: list[_Head] = []

    def chunks() -> Iterator[_BlockJob]:
        # The rows go to the workers as the driver's tuples (a block object is made there).
        last = _tuple_of(prev) if prev is not None else None
        for chunk in store.iter_block_tuples(start=first, chunk=BLOCK_CHUNK):
            toks: list[tuple[bytes | None, bytes | None]] = []
            for b in chunk:
                h = b[0]
                sm2_token = sm2_tokens.at(h)
                if sm2_token is None and sm2_tokens.first is not None:
                    raise _Fault(said("block {h} has no SM2 time-stamp token, though block "
                                      "{first} has one",
                                      h=h, first=sm2_tokens.first), height=h)
                toks.append((tokens.at(h), sm2_token))
                heads.append(_Head(h, b[4], b[6], b[7], b[3]))
            yield last, chunk, toks, keys, roots_pem
            last = chunk[-1]

    for _, fault in _ordered(pool, _check_block_chunk, chunks()):
        if fault is not None:
            raise _Fault(fault[1], height=fault[0])
    tokens.finish(store)
    sm2_tokens.finish(store)
    rep.blocks = len(heads) if prev is None else prev.header.height + 1 + len(heads)
    if heads:
        rep.checked.append(said("{n} block headers chain, and their signatures verify",
                                n=len(heads)))
        if roots_pem[0] is not None:
            rep.checked.append(said("{n} RFC 3161 tokens verify over their block hashes",
                                    n=len(heads)))
        if sm2_tokens.first is not None:
            n = heads[-1].height - max(sm2_tokens.first, heads[0].height) + 1
            rep.checked.append(said("{n} SM2/SM3 RFC 3161 tokens verify over their headers' SM3 "
                                    "(from block {first} on)", n=n, first=sm2_tokens.first))
    if roots_pem[1] is None:
        if not _verifiers(tuple(keys))[1]:  # not an SM-suite log: no SM2 token to find
            return heads, (None, True)
        # SM2 tokens not read: a start the audits found stands; "none so far" is not known
        # past the blocks read now (D195's review)
        if since is not None and since.sm2_known and since.sm2_first is not None:
            return heads, (since.sm2_first, True)
        return heads, (None, False)
    return heads, (sm2_tokens.first, True)


def _tuple_of(b: BlockRow) -> BlockTuple:
    """`b` as `store.iter_block_tuples` reads it (the inverse of `store.block_of`)."""
    h = b.header
    return (h.height, b.hash, h.prev_block_hash, h.batch_root, h.first_seq, h.count,
            h.tree_size, h.tree_root, h.sealed_at, b.checkpoint, b.block_note)


def _stray_token(height: int) -> None:
    raise _Fault(said("a time-stamp token names block {height}, which does not exist",
                      height=height),
                 height=height)


def _check_block_chunk(job: _BlockJob) -> tuple[int, str] | None:
    """The first fault among these blocks, as (height, problem): each block's stored hash,
    its link to the one before (or the genesis rules), its two signed notes and, with TSA
    roots, its time-stamp token. Runs in a worker."""
    prev_row, rows, tokens, keys, roots_pem = job
    prev = block_of(prev_row).header if prev_row is not None else None
    verifiers, sm2_verifiers = _verifiers(tuple(keys))
    signers = None if sm2_verifiers else _signers(verifiers)
    for b, (token, sm2_token) in zip(map(block_of, rows), tokens, strict=True):
        height = b.header.height
        try:
            if b.hash != b.header.hash():
                raise CopyledgerError(said("block {height}: stored hash != hash of header",
                                           height=height))
            if prev is None:
                if height != 0 or b.header.prev_block_hash != GENESIS_PREV:
                    raise CopyledgerError("the first block is not a genesis block")
                check_header(b.header)
            else:
                check_link(prev, b.header)
            _check_signatures(b, verifiers, sm2_verifiers, signers)
            if roots_pem[0] is not None:
                if token is None:
                    raise CopyledgerError(said("block {height} has no time-stamp token from the "
                                               "notary",
                                               height=height))
                _check_token(height, token, b.hash, roots_pem[0])
            if sm2_token is not None and roots_pem[1] is not None:
                _check_sm2_token(height, sm2_token, b.header, roots_pem[1], roots_pem[2])
        except CopyledgerError as e:
            return height, e.detail
        prev = b.header
    return None


_VERIFIERS: dict[tuple[str, ...], tuple[list[note.Verifier], list[sm2.Verifier]]] = {}


def _verifiers(keys: tuple[str, ...]) -> tuple[list[note.Verifier], list[sm2.Verifier]]:
    """Parsed verifier keys, Ed25519 and SM2 (D40), once per worker process."""
    if keys not in _VERIFIERS:
        _VERIFIERS[keys] = (
            [note.parse_verifier_key(k) for k in keys if not sm2.is_verifier_key(k)],
            [sm2.parse_verifier_key(k) for k in keys if sm2.is_verifier_key(k)])
    return _VERIFIERS[keys]


_TEMPLATES: dict[bytes, TokenTemplates] = {}


def _check_token(height: int, token: bytes, block_hash: bytes, roots_pem: bytes) -> None:
    """The token verifies over the block hash: alongside an earlier token of its kind (one
    signature and a DER walk), else in full, which then serves as the template of its kind."""
    from copyledger.ledger.timestamp import load_pem_certs, verify_token
    from copyledger.ledger.token_templates import TokenTemplates

    fast = _TEMPLATES.get(roots_pem)
    if fast is None:
        fast = _TEMPLATES[roots_pem] = TokenTemplates(load_pem_certs(roots_pem))
    if fast.check(token, block_hash):
        return
    try:
        info = verify_token(token, block_hash, roots_pem)
    except CopyledgerError as e:
        raise CopyledgerError(said("block {height}: time-stamp token: {detail}",
                                   height=height, detail=e.detail)) from None
    fast.learn(token, info)


def _check_sm2_token(height: int, token: bytes, header: BlockHeader, roots_pem: bytes,
                     retired: Sequence[tuple[str, str]] = ()) -> None:
    from copyledger.ledger.entry import parse_timestamp
    from copyledger.ledger.sm2_timestamp import verify_sm2_token

    try:
        info = verify_sm2_token(token, sm2.sm3(header.canonical_bytes()), roots_pem)
    except CopyledgerError as e:
        raise CopyledgerError(said("block {height}: SM2 time-stamp token: {detail}",
                                   height=height, detail=e.detail)) from None
    for certificate_sm3, retired_at in retired:
        if certificate_sm3 == info.tsa_certificate_sm3 and (
                info.gen_time > parse_timestamp(retired_at)):
            raise CopyledgerError(said("block {height}: SM2 time-stamp token signed at {time} by "
                                       "an SM2 TSA certificate retired at {retired_at}",
                                       height=height, time=info.gen_time.isoformat(),
                                       retired_at=retired_at))


_Signers = dict[bytes, note.Verifier]
_SIGNERS: dict[tuple[str, ...], _Signers | None] = {}


def _signers(verifiers: list[note.Verifier]) -> _Signers | None:
    """The log's Ed25519 keys (those named as the first) by key ID, for `_quick_note`; None if
    any two share name and key ID (then `note.verify_note` refuses, and names it)."""
    key = tuple(f"{v.name}\n{v.key_id.hex()}\n{v.public_key.hex()}" for v in verifiers)
    if key not in _SIGNERS:
        known: dict[tuple[str, bytes], note.Verifier] = {}
        for v in verifiers:
            if known.setdefault((v.name, v.key_id), v).public_key != v.public_key:
                _SIGNERS[key] = None
                return None
        _SIGNERS[key] = {v.key_id: v for v in verifiers if v.name == verifiers[0].name} or None
    return _SIGNERS[key]


def _quick_note(signed: object, text: str, name: str, signers: _Signers | None) -> bool:
    """True if `signed` is the note `text` with exactly one signature line, by one of the
    log's keys, that verifies (D73): what `note.verify_note` then `parse_checkpoint` or
    `parse_block_note_text` accept and find equal to the block, without parsing. False: the
    full path decides and names any fault."""
    if signers is None or type(signed) is not str or not signed.startswith(text):
        return False
    prefix = f"\n\u2014 {name} "
    at = len(text) + len(prefix)
    if not signed.startswith(prefix, len(text)) or not signed.endswith("\n"):
        return False
    raw = note.unb64(signed[at:-1])
    if raw is None or len(raw) < 5:
        return False
    signer = signers.get(raw[:4])
    if signer is None:
        return False
    msg, sig = note.signature_message(text), raw[4:]
    # libsodium's "yes" first (half the cost, and stricter: D79); its "no", the reference's.
    return sodium.verify(signer.public_key, sig, msg) or signer.verify(msg, sig)


def _check_signatures(b: BlockRow, verifiers: list[note.Verifier],
                      sm2_verifiers: Sequence[sm2.Verifier] = (),
                      signers: _Signers | None = None) -> None:
    """Both notes are signed by the log and say what the block says (with SM2 keys, both
    are signed by every SM2 key too). `signers`, from `_signers`, lets the common note by one
    key be checked unparsed."""
    h = b.header
    name = verifiers[0].name
    if signers is not None and not sm2_verifiers:
        with contextlib.suppress(CopyledgerError):
            if (_quick_note(b.checkpoint, note.format_checkpoint(
                    note.Checkpoint(name, h.tree_size, h.tree_root)), name, signers)
                    and _quick_note(b.block_note, note.block_note_text(name, h.height, b.hash),
                                    name, signers)):
                return
    n, _ = note.verify_note(b.checkpoint, verifiers)
    cp = note.parse_checkpoint(n.text)
    if (cp.origin, cp.size, cp.root) != (name, h.tree_size, h.tree_root):
        raise CopyledgerError(said("block {height}: checkpoint does not match the block header",
                                   height=h.height))
    bn, _ = note.verify_note(b.block_note, verifiers)
    origin, height, bhash = note.parse_block_note_text(bn.text)
    if (origin, height, bhash) != (name, h.height, b.hash):
        raise CopyledgerError(said("block {height}: block note does not match the block",
                                   height=h.height))
    if sm2_verifiers:
        for what, signed in ((said("checkpoint"), b.checkpoint),
                             (said("block note"), b.block_note)):
            try:
                note.verify_note(signed, sm2_verifiers)
            except CopyledgerError as e:
                raise CopyledgerError(said("block {height}: {what}: SM2 signature: {detail}",
                                           height=h.height, what=what, detail=e.detail)) from None


# -- Entries, the tree and the links -------------------------------------------------------


_Linked = tuple[int, tuple[tuple[Target, str], ...], Transfer | Acceptance | Withdrawal | None]
"""(seq, what the entry names, the entry if it is a link of a chain of title) for each linked
entry."""


def _check_entry_chunk(
    rows: list[EntryTuple],
) -> tuple[tuple[int, str] | None, list[_Linked]]:
    """The first fault among these entries (seq, problem), and what the linked ones name.
    Runs in a worker."""
    linked: list[_Linked] = []
    leaves = merkle.leaf_hashes([row[2] for row in rows])
    for row, leaf in zip(rows, leaves, strict=True):
        # The common entry in three steps: its leaf hash, the plain work's pattern, its
        # indexed columns; anything else (a fault too) takes `_check_entry`, which names it.
        if leaf == row[1] and (quick := quick_logged(row[2])) is not None and (
                quick == row[3:6]):
            continue
        try:
            doc = _check_entry(row)
        except CopyledgerError as e:
            return (row[0], said("seq {seq}: {detail}", seq=row[0], detail=e.detail)), linked
        if doc is not None and doc.KIND in LINKED_KINDS:
            linked.append((row[0], links_of(doc),
                           doc if isinstance(doc, TITLE_KINDS) else None))
    return None, linked


class _Span(NamedTuple):
    """A block's entries [lo, hi) (not empty) and the batch root they must make."""

    height: int
    lo: int
    hi: int
    batch_root: bytes


_RangeJob = tuple[int, int, list[_Span], list[tuple[int, int, bytes]], str | None]
"""Entries [lo, hi) (lo a multiple of a power of two >= hi - lo), the blocks holding them,
the blocks whose tree size is in (lo, hi] as (tree size, height, tree root), and the
database a worker reads them from (None: this process's store)."""


class _RangeResult(NamedTuple):
    """What a worker found in its range of entries."""

    fault: tuple[int, str] | None
    """The first entry fault before any missing seq: (seq, problem)."""
    missing: tuple[int, int | None] | None
    """The first missing seq and the next one stored (None: none is)."""
    linked: list[_Linked]
    late: tuple[int | None, int | None, str] | None
    """The first fault of the range's nodes or blocks: (seq, height, problem)."""
    top: list[bytes]
    """The hashes of the maximal complete subtrees of the range, largest first."""
    nodes: int
    """Stored Merkle nodes recomputed and found equal inside the range."""
    frontier: list[bytes] | None
    """The stored frontier at lo the block tree roots were computed from (None: no block
    ends in the range); the caller holds it to the one it recomputed."""
    edges: list[tuple[int, list[tuple[int, bytes]]]]
    """(height, `_pieces`) of the blocks the range holds only part of."""


def _check_rows_up_to(store: Store, end: int, height: int, nodes: int, links: int) -> None:
    """The rows of the audited tree (of `end` entries, its last block at `height`) are those
    its entries make, no more: as many Merkle nodes and links as counted, and no entry past
    `end` that no block seals. Rows a block sealed after the audit pinned its tree (the
    server writing meanwhile) are the next audit's: an entry is committed with its block, so
    one read here has its block seen by a read after it (D166)."""
    at, sealed = end, end
    while (extra := next(store.iter_entry_tuples(start=at, chunk=1), [])):
        seq = extra[0][0]
        sealed = store.tree_size()  # (read after the entry)
        if seq >= sealed:
            if seq != at:
                raise _Fault(said("seq {size} is missing (next stored is {seq})",
                                  size=at, seq=seq), seq=at)
            raise _Fault(said("seq {seq}: recorded in block {block_height}, but block "
                              "{height} sealed it", seq=seq, block_height=extra[0][6],
                              height=height), seq=seq)
        at = sealed
    stored = store.count_nodes(upto=end)
    if stored != nodes:
        raise _Fault(said("{stored} Merkle nodes are stored but the entries make {nodes}",
                          stored=stored, nodes=nodes))
    stored = store.count_links(below=end)
    if stored != links:
        raise _Fault(said("{stored} links are stored but the entries make {value}",
                          stored=stored, value=links))
    checks: tuple[tuple[Callable[[int], int], Callable[[int, int], str]], ...] = (
        (store.count_nodes_past, lambda n, size: said(
            "{n} Merkle nodes are stored past the tree of {size}, which no block seals",
            n=n, size=size)),
        (store.count_links_past, lambda n, size: said(
            "{n} links are stored past the tree of {size}, which no block seals",
            n=n, size=size)))
    for past, fault in checks:
        at = end
        while (n := past(at)):
            sealed = store.tree_size()  # (read after the count, as for entries)
            if sealed <= at:
                raise _Fault(fault(n, at))
            at = sealed


def _ranges(lo: int, end: int, span: int) -> Iterator[tuple[int, int]]:
    """[lo, end) cut into ranges of at most `span` (a power of two) entries, each starting at
    a multiple of a power of two at least its length: then every complete subtree inside a
    range is a subtree of the whole tree, and the tree of any size within it is the tree up
    to its start with the range's own subtrees appended."""
    while lo < end:
        step = span if lo == 0 else min(span, lo & -lo)
        hi = min(end, lo + step)
        yield lo, hi
        lo = hi


def _levels(leaves: list[bytes]) -> list[list[bytes]]:
    """The complete nodes over `leaves` level by level (level 0: the leaves): pairs only, an
    odd last node waits for its sibling outside."""
    sha256 = hashlib.sha256
    rows = [leaves]
    row = leaves
    while len(row) > 1:
        row = [sha256(b"\x01" + a + b).digest() for a, b in zip(row[0::2], row[1::2],
                                                                strict=False)]
        rows.append(row)
    return rows


def _subtrees(rows: list[list[bytes]], n: int) -> list[bytes]:
    """The hashes of the maximal complete subtrees over the first n leaves of `rows`."""
    return [rows[lv][ix] for lv, ix in merkle.frontier_ids(n)]


def _graft(size: int, frontier: list[bytes], pieces: Iterable[tuple[int, bytes]]
           ) -> tuple[list[bytes], list[tuple[int, int, bytes]]]:
    """Append complete subtrees (level, hash), left to right, to a tree of `size` leaves whose
    frontier is `frontier`; each must start at a multiple of its width (as `_pieces` cuts
    them). The new frontier, and the nodes completed above them (level, index, hash)."""
    f = list(frontier)
    made: list[tuple[int, int, bytes]] = []
    for level, h in pieces:
        lv, ix = level, size >> level
        size += 1 << level
        while ix & 1:  # the last frontier node is its left sibling
            h = merkle.node_hash(f.pop(), h)
            lv, ix = lv + 1, ix >> 1
            made.append((lv, ix, h))
        f.append(h)
    return f, made


def _pieces(leaves: list[bytes], lo: int, hi: int) -> list[tuple[int, bytes]]:
    """Leaves [lo, hi) of a tree (a block's batch) as its maximal complete subtrees inside
    that range, left to right, (level, hash): what `_graft` joins with the parts beside."""
    out, at = [], 0
    for level, _ in merkle._range_ids(lo, hi):  # the cut proofs make, any lo < hi
        out.append((level, merkle.root(leaves[at:at + (1 << level)])))
        at += 1 << level
    return out


def _check_range(store: Store, job: _RangeJob) -> _RangeResult:
    """Everything entries [lo, hi) show alone: each entry, the leaf hashes, every stored node
    of the complete subtrees inside the range, the block each entry is recorded in, the batch
    roots of the blocks inside the range. Runs in a worker, on its own connection."""
    lo, hi, spans, heads, _ = job
    with store.reading():
        rows = store.entry_tuples(lo, hi)
        fault, linked = _check_entry_chunk(rows)
        missing: tuple[int, int | None] | None = None
        if len(rows) != hi - lo:  # seqs are unique and in [lo, hi): one is missing
            at = next((s for s, row in enumerate(rows, lo) if row[0] != s), lo + len(rows))
            if at - lo < len(rows):
                missing = at, rows[at - lo][0]
            else:
                after = next(store.iter_entry_tuples(start=hi, chunk=1), [])
                missing = at, after[0][0] if after else None
            if fault is not None and fault[0] > at:
                fault = None
        if fault is not None or missing is not None:
            return _RangeResult(fault, missing, linked, None, [], 0, None, [])
        leaves = [row[1] for row in rows]  # each equal to its entry's hash, checked above
        levels = _levels(leaves)
        late: tuple[int | None, int | None, str] | None = None
        for lv, want in enumerate(levels):
            first = lo >> lv
            stored = store.read_level(lv, first, first + len(want))
            if stored != want:
                ix = first + next((i for i, (a, b) in enumerate(zip(stored, want, strict=False))
                                   if a != b), min(len(stored), len(want)))
                late = (ix << lv, None, _bad_node(lv, ix))
                break
        front: list[bytes] | None = None
        if heads:  # the tree up to lo, as stored: the caller compares it with its own
            try:
                front = store.read_hashes(merkle.frontier_ids(lo), cached=False)
            except CopyledgerError:
                front = []
    edges: list[tuple[int, list[tuple[int, bytes]]]] = []
    for sp in spans:
        i, j = max(sp.lo, lo) - lo, min(sp.hi, hi) - lo
        part = [row[6] for row in rows[i:j]]
        if late is None and part.count(sp.height) != len(part):
            k = i + next(k for k, h in enumerate(part) if h != sp.height)
            late = (lo + k, None, said("seq {seq}: recorded in block {block_height}, but block "
                                       "{height} sealed it", seq=lo + k,
                                       block_height=rows[k][6], height=sp.height))
        if sp.lo < lo or sp.hi > hi:
            edges.append((sp.height, _pieces(leaves[i:j], lo + i - sp.lo, lo + j - sp.lo)))
        elif late is None and merkle.root(leaves[i:j]) != sp.batch_root:
            late = (None, sp.height, _bad_batch_root(sp.height))
    for s, height, tree_root in heads if late is None and front is not None else ():
        # The tree of size s: the frontier at lo, then the range's own subtrees up to s.
        r = merkle.root_from_frontier(_subtrees(levels, s - lo))
        for left in reversed(front or ()):
            r = merkle.node_hash(left, r)
        if r != tree_root:
            late = (None, height, said("block {height}: tree_root != root of the first {s} "
                                       "entries", height=height, s=s))
            break
    return _RangeResult(None, None, linked, late, _subtrees(levels, hi - lo),
                        sum(map(len, levels)), front, edges)


def _bad_node(lv: int, ix: int) -> str:
    return said("stored Merkle node (level {lv}, index {ix}) does not match the entries; "
                "first leaf under it is seq {first}", lv=lv, ix=ix, first=ix << lv)


def _bad_batch_root(height: int) -> str:
    return said("block {height}: batch_root != root of its entries", height=height)


_STORES: dict[str, Store] = {}


def _check_range_apart(job: _RangeJob) -> _RangeResult:
    """`_check_range` in a worker: on a connection of its own (never one inherited)."""
    url = job[4]
    assert url is not None
    if url not in _STORES:
        _STORES[url] = Store(make_engine(url))
    return _check_range(_STORES[url], job)


def _own_url(store: Store) -> str | None:
    """Where a worker opens the same database; None for one a second connection cannot see."""
    url = store.engine.url
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        return None
    return url.render_as_string(hide_password=False)


def _check_entries(
    store: Store,
    pool: Executor | None,
    heads: list[_Head],
    start: _Start | None,
    progress: Progress | None,
    rep: AuditReport,
) -> None:
    """Check the entries after the start up to the last block's tree size (pinned: one tree),
    in ranges each worker reads and checks alone (`_check_range`); here, in seq order, only
    what joins them: the nodes above the ranges, the frontier each worker computed its tree
    roots from, the batch roots of blocks across ranges, links and titles."""
    if start is None:
        size, frontier, nodes0, links0 = 0, list[bytes](), 0, 0
    else:
        st = start.state
        size, frontier = st.tree_size, [bytes.fromhex(x) for x in st.frontier]
        nodes0, links0 = st.nodes, st.links
        rep.resumed_from = size
    first_size, end = size, heads[-1].tree_size
    roots_at: dict[int, list[_Head]] = {}
    spans: list[_Span] = []
    at = size
    for h in heads:
        roots_at.setdefault(h.tree_size, []).append(h)
        if h.tree_size == at and h.batch_root != merkle.EMPTY_ROOT:
            raise _Fault(_bad_batch_root(h.height), height=h.height)
        if h.tree_size > at:
            spans.append(_Span(h.height, at, h.tree_size, h.batch_root))
        at = h.tree_size
    for h in roots_at.get(size, []) if start is not None else ():
        if h.tree_root != merkle.root_from_frontier(frontier):
            raise _Fault(said("block {height}: tree_root != root of the first {s} entries",
                              height=h.height, s=size), height=h.height)
    url = _own_url(store) if pool is not None else None
    check: Callable[[_RangeJob], _RangeResult] = (
        _check_range_apart if url is not None else lambda job: _check_range(store, job))
    span_size = 1 << (ENTRY_CHUNK.bit_length() - 1)

    def jobs() -> Iterator[_RangeJob]:
        i = 0
        for lo, hi in _ranges(size, end, span_size):
            while spans[i].hi <= lo:
                i += 1
            j = i
            while j < len(spans) and spans[j].lo < hi:
                j += 1
            yield lo, hi, spans[i:j], [(h.tree_size, h.height, h.tree_root)
                                       for sp in spans[i:j] if sp.hi <= hi
                                       for h in roots_at[sp.hi]], url

    titles = _Titles(store, first_size)
    n_links = n_nodes = 0
    parts: dict[int, tuple[int, list[bytes]]] = {}  # an open block's (leaves so far, frontier)
    by_height = {sp.height: sp for sp in spans}
    for (lo, hi, _, _, _), res in _ordered(pool if url is not None else None, check, jobs()):
        if res.fault is not None:
            raise _Fault(res.fault[1], seq=res.fault[0])
        if res.missing is not None:
            miss, nxt = res.missing
            if nxt is None:
                raise _Fault(said("the log holds {size} entries but the last block says "
                                  "{tree_size}", size=miss, tree_size=end), seq=miss)
            raise _Fault(said("seq {size} is missing (next stored is {seq})",
                              size=miss, seq=nxt), seq=miss)
        links: list[Link] = []
        for seq, targets, transfer in res.linked:
            try:
                links += resolve(seq, targets, store.first_work)
                if transfer is not None:
                    titles.apply(seq, transfer)
            except CopyledgerError as e:
                raise _Fault(said("seq {seq}: {detail}",
                                  seq=seq, detail=e.detail), seq=seq) from None
        try:
            stored_links = store.links_between(lo, hi, exact=True)
        except IntegrityError as e:
            raise _Fault(said("seq {at}: {detail}", at=lo, detail=e.detail), seq=lo) from None
        if stored_links != sorted(links):
            diff = set(stored_links) ^ set(links)
            first = min(s for _, s, _ in diff)
            raise _Fault(said("seq {at}: stored links (entry_links) differ from what the entry "
                              "names",
                              at=first), seq=first)
        n_links += len(links)
        if res.frontier is not None and res.frontier != frontier:
            lv, ix = next((i for i, a, b in itertools.zip_longest(
                merkle.frontier_ids(lo), frontier, res.frontier) if a != b))
            raise _Fault(_bad_node(lv, ix), seq=ix << lv)
        if res.late is not None:
            raise _Fault(res.late[2], seq=res.late[0], height=res.late[1])
        grown, made = _graft(lo, frontier, zip(
            (lv for lv, _ in merkle.frontier_ids(hi - lo)), res.top, strict=True))
        bad = _check_nodes(store, made)
        if bad is not None:
            raise _Fault(_bad_node(*bad), seq=bad[1] << bad[0])
        n_nodes += res.nodes + len(made)
        for height, pieces in res.edges:  # a block across ranges: its batch root, joined
            sp = by_height[height]
            at, part = parts.pop(height, (0, []))
            part = _graft(at, part, pieces)[0]
            at = min(sp.hi, hi) - sp.lo
            if sp.hi > hi:
                parts[height] = at, part
            elif merkle.root_from_frontier(part) != sp.batch_root:
                raise _Fault(_bad_batch_root(height), height=height)
        frontier, size = grown, hi
        if progress is not None:
            progress(hi - lo)
    rep.entries, last = size, heads[-1]
    rep.nodes = nodes0 + n_nodes
    _check_rows_up_to(store, end, last.height, rep.nodes, links0 + n_links)
    rep.tree_size = size
    rep.root = merkle.root_from_frontier(frontier).hex()
    new = size - first_size
    if start is not None:
        rep.checked.append(said(
            "resumed from the audit of tree size {size} (block {height}): that block, its root "
            "and the stored frontier nodes are unchanged", size=first_size,
            height=start.state.height))
    rep.checked += [
        said("{n} entries: canonical JSON, valid, leaf hashes match", n=new),
        said("{n} stored Merkle nodes recomputed from the leaves", n=n_nodes),
        said("every block's tree root and batch root recomputed"),
        said("{n} links (transfers and claims to what they name) recomputed", n=n_links),
        said("{n} chains of title replayed: every transfer by the holder of the time",
             n=len(titles.titles)),
    ]
    rep.state = AuditState(
        tree_size=size, root=rep.root, height=last.height,
        block_hash=store.get_block(last.height).hash.hex(),
        frontier=tuple(x.hex() for x in frontier), nodes=rep.nodes, links=links0 + n_links)


def _check_entry(row: EntryTuple) -> Entry | None:
    """The entry's document, if its bytes, leaf hash and indexed columns are right (None
    for a plain work, which the quick path read: nothing links from it)."""
    _, leaf, data, *indexed, _ = row
    if merkle.leaf_hash(data) != leaf:
        raise CopyledgerError("stored leaf hash != SHA-256(0x00 || entry bytes)")
    quick = quick_logged(data)
    if quick is not None:
        doc, said_ = None, quick
    else:
        doc, obj = parse_logged_entry(data)
        said_ = (doc.KIND, entry_mod.content_sha256(obj), doc.registrant)
    # The indexed columns (what search answers from) must say what the entry says.
    if tuple(indexed) != said_:
        raise CopyledgerError(
            "indexed columns (kind, sha256, registrant) differ from the entry")
    return doc


class _Titles:
    """Every transferred work's chain of title, replayed as the log is read. Only works with
    transfers are held in memory; the rest cost nothing. Resuming at `before`, a work first
    met after it is replayed from its own earlier transfers (read by the work's links)."""

    def __init__(self, store: Store, before: int) -> None:
        self.store = store
        self.before = before
        self.titles: dict[int, Title] = {}

    def apply(self, seq: int, t: Transfer | Acceptance | Withdrawal) -> None:
        """CopyledgerError if `t` was not made by the account entitled to at `seq` (a double
        assignment, a transfer by a stranger, an acceptance without a pending offer or by
        someone other than its recipient), or names no earlier work."""
        title = self.titles.get(t.work.seq)
        if title is None:
            if t.work.seq >= seq:
                raise CopyledgerError(said("transfer names entry {seq}, which is not before it",
                                           seq=t.work.seq))
            title = Title.of(t.work.seq, parse_entry(self.store.get_entry(t.work.seq).data))
            earlier = [s for s in self.store.linked(t.work.seq, TRANSFER) if s < self.before]
            for row in self.store.get_entries(earlier) if earlier else ():
                title.apply(row.seq, parse_entry(row.data))
            self.titles[t.work.seq] = title
        title.apply(seq, t)


def _check_written(store: Store) -> None:
    """Each entry recorded as written under an Idempotency-Key (`idempotency_written`, D132)
    exists and is the key's account's: a retry is answered with it (D134). Every row is read,
    incremental or not (rows are swept after the keys' lifetime; the table is small)."""
    fault = store.written_fault()
    if fault is None:
        return
    seq, account, registrant = fault
    if registrant is None:
        raise _Fault(said("idempotency_written names seq {seq} under {account}, but no such "
                          "entry is stored", seq=seq, account=account), seq=seq)
    raise _Fault(said("idempotency_written names seq {seq} under {account}, but the entry was "
                      "recorded by {registrant}", seq=seq, account=account,
                      registrant=registrant), seq=seq)


def _check_cosignatures(store: Store, configured: Sequence[str],
                        newest: dict[str, tuple[int, int]]) -> str | None:
    """Each kept cosignature line must verify, under the witness vkey its row names, over the
    checkpoint the log signed at its tree size (whose signature the block check verified, in
    this audit or the one it resumed from). Every row is checked, incremental or not: a
    witness that was down cosigns older sizes when it returns. `newest` gets each witness's
    largest (tree size, time) kept, for `_check_fresh_cosignatures`."""
    n = others = 0
    for size, witness, line, checkpoint in store.iter_cosigned_checkpoints():
        at = _check_line(said("the cosignature of tree size {size} by {witness}", size=size,
                              witness=witness), witness, line, checkpoint)
        newest[witness] = max(newest.get(witness, (size, at)), (size, at))
        n, others = n + 1, others + (witness not in configured)
    if not n:
        return None
    if others:
        return said("{n} kept witness cosignatures ({others} by witnesses no longer configured) "
                    "verify over the checkpoints the log signed at their sizes", n=n,
                    others=others)
    return said("{n} kept witness cosignatures verify over the checkpoints the log signed at "
                "their sizes", n=n)


def _check_fresh_cosignatures(store: Store, kept: dict[str, tuple[int, int]]) -> str | None:
    """Each witness's newest line (D133), what `/checkpoint` readers get, must verify as a kept
    one does: a row changed by hand would otherwise be served unchecked. It must also be the
    newest in fact: its row's time the line's own, and its (tree size, time) no older than
    any line kept of that witness (`kept`, from `_check_cosignatures`), of which there is one
    at its size, since a line is kept before it is the newest (`Store.add_cosignature`)."""
    n = 0
    for size, witness, line, checkpoint, row_at in store.iter_fresh_cosignatures():
        where = said("the newest cosignature by {witness} (tree size {size})", size=size,
                     witness=witness)
        at = _check_line(where, witness, line, checkpoint)
        if row_at != at:
            raise _Fault(said("{where}: its row says it was made at {row_at}, the line says "
                              "{at}", where=where, row_at=row_at, at=at))
        first = store.cosignature_lines(size, [witness], newest=False)
        if not first:
            raise _Fault(said("{where}: no cosignature of that size by that witness is kept",
                              where=where))
        if (size, at) < kept.get(witness, (size, at)):
            older, then = kept[witness]
            raise _Fault(said("{where}: older than the cosignature of tree size {older} made "
                              "at {then}, kept from that witness", where=where, older=older,
                              then=then))
        n += 1
    if not n:
        return None
    return said("{n} witnesses' newest cosignatures verify over the checkpoints the log signed "
                "at their sizes and are the newest kept", n=n)


def _check_line(where: str, witness: str, line: str, checkpoint: str | None) -> int:
    """`line` must be a cosignature by `witness` of `checkpoint` (None: no such checkpoint);
    its time (POSIX seconds) is returned."""
    if checkpoint is None:
        raise _Fault(said("{where}: the log signed no checkpoint of that size", where=where))
    try:
        found = cosignature.cosignatures_of(checkpoint + line,
                                            [cosignature.parse_verifier_key(witness)])
    except CopyledgerError as e:
        raise _Fault(said("{where}: {detail}", where=where, detail=e.detail)) from None
    if not found:
        raise _Fault(said("{where}: the line is not a cosignature by that witness",
                          where=where))
    return found[0].timestamp


def _check_nodes(store: Store, nodes: list[tuple[int, int, bytes]]) -> tuple[int, int] | None:
    """The first recomputed node (level, index) whose stored hash differs or is missing.
    `merkle.append` gives each level's new nodes as one run of indexes, so each level is one
    ordered read compared as one list."""
    at = 0
    while at < len(nodes):
        lv, first, _ = nodes[at]
        end = at
        while end < len(nodes) and nodes[end][0] == lv:
            end += 1
        want = [hs for _, _, hs in nodes[at:end]]
        stored = store.read_level(lv, first, first + len(want))
        if stored != want:
            bad = next((i for i, (a, b) in enumerate(zip(stored, want, strict=False))
                        if a != b),
                       min(len(stored), len(want)))
            return lv, first + bad
        at = end
    return None


# -- Running chunks in workers, answers in order --------------------------------------------

_J = TypeVar("_J")
_R = TypeVar("_R")


class _pool:
    """A process pool of `workers`, or None for one: then chunks are checked in this process.

    Workers are forked when this process runs one thread (the CLI): they start at once, with
    everything imported, instead of paying a second of CPU each to import it all again. They
    never touch the database connections they inherit, and leave through `os._exit`, so no
    inherited handle is closed or flushed. With other threads about (a server, the tests'
    clients) a fork could inherit a lock one of them holds: then they are spawned."""

    def __init__(self, workers: int) -> None:
        self.executor: Executor | None = None
        if workers > 1:
            how = "fork" if threading.active_count() == 1 and _can_fork() else "spawn"
            self.executor = ProcessPoolExecutor(
                workers, mp_context=multiprocessing.get_context(how))
            if how == "fork":  # every worker forked now, while this is the only thread (a
                try:  # check started beside comes next)
                    self.executor.submit(int).result()
                except BaseException:
                    self.executor.shutdown(wait=True, cancel_futures=True)
                    raise

    def __enter__(self) -> Executor | None:
        return self.executor

    def __exit__(self, *exc: object) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)


def _can_fork() -> bool:
    return "fork" in multiprocessing.get_all_start_methods()


def _ordered(
    pool: Executor | None, fn: Callable[[_J], _R], jobs: Iterable[_J]
) -> Iterator[tuple[_J, _R]]:
    """(job, fn(job)) in the order of `jobs`, with at most two jobs per worker in flight so
    memory stays bounded by the chunk size, whatever the log's size."""
    if pool is None:
        for job in jobs:
            yield job, fn(job)
        return
    depth = 2 * max(1, getattr(pool, "_max_workers", 2))
    queue: list[tuple[_J, Future[_R]]] = []
    it = iter(jobs)
    for job in it:
        queue.append((job, pool.submit(fn, job)))
        if len(queue) >= depth:
            head, fut = queue.pop(0)
            yield head, fut.result()
    for head, fut in queue:
        yield head, fut.result()
