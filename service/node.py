"""The running node: a registry opened from its data directory (store, notary keys, TSA,
sequencer, external time-stamping, witness cosignatures, the near-duplicate index).

`copyledger init`, `serve`, `keys` and `audit` all come through here, so a data directory works
the same whether or not a server is running on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import Select, inspect, select

from copyledger.ledger import note, sm2
from copyledger.ledger.bundle import NotaryKeys
from copyledger.ledger.errors import (
    Conflict,
    CopyledgerError,
    InvalidInput,
    NotFound,
    SignatureError,
    WrongLogKey,
    said,
)
from copyledger.ledger.merkle import Consistency
from copyledger.ledger.note import BlockHeader
from copyledger.ledger.schema import block_timestamps, blocks
from copyledger.ledger.sequencer import Receipt, Sequencer
from copyledger.ledger.sm2_timestamp import TSA_LABEL as SM2_TSA_LABEL
from copyledger.ledger.sm2_timestamp import load_certificates
from copyledger.ledger.store import (
    BlockRow,
    Store,
    make_engine,
    migrate,
    require_current_schema,
    require_known_schema,
)
from copyledger.matching import LiveIndex
from copyledger.notary import keys
from copyledger.notary.external_tsa import ExternalStamper
from copyledger.notary.keys import (
    KeyConfig,
    has_log_key,
    init_log_signer,
    init_tsa_chain,
    load_log_signer,
    log_key_name,
)
from copyledger.notary.remote import (
    RemoteNotary,
    RemoteSigner,
    RemoteSm2Signer,
    RemoteSm2TSA,
    RemoteTSA,
)
from copyledger.notary.signer import (
    CheckpointGuard,
    ExtraSigner,
    Signer,
    remove_stray_writes,
    sign_note,
    verifier_key,
)
from copyledger.notary.sm2 import Sm2Signer
from copyledger.notary.sm2_tsa import (
    SM2_ROOT_FILE,
    SM2_TSA_CERT_FILE,
    Sm2TimeStampAuthority,
    create_sm2_tsa_chain,
    load_sm2_tsa,
    sm2_tsa_paths,
)
from copyledger.notary.tsa import (
    ROOT_FILE,
    TSA_CERT_FILE,
    TimeStampAuthority,
    TsaIdentity,
    set_aside_unfinished,
)
from copyledger.notary.witnesses import Cosigner, WitnessConfig
from copyledger.service import idempotency
from copyledger.service.fsperm import private_dir, trusted_text, write_public
from copyledger.service.handoff import Handoff, handoff_network
from copyledger.service.rotation import (
    finish_stopped_rotation,
    keys_lock,
    narrow_rotations,
    overlap_signers,
    overlap_sm2_signers,
    overlapping,
    retired_keys,
    rotation_entries,
)
from copyledger.service.settings import Settings, write_config

log = logging.getLogger("copyledger.node")
ROTATION_RETRY_S = 60  # after a rotation entry failed to be sealed, the wait before the next try


def _passphrase(s: Settings) -> bytes | None:
    v = os.environ.get(s.key_passphrase_env)
    return v.encode() if v else None


@dataclass(frozen=True)
class InitResult:
    created_key: bool
    verifier_key: str
    database_url: str
    sm2_verifier_key: str | None = None  # an SM-suite registry's SM2 key (D40)


def init_data_dir(s: Settings, notary: RemoteNotary | None = None) -> InitResult:
    """Create the data directory, its config, the notary keys (unless a stand-alone notary
    holds them) and the schema. Idempotent: an existing key is kept, never overwritten. With
    `--notary-url`, the notary's public files come from `notary` if given (kept open: the
    caller's connection), else from a connection made and closed here."""
    private_dir(s.data_dir)
    check_origin(s)
    check_suite(s)
    if not s.config_path.exists():
        write_config(s)
    if s.notary_url:
        with contextlib.nullcontext(notary) if notary is not None else contextlib.closing(
                connect_notary(s)) as remote:
            created, vkey = False, _publish_remote_identity(s, remote)
    else:
        with keys_lock(s.data_dir / "notary"):  # (no rotation or other start midway)
            narrow_rotations(s)  # (one an older rotation wrote with the umask's mode)
            finish_stopped_rotation(s)  # (undone, or left for the next lines to finish)
            _refuse_lost_keys(s, registry=True)
            created, vkey = init_notary_keys(s)
    engine = make_engine(s.database_url)
    try:
        migrate(engine)
    finally:
        engine.dispose()
    sm2_vkey = s.sm2_verifier_key_path.read_text().strip() if s.sm_suite else None
    return InitResult(created, vkey, s.database_url, sm2_vkey)


def _refuse_lost_keys(s: Settings, *, registry: bool) -> None:
    """Conflict where this registry's (or stand-alone notary's) keys were made (its verifier
    key is published, or its log has signed) but the log key, the TSA chain, the SM2 key or
    the SM2 TSA chain is gone: every start would otherwise make a new one in its place, sign
    the next block under a key or TSA root no verifier pinned, and leave the audit failing
    (D176). The verifier key is a public file a start makes again from the log key, so its
    absence alone says nothing: until the log has signed, what a stopped init left is set
    aside (D198); after, a missing key is refused as it is with the verifier key there
    (D202). A rotation makes its new keys itself (`rotate_keys`)."""
    published = s.verifier_key_path.exists()
    if not published and not _has_signed(s, registry=registry):
        return  # a first init, or one stopped midway: the next lines finish it
    chain = sm2_tsa_paths(s.tsa_dir)
    sm2_tsa = [p for p in (chain.certificate, chain.key, chain.root)
               if s.sm_suite and not p.exists()]
    if chain.certificate in sm2_tsa and registry and not _has_sm2_tokens(s):
        # a registry made before D51 gets its first SM2 TSA chain (or finishes one stopped
        # midway: the certificate is written last)
        sm2_tsa = []
    config = key_config(s)
    missing = [p for p, gone in (
        (log_key_name(config, s.log_key_path), not has_log_key(config, s.log_key_path)),
        (s.tsa_dir / TSA_CERT_FILE, not (s.tsa_dir / TSA_CERT_FILE).exists()),
        (s.sm2_key_path, s.sm_suite and not s.sm2_key_path.exists()),
        *((p, True) for p in sm2_tsa),
    ) if gone]
    if not missing:
        return  # (the rotations are read only when a key is missing, not at every start)
    if not published:
        if registry:
            _refuse_another_log(s)
        raise Conflict(said(
            "this log has signed with its keys, but {missing} is missing, and so is its "
            "verifier key {vkey}: restore them from a backup of the data directory (for "
            "another host of this log, copy the data directory of a host that serves it). A "
            "new key or TSA chain would sign what verifiers pinned under the old, and the "
            "audit would refuse it",
            vkey=s.verifier_key_path, missing=", ".join(map(str, missing))))
    if not _retired_last(s, "verifier_key", read_verifier_key(s)):
        # (else a rotation stopped after retiring the keys: these are its new ones to make)
        raise Conflict(said(
            "this registry's keys were made (its verifier key is {vkey}), but {missing} is "
            "missing: restore it from a backup of the data directory. A new one would sign "
            "what verifiers pinned under the old, and the audit would refuse it",
            vkey=s.verifier_key_path, missing=", ".join(map(str, missing))))


def _has_signed(s: Settings, *, registry: bool) -> bool:
    """Whether these keys have signed: a registry's log has a block (each is signed and
    time-stamped), a stand-alone notary remembers a checkpoint it signed."""
    if not registry:
        return s.last_checkpoint_path.exists()
    return _first_row(s, select(blocks.c.height).limit(1), blocks.name) is not None


def _refuse_another_log(s: Settings) -> None:
    """InvalidInput where the database's log is not this data directory's: its keys are not
    missing, the database is the wrong one (a data directory of no keys pointed at it)."""
    row = _first_row(s, select(blocks.c.checkpoint).where(blocks.c.height == 0), blocks.name)
    if row is not None:
        check_logged_origin(s, row[0])


def check_logged_origin(s: Settings, genesis_checkpoint: str) -> None:
    """InvalidInput unless the log in the database (the origin of its genesis block's
    checkpoint) is the one these settings name."""
    logged = note.parse_checkpoint(note.parse_note(genesis_checkpoint).text).origin
    if logged != s.origin:
        raise InvalidInput(said("the database holds log {logged}, not {origin}: wrong "
                                "--database?", logged=repr(logged), origin=repr(s.origin)))


def _first_row(s: Settings, query: Select[Any], table: str) -> Any | None:
    """The first row the registry's database gives `query`; None where it gives none, or
    there is no database or no `table` yet. A database out of reach fails closed: the error
    propagates."""
    if not s.database and not (s.data_dir / "ledger.sqlite3").exists():
        return None
    engine = make_engine(s.database_url)
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table(table):
                return None  # a database not made yet
            return conn.execute(query).first()
    finally:
        engine.dispose()


def _has_sm2_tokens(s: Settings) -> bool:
    """Whether the log holds an SM2 token: its SM2 TSA chain existed (D51), and is lost if
    gone, not yet to be made."""
    return _first_row(s, select(block_timestamps.c.height).where(
        block_timestamps.c.tsa == SM2_TSA_LABEL).limit(1), block_timestamps.name) is not None


def check_suite(s: Settings) -> None:
    """The crypto suite is fixed at `init`, like the origin: an SM-suite registry has an SM2
    key from its first block on, a standard one never gains one (D40)."""
    if s.verifier_key_path.exists() and s.sm2_verifier_key_path.exists() != s.sm_suite:
        fixed = "sm" if s.sm2_verifier_key_path.exists() else "standard"
        raise InvalidInput(said("this registry's crypto suite is {fixed} and cannot change "
                                "(the settings say {crypto_suite}); use a new data directory",
                                fixed=repr(fixed), crypto_suite=repr(s.crypto_suite)))
    if s.sm_suite and not s.notary_url and s.key_backend != "file":
        # No honest SM2 signing with SoftHSM2's mechanisms (D57): refused, not faked.
        raise InvalidInput(said("the SM suite keeps its SM2 keys in files: this PKCS#11 "
                                "module offers no SM2 mechanism (CKM_SM2), and SM2 cannot be "
                                "signed with ECDSA or ECDH; set key_backend = \"file\" "
                                "(COPYLEDGER_KEY_BACKEND=file) for an SM-suite registry or "
                                "notary"))


def key_config(s: Settings) -> KeyConfig:
    return KeyConfig(
        backend=s.key_backend,
        pkcs11_module=s.pkcs11_module or None,
        token_label=s.pkcs11_token_label or None,
        pin_env=s.pkcs11_pin_env,
        log_key_label=s.pkcs11_log_key_label,
        tsa_key_label=s.pkcs11_tsa_key_label,
    )


def init_notary_keys(s: Settings) -> tuple[bool, str]:
    """The log key (PEM file or HSM token) and the TSA chain, created if missing; what a
    stopped key write left is removed first (the caller holds `keys_lock`)."""
    for directory in (s.verifier_key_path.parent, s.tsa_dir):
        remove_stray_writes(directory)
    signer, created = init_log_signer(key_config(s), s.origin, s.log_key_path, _passphrase(s))
    vkey = verifier_key(signer)
    _refuse_another_key(s, s.verifier_key_path, vkey,
                        log_key_name(key_config(s), s.log_key_path), "verifier_key")
    private_dir(s.verifier_key_path.parent)
    init_tsa_chain(key_config(s), s.tsa_dir, s.origin, _passphrase(s))
    if s.sm_suite:
        sm2_signer, sm2_created = init_sm2_signer(s)
        _refuse_another_key(s, s.sm2_verifier_key_path, sm2_signer.verifier_key,
                            str(s.sm2_key_path), "sm2_verifier_key")
        write_public(s.sm2_verifier_key_path, sm2_signer.verifier_key + "\n")
        created = created or sm2_created
        if not (s.tsa_dir / SM2_TSA_CERT_FILE).exists():  # also for a registry made before D51
            set_aside_unfinished(sm2_tsa_paths(s.tsa_dir))
            create_sm2_tsa_chain(s.tsa_dir, s.origin, passphrase=_passphrase(s))
    # Last: a published verifier key says every key was made (`_refuse_lost_keys`), so an
    # init stopped before this line is finished by the next rather than refused.
    write_public(s.verifier_key_path, vkey + "\n")
    return created, vkey


def _refuse_another_key(s: Settings, published_at: Path, vkey: str, place: str,
                        field: str) -> None:
    """Conflict where the verifier key published at `published_at` is not `vkey`, that of the
    key this data directory signs with (at `place`): a log key file swapped for another, or a
    PKCS#11 label naming another registry's key in a shared token. A start would otherwise
    publish the other key and sign the log with it (D202's review). A rotation's new key is
    the one exception: until it is made, the published key is the one it retired (`field`
    of the last rotation's record)."""
    try:
        published = published_at.read_text().strip()
    except FileNotFoundError:
        return
    if published == vkey or _retired_last(s, field, published):
        return
    raise Conflict(said(
        "{path} publishes the verifier key {published}, but the key this data directory "
        "signs with ({place}) is {vkey}: put back the key that matches it, or correct the "
        "key's label. Started, it would sign the log with a key no verifier pinned",
        path=published_at, published=published, place=place, vkey=vkey))


def _retired_last(s: Settings, field: str, published: str) -> bool:
    """Whether `published` is the key (`field` of its record) the last rotation retired: a
    rotation stopped after its record, whose new keys a start is to make."""
    done = retired_keys(s)
    return bool(done) and getattr(done[-1], field) == published


def init_sm2_signer(s: Settings) -> tuple[Sm2Signer, bool]:
    """The SM suite's SM2 key file, created (0600) if missing; (signer, created)."""
    distid = s.sm2_distid.encode()
    if s.sm2_key_path.exists():
        return Sm2Signer.load(s.origin, s.sm2_key_path, distid, _passphrase(s)), False
    return Sm2Signer.generate(s.origin, s.sm2_key_path, distid, _passphrase(s)), True


def load_sm2_signer(s: Settings) -> Sm2Signer | None:
    """An SM-suite registry's SM2 key; None for the standard suite."""
    if not s.sm_suite:
        return None
    if not s.sm2_key_path.exists():
        raise NotFound(said("no SM2 key at {sm2_key_path}: run `copyledger init` first",
                            sm2_key_path=s.sm2_key_path))
    return Sm2Signer.load(s.origin, s.sm2_key_path, s.sm2_distid.encode(), _passphrase(s))


def load_sm2_tsa_authority(s: Settings) -> Sm2TimeStampAuthority | None:
    """An SM-suite registry's SM2/SM3 TSA (D51); None for the standard suite."""
    if not s.sm_suite:
        return None
    return load_sm2_tsa(s.tsa_dir, s.origin, _passphrase(s))


def init_notary_dir(s: Settings) -> tuple[bool, str]:
    """A stand-alone notary's data directory: config and keys only (no database)."""
    private_dir(s.data_dir)
    check_origin(s)
    check_suite(s)
    if not s.config_path.exists():
        write_config(s)
    with keys_lock(s.data_dir / "notary"):
        _refuse_lost_keys(s, registry=False)  # (as a registry's, D176)
        return init_notary_keys(s)


def open_notary(s: Settings) -> tuple[Signer, TimeStampAuthority, CheckpointGuard]:
    """What a stand-alone notary serves with: the log signer, the TSA, and its durable memory
    of the last checkpoint it signed."""
    return (load_signer(s), TimeStampAuthority(load_tsa_identity(s)),
            CheckpointGuard(s.origin, s.last_checkpoint_path))


def connect_notary(s: Settings) -> RemoteNotary:
    token = os.environ.get(s.notary_token_env, "")
    if not token:
        raise InvalidInput(said("--notary-url needs the notary's token in ${notary_token_env}",
                                notary_token_env=s.notary_token_env))
    notary = RemoteNotary(s.notary_url, token)
    if notary.name != s.origin:
        notary.close()
        raise InvalidInput(said("the notary signs for {name}, but this registry's origin is "
                                "{origin}: pass --origin {name} at init",
                                name=repr(notary.name), origin=repr(s.origin)))
    return notary


def _publish_remote_identity(s: Settings, notary: RemoteNotary) -> str:
    """Keep the notary's PUBLIC keys in the data directory (for audit and bundles), as
    `_check_remote_identity` allows."""
    for path, text in _check_remote_identity(s, notary):
        private_dir(path.parent)
        write_public(path, text)
    return notary.verifier_key


def _remote_identity(s: Settings, notary: RemoteNotary) -> list[tuple[Path, str]]:
    """The public files a stand-alone notary's identity gives the data directory."""
    files = [(s.verifier_key_path, notary.verifier_key + "\n"),
             (s.tsa_dir / ROOT_FILE, "".join(_pem(c) for c in notary.identity.roots))]
    if s.sm_suite:  # its SM2 key and SM2 TSA root, for audit and bundles (D57)
        files += [(s.sm2_verifier_key_path, RemoteSm2Signer(notary).verifier_key + "\n"),
                  (s.tsa_dir / SM2_ROOT_FILE, RemoteSm2TSA(notary).root_pem)]
    return files


def _check_remote_identity(s: Settings, notary: RemoteNotary) -> list[tuple[Path, str]]:
    """The notary's public files (`_remote_identity`), unless the data directory already holds
    another one of them: InvalidInput (D123). A stand-alone notary's keys do not rotate, so a
    notary that now serves another log key, SM2 key or TSA root was re-keyed or replaced;
    taking its keys would leave the log's earlier checkpoints and tokens unverifiable under
    the registry's own files (the audit fails at block 0), and every bundle with them."""
    files = _remote_identity(s, notary)
    for path, text in files:
        if not path.exists():
            continue
        try:
            held = _public_material(path.read_text())
        except (OSError, UnicodeDecodeError, CopyledgerError) as e:
            raise InvalidInput(said("cannot read {path}: {error}", path=path,
                                    error=str(e))) from None
        if held != _public_material(text):
            raise InvalidInput(said(
                "the notary at {url} no longer serves the public key this registry holds in "
                "{path}: it was re-keyed or replaced. Put the notary's earlier keys back (a "
                "stand-alone notary's keys do not rotate); a registry that was never served "
                "can start afresh in a new data directory",
                url=s.notary_url, path=path))
    return files


def _public_material(text: str) -> frozenset[bytes] | str:
    """What a public file says, not how: a PEM file's set of DER certificates (a root.pem
    edited by hand, its roots reordered, says the same), a vkey's text."""
    if "-----BEGIN" in text:
        return frozenset(load_certificates(text.encode()))
    return text.strip()


def check_origin(s: Settings) -> None:
    """The origin names the log in every checkpoint and is the key's name: fixed at `init`.
    Refuse a different one from flags, environment or config rather than fork the log."""
    if s.verifier_key_path.exists():
        fixed = note.parse_verifier_key(read_verifier_key(s)).name
        if fixed != s.origin:
            raise InvalidInput(
                said("this registry's origin is {fixed} and cannot change (the "
                     "settings say {origin}); remove the origin override or use a "
                     "new data directory", fixed=repr(fixed), origin=repr(s.origin))
            )


def load_signer(s: Settings) -> Signer:
    if s.key_backend == "file" and not s.log_key_path.exists():
        raise NotFound(said("no notary key at {log_key_path}: run `copyledger init` first",
                            log_key_path=s.log_key_path))
    return load_log_signer(key_config(s), s.origin, s.log_key_path, _passphrase(s))


def read_verifier_key(s: Settings) -> str:
    p: Path = s.verifier_key_path
    if not p.exists():
        raise NotFound(said("no verifier key at {p}: run `copyledger init` first", p=p))
    return trusted_text(p, s.data_dir).strip()


def check_log_key(s: Settings, latest: BlockRow) -> None:
    """WrongLogKey unless one of this data directory's log keys (the current one, or one it
    retired: a rotation's own block is sealed after the new key is made) signed the log's
    latest checkpoint, it holds every log key that signed it, and it has the private key of
    every retired key still inside its overlap (D116, D118). A host given a data directory of
    its own (`init` run there, not a copy of the first host's) would otherwise sign the log's
    next blocks with another key, which no verifier pinned to the registry's key accepts, and
    any process may come to sequence; a host holding the keys of before a rotation would,
    during the overlap (when the retired key still co-signs), sign without the new key, and
    one missing the retired key's file without that one: verifiers pinned to the key left out
    refuse either. Checked at start and again each time a process takes the lock (the log may
    have had no block when it started)."""
    vkey = read_verifier_key(s)
    held: list[note.Verifier | sm2.Verifier] = [
        note.parse_verifier_key(k) for k in all_verifier_keys(s)]
    try:
        signed, _ = note.verify_note(latest.checkpoint, held)
    except SignatureError:
        raise WrongLogKey(said(
            "the log's latest checkpoint (tree size {size}) is not signed by this data "
            "directory's log key ({vkey}): another registry's keys, or keys from before a "
            "rotation; give this host a copy of the data directory of a host that serves "
            "this log", size=latest.header.tree_size, vkey=vkey)) from None
    if s.sm_suite:  # its SM2 line: the log key's name, the SM2 key's ID (D40)
        held += [sm2.parse_verifier_key(k) for k in all_sm2_keys(s)[0]]
    names, ids = {v.name for v in held}, {(v.name, v.key_id) for v in held}
    unknown = [sig for sig in signed.signatures
               if sig.name in names and (sig.name, sig.key_id) not in ids]
    if unknown:
        raise WrongLogKey(said(
            "the log's latest checkpoint (tree size {size}) is also signed by a log key (key "
            "ID {key_id}) that this data directory neither uses nor lists as retired "
            "(notary/rotations.json): its keys are likely from before a rotation; give this "
            "host a copy of the rotated data directory",
            size=latest.header.tree_size, key_id=unknown[0].key_id.hex()))
    for r, _ in overlapping(s):  # a retired key co-signs until its overlap ends
        files = [r.key_path, *([r.sm2_key_path] if r.sm2_key_path is not None else [])]
        if not all(f.exists() for f in files):
            raise WrongLogKey(said(
                "the retired log key {n} still co-signs the log until {until}, but its "
                "private key is missing from this data directory (notary/retired/{n}/): "
                "verifiers that pinned it would refuse what this host signs; give this host "
                "a complete copy of the rotated data directory", n=r.n, until=r.overlap_until))


def open_store(s: Settings, *, current: bool = False) -> Store:
    """The store of an initialised registry, as it is (no migration: `audit` only reads, and
    reads an older schema too, never a newer release's: Conflict). With `current`, Conflict
    unless the schema is this release's (`require_current_schema`): for the commands that use
    what later migrations added."""
    if not s.database and not (s.data_dir / "ledger.sqlite3").exists():
        raise NotFound(
            said("no registry in {data_dir}: run `copyledger init --data-dir "
                 "{data_dir}`", data_dir=s.data_dir)
        )
    store = Store.open(s.database_url, migrate_schema=False)
    try:
        (require_current_schema if current else require_known_schema)(store.engine)
    except BaseException:
        store.close()
        raise
    return store


def upgrade_schema(s: Settings) -> tuple[str | None, str]:
    """`db upgrade`: bring an initialised registry's schema to this release's revision, as a
    starting server does; the revisions it was at and is at."""
    store = open_store(s)
    try:
        return migrate(store.engine)
    finally:
        store.close()


def load_tsa_identity(s: Settings) -> TsaIdentity:
    return keys.load_tsa_identity(key_config(s), s.tsa_dir, _passphrase(s))


def tsa_roots_pem(s: Settings) -> bytes:
    """The TSA root certificate(s) this registry's tokens chain to, the current one and those
    of retired TSA certificates (for audit and bundles)."""
    path = s.tsa_dir / ROOT_FILE
    if not path.exists():
        raise NotFound(said("no TSA root certificate at {path}: run `copyledger init` "
                            "first", path=path))
    return (trusted_text(path, s.data_dir)  # a trust anchor, as the verifier key
            + "".join(r.tsa_root for r in retired_keys(s))).encode()


def all_verifier_keys(s: Settings) -> list[str]:
    """The current log key and every retired one: what the audit accepts signatures from."""
    return [read_verifier_key(s), *(r.verifier_key for r in retired_keys(s))]


def all_sm2_keys(s: Settings) -> tuple[list[str], bytes | None]:
    """An SM-suite registry's SM2 note keys (current and retired) and SM2 TSA roots (PEM,
    current and retired): what the audit checks SM2 lines and tokens with (D40, D51, D57)."""
    retired = retired_keys(s)
    keys = [trusted_text(s.sm2_verifier_key_path, s.data_dir).strip(),
            *(r.sm2_verifier_key for r in retired if r.sm2_verifier_key is not None)]
    root = s.tsa_dir / SM2_ROOT_FILE  # trust anchors, read as the verifier key
    roots = ((trusted_text(root, s.data_dir) if root.exists() else "") + "".join(
        r.sm2_tsa_root for r in retired if r.sm2_tsa_root is not None)).encode()
    return keys, roots or None


class KeyedLocks:
    """An asyncio lock per key, dropped when no one holds or awaits it, so keys that are each
    used once (an account's content hashes) cost no memory afterwards.

    A key taken while free gets no lock object at all (None): a batch takes 1,000 keys that
    nobody else wants, and making, acquiring and releasing 1,000 `asyncio.Lock`s was a tenth
    of its CPU (D82). The first to wait for a held key makes its lock, acquires it on the
    holder's behalf (at once: it is new) and waits on it; the holder's release wakes it. All of
    that happens between two awaits, in the one event loop, so no one can slip in between."""

    def __init__(self) -> None:
        self._locks: dict[object, tuple[asyncio.Lock | None, int]] = {}

    async def _take(self, key: object) -> None:
        """Count this user of `key` and wait until it holds the key. If cancelled while
        waiting, the count is taken back and the key left to its holder."""
        held = self._locks.get(key)
        if held is None:  # free: held now, no lock needed until someone waits
            self._locks[key] = (None, 1)
            return
        lock, users = held
        if lock is None:
            lock = asyncio.Lock()
            await lock.acquire()  # on the holder's behalf: a new lock is free, no suspension
        self._locks[key] = (lock, users + 1)
        try:
            await lock.acquire()
        except BaseException:
            self._leave(key, holding=False)
            raise

    def _leave(self, key: object, *, holding: bool = True) -> None:
        """Give `key` up (holding it, or only counted while waiting for it)."""
        lock, users = self._locks[key]
        if holding and lock is not None:
            lock.release()  # wakes the next waiter, if any
        if users == 1:
            del self._locks[key]
        else:
            self._locks[key] = (lock, users - 1)

    @contextlib.asynccontextmanager
    async def hold(self, key: object) -> AsyncIterator[None]:
        await self._take(key)
        try:
            yield
        finally:
            self._leave(key)

    @contextlib.asynccontextmanager
    async def hold_many(self, keys: Sequence[object]) -> AsyncIterator[None]:
        """`hold` for every key at once, taken in the order given (sort it, so two holders of
        overlapping sets cannot deadlock): one context for a batch instead of one a key."""
        taken: list[object] = []  # the keys held, in order
        try:
            for key in dict.fromkeys(keys):  # a key given twice is held once
                await self._take(key)
                taken.append(key)
            yield
        finally:
            for key in taken:
                self._leave(key)

    def __len__(self) -> int:
        return len(self._locks)


class Node:
    """A running registry: the store, the signer, the TSA, the sequencer that seals blocks,
    and the state the operations share (the near-duplicate index, per-work transfer locks)."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        signer: Signer,
        tsa: TimeStampAuthority | RemoteTSA,
    ) -> None:
        if signer.name != settings.origin:
            raise InvalidInput(said("key name {name} != origin {origin}",
                                    name=repr(signer.name), origin=repr(settings.origin)))
        self.settings = settings
        self.store = store
        self.signer = signer
        self.origin = settings.origin
        # The suite is fixed at init like the origin (D40): checked once here, not per request.
        self.sm_suite = settings.sm_suite
        self.verifier_key = verifier_key(signer)
        self.tsa = tsa
        self._keys: NotaryKeys | None = None
        self._overlap: list[tuple[Signer, datetime]] = []
        self._sm2_overlap: list[tuple[Sm2Signer, datetime]] = []  # retired SM2 keys (D57)
        # Set by `open` for an SM-suite registry (D40, D51); remote with a stand-alone notary.
        self.sm2_signer: Sm2Signer | RemoteSm2Signer | None = None
        self.sm2_tsa: Sm2TimeStampAuthority | RemoteSm2TSA | None = None
        # The log is this notary's memory: it admits an extension of the last committed tree,
        # so a failed commit or a crash after signing never leaves it refusing the real next one.
        self.checkpoints = CheckpointGuard(settings.origin)
        self.rotation_sealed: list[Future[Receipt]] = []  # see `seal_rotations`
        self._retry: threading.Timer | None = None  # its next try after a failure
        self._retry_guard = threading.Lock()  # guards `_retry` and `_stopped`
        self._sealing = threading.Lock()  # held by a retry's sealing, which `stop` waits for
        self._stopped = False
        self._local = local = Sequencer(
            store,
            self._sign,
            settings.origin,
            max_batch=settings.max_batch,
            linger=settings.linger_ms / 1000.0,
            heartbeat=settings.heartbeat_s,
            stamp=tsa.timestamp_digest,
            extra_stamps=self._extra_stamps,
            on_seal=self._sealed,
            claim_ttl_s=settings.idempotency_ttl_s,
        )
        self.listeners: list[Callable[[BlockHeader], None]] = []  # told of each new block
        # One process sequences; with `serve --workers N` the others hand entries to it (D48).
        self.sequencer: Sequencer | Handoff = local
        network = handoff_network(settings)
        if settings.workers > 1 or network is not None:
            handoff = Handoff(local, settings.data_dir, prepare=self._remember_last,
                              on_lead=self._lead, network=network)
            self.sequencer = handoff
            self.listeners.append(handoff.sealed)
        if settings.external_tsa_urls and not settings.external_tsa_roots:
            raise InvalidInput("external_tsas needs external_tsa_roots (their root certificates), "
                               "so that every external token is verified before it is kept")
        roots_path = (Path(settings.external_tsa_roots).expanduser() if settings.external_tsa_roots
                      else None)
        if roots_path is not None and not roots_path.is_file():
            raise InvalidInput(said("external_tsa_roots: no such file {roots_path}",
                                    roots_path=roots_path))
        roots = roots_path.read_bytes() if roots_path is not None else None
        self.external = ExternalStamper(store, settings.external_tsa_urls, roots_pem=roots)
        self._external_roots = roots
        self.witnesses = [WitnessConfig(url, vkey) for url, vkey in settings.witness_list]
        first: dict[bytes, WitnessConfig] = {}
        for w in self.witnesses:  # a quorum counts keys, as verifiers do (D191, D196)
            if (same := first.setdefault(w.verifier.public_key, w)) is not w:
                raise InvalidInput(said("witnesses: {a} and {b} are one key under two names; "
                                        "a quorum counts keys: list it once",
                                        a=same.verifier.name, b=w.verifier.name))
        if self.witnesses and not 1 <= settings.witness_quorum <= len(self.witnesses):
            raise InvalidInput(said("witness_quorum must be 1..{n} (the number of witnesses)",
                                    n=len(self.witnesses)))
        self.cosigner = Cosigner(store, self.witnesses, refresh=settings.witness_refresh_s)
        # The background helpers hear of a new block only when they are configured: without
        # external TSAs or witnesses nothing is woken, and sealing calls nothing of theirs.
        if self.external.urls:
            self.listeners.append(lambda _h: self.external.poke())
        if self.witnesses:
            self.listeners.append(lambda _h: self.cosigner.poke())
        self.index = LiveIndex()  # rebuilt by `start_index`, then caught up from the log
        self.transfer_locks = KeyedLocks()  # work seq: one transfer per work at a time
        self.idempotency = idempotency.Keys(store, settings.idempotency_ttl_s)
        self.idempotency_locks = KeyedLocks()  # (account, key): one keyed request at a time

    def signers(self) -> list[Signer]:
        """The current key, and retired keys still inside their overlap (they co-sign)."""
        now = datetime.now(UTC)
        return [self.signer, *(sg for sg, until in self._overlap if until > now)]

    def _sign(self, text: str, consistency: Consistency | None) -> str:
        """The sequencer's signer: a checkpoint comes with its consistency proof, checked here
        and, with a stand-alone notary, sent to it to be checked again. An SM-suite registry's
        SM2 line follows the Ed25519 ones (D40)."""
        signers: list[Signer | ExtraSigner] = list(self.signers())
        if consistency is not None:
            self.checkpoints.admit(note.parse_checkpoint(text), consistency)
            signers = [sg.proving(consistency) if isinstance(sg, RemoteSigner) else sg
                       for sg in signers]
        signers += self.sm2_signers()
        return sign_note(text, signers)

    def sm2_signers(self) -> list[Sm2Signer | RemoteSm2Signer]:
        """An SM-suite registry's current SM2 key and retired ones still inside their overlap;
        none for the standard suite."""
        if self.sm2_signer is None:
            return []
        now = datetime.now(UTC)
        return [self.sm2_signer, *(sg for sg, until in self._sm2_overlap if until > now)]

    def _extra_stamps(self, header: BlockHeader) -> list[tuple[str, bytes]]:
        """An SM-suite registry's SM2/SM3 token over the SM3 of the header's bytes (D51)."""
        if self.sm2_tsa is None:
            return []
        return [(SM2_TSA_LABEL, self.sm2_tsa.timestamp(header.canonical_bytes()))]

    def _sealed(self, block: BlockRow) -> None:
        h = block.header
        self.checkpoints.remember(note.Checkpoint(self.origin, h.tree_size, h.tree_root))
        for listener in self.listeners:
            listener(block.header)

    def notary_keys(self) -> NotaryKeys:
        """The public half of the notary: log verifier keys and the TSA certificates."""
        if self._keys is None:
            genesis = self.store.get_block(0) if self.store.latest_block() else None
            ident = self.tsa.identity
            retired = retired_keys(self.settings)
            self._keys = NotaryKeys(
                log_keys=[
                    *({"verifier_key": r.verifier_key, "valid_from": r.valid_from,
                       "valid_until": r.valid_until, "cosigns_until": r.overlap_until}
                      for r in retired),
                    {
                        "verifier_key": self.verifier_key,
                        "valid_from": retired[-1].valid_until if retired
                        else genesis.header.sealed_at if genesis else None,
                        "valid_until": None,
                    },
                ],
                tsa_roots=[tsa_roots_pem(self.settings).decode()]
                + ([self._external_roots.decode()] if self._external_roots else []),
                tsa_chain=[_pem(c) for c in [ident.certificate, *ident.chain]
                           if c.issuer != c.subject]
                + [c for r in retired for c in r.tsa_chain],
                sm2_keys=[*({"verifier_key": r.sm2_verifier_key} for r in retired
                            if r.sm2_verifier_key is not None),
                          {"verifier_key": self.sm2_signer.verifier_key}]
                if self.sm2_signer is not None else [],
                sm2_tsa_roots=[self.sm2_tsa.root_pem,
                               *(r.sm2_tsa_root for r in retired if r.sm2_tsa_root is not None)]
                if self.sm2_tsa is not None else [],
                sm2_tsa_retired=[d for r in retired if (d := r.sm2_retirement()) is not None],
            )
        return self._keys

    @classmethod
    def open(cls, s: Settings) -> Node:
        # One connection to a stand-alone notary, from the data directory's public files to
        # the signing (its identity checked once against those files, D123).
        notary = None
        if s.notary_url:
            check_origin(s)  # (before the notary is asked: the plainer refusal of the two)
            notary = connect_notary(s)
        try:
            init_data_dir(s, notary)
            return cls._open(s, notary)
        except BaseException:
            if notary is not None:
                notary.close()
            raise

    @classmethod
    def _open(cls, s: Settings, notary: RemoteNotary | None) -> Node:
        store = Store.open(s.database_url)
        latest = store.latest_block()
        genesis = store.get_block(0) if latest else None
        if genesis is not None:
            try:
                check_logged_origin(s, genesis.checkpoint)
            except InvalidInput:
                store.close()
                raise
        if latest is not None:
            try:
                check_log_key(s, latest)
            except BaseException:
                store.close()
                raise
        if notary is not None:
            node = cls(s, store, RemoteSigner(notary), RemoteTSA(notary))
            if s.sm_suite:  # the notary signs the SM2 lines and SM2 tokens too (D57)
                node.sm2_signer, node.sm2_tsa = RemoteSm2Signer(notary), RemoteSm2TSA(notary)
            return node
        reg = cls(s, store, load_signer(s), TimeStampAuthority(load_tsa_identity(s)))
        reg._overlap = overlap_signers(s, _passphrase(s))
        reg._sm2_overlap = overlap_sm2_signers(s, _passphrase(s)) if s.sm_suite else []
        reg.sm2_signer = load_sm2_signer(s)
        reg.sm2_tsa = load_sm2_tsa_authority(s)
        return reg

    def start(self) -> None:
        if isinstance(self.sequencer, Handoff):
            self.sequencer.start()  # leads (and starts the helpers), or follows the one that does
            return
        self._remember_last()
        self.sequencer.start()
        self._lead()

    def _remember_last(self) -> None:
        """Before sequencing: the notary admits only extensions of the last committed tree."""
        self.check_loaded_keys()
        last = self.store.latest_block()
        if last is not None:
            check_log_key(self.settings, last)  # (D116: the log may have begun since the start)
            h = last.header
            self.checkpoints.remember(note.Checkpoint(self.origin, h.tree_size, h.tree_root))

    def check_loaded_keys(self) -> None:
        """WrongLogKey unless the keys this process loaded at its start are still its data
        directory's (D121): the current log key, the retired keys still inside their overlap
        (the same set both ways), their SM2 twins on an SM-suite registry, and the TSA
        certificate (and the SM2 TSA's). `check_log_key` reads the keys on disk, but a process
        signs with those it loaded, so a `notary/` rotated or replaced under a process that
        follows would, once it leads, sign with keys the registry no longer uses (during an
        overlap without the new key, which verifiers pinned to it refuse), or co-sign with a
        key the directory no longer lists (which D118 then holds against every other host). A
        directory that cannot be read is refused alike: the process is barred, not crashed."""
        try:
            disk, loaded = self._keys_on_disk(), self._keys_loaded()
        except (OSError, ValueError, CopyledgerError) as e:
            raise WrongLogKey(said(
                "this data directory's keys cannot be read to compare them with those this "
                "process loaded ({error}): restart it once notary/ is whole",
                error=str(e))) from None
        if disk - loaded:
            raise WrongLogKey(said(
                "this data directory's keys changed after this process started ({key} is one "
                "it did not load): it would sign the log with keys the registry no longer "
                "uses; restart it so that it loads them", key=_first(disk - loaded)))
        if loaded - disk:
            raise WrongLogKey(said(
                "this data directory's keys changed after this process started (it no longer "
                "holds {key}, which this process loaded): it would sign the log with keys the "
                "registry no longer uses; restart it so that it loads them",
                key=_first(loaded - disk)))

    def _keys_on_disk(self) -> set[str]:
        """What `_keys_loaded` holds, as the data directory says now."""
        s = self.settings
        retired = [r for r, _ in overlapping(s)]
        keys = {read_verifier_key(s), *(r.verifier_key for r in retired)}
        if self.sm2_signer is not None:
            keys |= {s.sm2_verifier_key_path.read_text().strip(),
                     *(r.sm2_verifier_key for r in retired if r.sm2_verifier_key is not None)}
        if isinstance(self.tsa, TimeStampAuthority):
            pem = (s.tsa_dir / TSA_CERT_FILE).read_bytes()
            keys.add(_tsa_name("TSA", _der(x509.load_pem_x509_certificates(pem)[0])))
        if isinstance(self.sm2_tsa, Sm2TimeStampAuthority):
            certs = load_certificates((s.tsa_dir / SM2_TSA_CERT_FILE).read_bytes())
            if not certs:
                raise InvalidInput(said("no certificate in {path}",
                                        path=s.tsa_dir / SM2_TSA_CERT_FILE))
            keys.add(_tsa_name("SM2 TSA", certs[0]))
        return keys

    def _keys_loaded(self) -> set[str]:
        """The log keys this process signs with now (vkeys) and its TSA certificates."""
        keys = {verifier_key(sg) for sg in self.signers()}
        keys |= {sg.verifier_key for sg in self.sm2_signers()}
        if isinstance(self.tsa, TimeStampAuthority):
            keys.add(_tsa_name("TSA", _der(self.tsa.identity.certificate)))
        if isinstance(self.sm2_tsa, Sm2TimeStampAuthority):
            keys.add(_tsa_name("SM2 TSA", self.sm2_tsa.certificate_der))
        return keys

    def _lead(self) -> None:
        """What only the sequencing process runs, from when it comes to lead: external
        time-stamps, witnesses, and the entries of rotations the log lacks (`seal_rotations`;
        last, so that nothing it raises keeps the helpers from starting)."""
        self.external.start()
        self.cosigner.start()
        self.rotation_sealed = self.seal_rotations()

    def seal_rotations(self) -> list[Future[Receipt]]:
        """Queue the `rotation` entries of the recorded rotations the log lacks, oldest first
        and as one (one block, up to `max_batch`); their receipts to come, none if none was
        missing (D206). `rotate_keys` seals its rotation's entry this way, and a process that
        comes to lead seals that of a rotation stopped after its record, whose new keys a
        start made (D186): before, no entry ever recorded it. Found by content hash (the new
        key's) and kind, one indexed query a rotation; run only by the leader, after its
        start reloaded the log, so an entry is sealed once (one an earlier leader sealed is
        found). Never raises: a failure, here or in sealing, is logged and the whole tried
        again a minute later while this process leads; the futures carry it to `rotate_keys`."""
        s = self.settings
        if s.notary_url or s.key_backend != "file":
            return []  # (rotation covers keys in files only)
        try:
            missing = [pending for digest, pending in rotation_entries(s, self.verifier_key)
                       if not self.store.search_sha256(digest, 1, kind="rotation")]
            futures = self._local.submit_many(missing)
        except Exception as e:  # (a database restarting, an unreadable trust anchor)
            failed: Future[Receipt] = Future()
            failed.set_exception(e)
            futures = [failed]
        for fut in futures:
            fut.add_done_callback(self._rotation_sealed)
        return futures

    def _rotation_sealed(self, fut: Future[Receipt]) -> None:
        """A rotation entry's outcome: a failure is logged (once an attempt) and sealing tried
        again later, unless this node stops (`rotate_keys` raises the failure then)."""
        if fut.cancelled() or (e := fut.exception()) is None:
            return
        with self._retry_guard:
            if self._stopped or self._retry is not None:
                return
            log.error("sealing a key rotation's entry failed (tried again in %d s): %s",
                      ROTATION_RETRY_S, e)
            self._retry = threading.Timer(ROTATION_RETRY_S, self._seal_again)
            self._retry.daemon = True
            self._retry.start()

    def _seal_again(self) -> None:
        with self._sealing:  # (`stop` waits for it: no query on a closed store)
            with self._retry_guard:
                self._retry = None
                if self._stopped:
                    return
            if not self.stepped_down and (not isinstance(self.sequencer, Handoff)
                                          or self.sequencer.leading):
                self.rotation_sealed = self.seal_rotations()

    def step_down_with(self, stop: Callable[[], None]) -> None:
        """How this process stops leading when another took the log's lock from it (D109):
        by default it ends itself with SIGTERM and uvicorn's supervisor (`--workers`) starts
        one in its place; a single `serve` has no supervisor, and ends its server with `stop`
        instead, to start again (D112). Believing itself its data directory's only process, it
        then removes its hand-over socket and pid file as a normal stop does, but only if they
        are still its own (a second single `serve` on the directory may have taken over, D120)."""
        if isinstance(self.sequencer, Handoff):
            self.sequencer.step_down = stop
            self.sequencer.alone = True

    @property
    def stepped_down(self) -> bool:
        """Whether this process led and another took the log's lock from it."""
        return isinstance(self.sequencer, Handoff) and self.sequencer.stepped_down

    def head(self, covering: int = 0) -> BlockRow | None:
        """The log's last block as far as this process can tell (D128): the one it knows,
        unless the database's newest must be read (one small read) because

        - it knows none, or none of at least `covering` leaves: a read names an entry or a
          tree size that another process has answered (under `serve --workers N` a process
          hears of a block a moment after it was committed), or that this process's
          sequencer committed and has not yet taken in;
        - it follows a sequencer it has not joined, or has lost (`Handoff.current`): what it
          knows may be far behind, and a checkpoint older than one already served would look
          like a rollback to a monitor.

        A size past the log's end costs that read, and is refused as before."""
        last = self.sequencer.state.last
        if last is not None and covering <= last.header.tree_size and self._current():
            return last
        newest = self.store.latest_block()
        if newest is not None and (last is None
                                   or newest.header.tree_size > last.header.tree_size):
            return newest
        return last

    def _current(self) -> bool:
        """Whether what this process knows is the log's head but for a moment."""
        return not isinstance(self.sequencer, Handoff) or self.sequencer.current

    def log_size(self, covering: int = 0) -> int:
        """The tree size of `head(covering)`: 0 while the log has no block."""
        last = self.head(covering)
        return last.header.tree_size if last is not None else 0

    def start_index(self) -> None:
        """Rebuild the near-duplicate index from the log in the background, then keep it
        reading what the log appends (D130); until it is built `index.ready` is false and
        claim checks say so."""
        threading.Thread(target=self.index.run,
                         args=(self.store, lambda: self.sequencer.state.size),
                         name="fp-index", daemon=True).start()

    def warm_reads(self) -> None:
        """Read the tree's upper levels into the proofs' cache in the background (one range
        read, ~11 ms at 10 M on PostgreSQL, D89), then the lower ones that fit (D148): serving
        does not wait for it, and a proof before it is done reads what it needs as before."""
        size = self.sequencer.state.size

        def warm() -> None:
            with contextlib.suppress(Exception):  # a head start only (a store closed meanwhile)
                self.store.warm_upper(size)
                self.store.warm_levels(size)

        threading.Thread(target=warm, name="proof-warm", daemon=True).start()

    def stop(self) -> None:
        with self._sealing, self._retry_guard:
            self._stopped = True
            if self._retry is not None:
                self._retry.cancel()
        self.cosigner.stop()
        self.external.stop()
        self.sequencer.stop()
        self.idempotency.stop()
        self.index.stop()
        self.store.close()


def _first(keys: set[str]) -> str:
    """The key D121's message names: a log key before a TSA certificate."""
    return min(keys, key=lambda k: (" certificate sha256:" in k, k))


def _tsa_name(which: str, der: bytes) -> str:
    """How D121 names a TSA certificate ("TSA" or "SM2 TSA"): by the SHA-256 of its DER."""
    return f"{which} certificate sha256:" + hashlib.sha256(der).hexdigest()


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()
