"""Key custody behind a small interface.

The sequencer and the API only ever see a `Signer`: a name and a way to sign bytes. Whether the
key sits in a PEM file or in an HSM (PKCS#11, a later step) is decided here and nowhere else,
and the private key never leaves its holder. What a notary agrees to sign (`check_signable`,
`CheckpointGuard`) is decided beside it.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import secrets
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, TypeVar, runtime_checkable

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from copyledger.ledger import claims, note
from copyledger.ledger.errors import Conflict, CopyledgerError, InvalidInput, ProofError, said
from copyledger.ledger.merkle import Consistency

__all__ = [
    "CheckpointGuard",
    "ExtraSigner",
    "FileSigner",
    "Signer",
    "check_signable",
    "sign_note",
    "verifier_key",
]


@runtime_checkable
class Signer(Protocol):
    """An Ed25519 key whose name is the log origin; what the notary needs and nothing more."""

    name: str

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte Ed25519 public key."""
        ...

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of message."""
        ...


@runtime_checkable
class ExtraSigner(Protocol):
    """A key of another algorithm (the SM suite's SM2 key, D40) that adds its own signature
    line, under its own key name and ID, which C2SP verifiers without the key ignore."""

    name: str
    key_id: bytes

    def sign(self, message: bytes) -> bytes:
        """The signature of message, in the algorithm's own encoding."""
        ...


def verifier_key(signer: Signer) -> str:
    """The signer's vkey in Go `note` format, for publishing at /v1/log."""
    return note.format_verifier_key(signer.name, signer.public_key)


def sign_note(text: str, signers: Sequence[Signer | ExtraSigner]) -> str:
    """Sign note text with each signer and return the whole signed note."""
    note.check_text(text)
    message = note.signature_message(text)
    signatures = []
    for signer in signers:
        if isinstance(signer, ExtraSigner):
            signatures.append(note.Signature(signer.name, signer.key_id, signer.sign(message)))
            continue
        public_key = signer.public_key
        signature = signer.sign(message)
        if len(signature) != 64:
            raise InvalidInput(said("signer {name} returned a {signature_len}-byte signature",
                                    name=signer.name, signature_len=len(signature)))
        signatures.append(
            note.Signature(signer.name, note.key_id(signer.name, public_key), signature)
        )
    return note.format_note(text, signatures)


class FileSigner:
    """An Ed25519 key held in memory, loaded from (or generated into) a PKCS#8 PEM file."""

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        if not note.is_valid_key_name(name):
            raise InvalidInput(said("invalid key name {name!r}: no spaces, '+' or control "
                                    "characters",
                                    name=name))
        self.name = name
        self._private_key = private_key
        self._public_key = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    def __repr__(self) -> str:
        key_id = note.key_id(self.name, self._public_key).hex()
        return f"FileSigner(name={self.name!r}, key_id={key_id})"

    @property
    def public_key(self) -> bytes:
        return self._public_key

    def sign(self, message: bytes) -> bytes:
        return self._private_key.sign(message)

    @classmethod
    def generate(cls, name: str, path: Path, passphrase: bytes | None = None) -> FileSigner:
        """Create a new key at path, readable by the owner only; never overwrites a key.

        The file is created with O_EXCL and mode 0600 before any key byte is written, so the
        key is never readable by others, not even for a moment, and an existing key (and the
        log signed with it) cannot be clobbered.
        """
        signer = cls(name, Ed25519PrivateKey.generate())
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(passphrase)
            if passphrase
            else serialization.NoEncryption()
        )
        pem = signer._private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )
        _write_new_private_file(Path(path), pem)
        return signer

    @classmethod
    def load(cls, name: str, path: Path, passphrase: bytes | None = None) -> FileSigner:
        """Load a PKCS#8 PEM Ed25519 key, with a clear error for each way that can fail."""
        path = Path(path)
        try:
            pem = path.read_bytes()
        except FileNotFoundError:
            raise InvalidInput(said("no key file at {path}", path=path)) from None
        except OSError as exc:
            raise InvalidInput(said("cannot read key file {path}: {strerror}",
                                    path=path, strerror=exc.strerror)) from None
        key = load_private_pem(pem, passphrase, said("key file {path}", path=path))
        if not isinstance(key, Ed25519PrivateKey):
            raise InvalidInput(
                said("key file {path} holds a {name}, not an Ed25519 private key",
                     path=path, name=type(key).__name__)
            )
        return cls(name, key)


def load_private_pem(pem: bytes, passphrase: bytes | None, what: str) -> PrivateKeyTypes:
    """A PEM private key, with one clear message for each way loading can fail."""
    encrypted = b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in pem or b"Proc-Type: 4,ENCRYPTED" in pem
    if encrypted and not passphrase:
        raise InvalidInput(said("{what} is encrypted: a passphrase is needed", what=what))
    if not encrypted and passphrase:
        raise InvalidInput(said("{what} is not encrypted, but a passphrase was given", what=what))
    try:
        return serialization.load_pem_private_key(pem, password=passphrase or None)
    except ValueError:
        reason = (said("wrong passphrase or corrupt key") if encrypted
                  else said("not a PEM private key"))
        raise InvalidInput(said("cannot load {what}: {reason}", what=what, reason=reason)) from None
    except TypeError as exc:  # passphrase given or missing, in a form we did not spot
        raise InvalidInput(said("cannot load {what}: {exc}", what=what, exc=exc)) from None
    except UnsupportedAlgorithm:
        raise InvalidInput(said("cannot load {what}: unsupported key type", what=what)) from None


def _write_new_private_file(path: Path, data: bytes) -> None:
    """Write data to a new file with mode 0600; Conflict if it exists; no partial file left."""
    write_new_file(path, data, 0o600)


def write_new_file(path: Path, data: bytes, mode: int) -> None:
    """Write data to a new file with exactly `mode`, durably; Conflict if the file exists.
    The file appears whole or not at all, even if the process is killed while writing: the
    bytes go to a temporary file first, synced, then linked under the name (a link fails
    where the name exists, so nothing is overwritten). A kill leaves at most a stray
    `.<name>.*.tmp`, never a partial key under the name (D198)."""
    if path.exists():
        raise _exists(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        fd = os.open(tmp, flags, mode)
    except OSError as exc:
        raise InvalidInput(said("cannot create {path}: {strerror}",
                                path=path, strerror=exc.strerror)) from None
    try:
        _write_synced(fd, data, mode)
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise _exists(path) from None
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP):
                raise InvalidInput(said("cannot create {path}: {strerror}",
                                        path=path, strerror=exc.strerror)) from None
            if path.exists():  # a file system without hard links: a rename, checked first
                raise _exists(path) from None
            os.rename(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


_STRAY = re.compile(r"\..+\.[0-9a-f]{16}\.tmp")  # `write_new_file`'s temporary names

log = logging.getLogger(__name__)


def remove_stray_writes(directory: Path) -> None:
    """Delete what killed `write_new_file` calls left in `directory` (`.<name>.<16 hex>.tmp`,
    a private key's copy among them): never linked under a name, so never used. Only for a
    directory whose writers are all stopped or hold its lock (a data directory's `notary/`
    under `keys_lock`): another's file being written would go too."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return
    for name in names:
        if _STRAY.fullmatch(name):
            (directory / name).unlink(missing_ok=True)
            log.warning("removed %s: left by a key write that was stopped (never used)",
                        directory / name)


def _exists(path: Path) -> Conflict:
    return Conflict(said("{path} already exists; refusing to overwrite it", path=path))


def replace_file(path: Path, data: bytes, mode: int) -> None:
    """Replace path's content with data atomically and durably: a crash leaves the old
    content or the new, never a mix, and the new is on disk when this returns."""
    tmp = path.with_name(path.name + ".tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
    _write_synced(os.open(tmp, flags, mode), data, mode)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _write_synced(fd: int, data: bytes, mode: int) -> None:
    """Give the open file exactly `mode` (the umask may only have narrowed it), write all of
    data, sync it to disk, and close it."""
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory: Path) -> None:
    """Make the renames and new names in `directory` durable (they are the directory's data),
    so a crash cannot lose a key already in use or undo a recorded rotation. Best effort
    where the file system cannot sync a directory."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems cannot fsync a directory: best effort there
        return
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------
# What a notary signs: checkpoints, block notes and claim-check answers of its own log, and
# a checkpoint only if it extends the last one signed (D18).

T = TypeVar("T")


def check_signable(message: bytes, origin: str) -> str:
    """The notary signs checkpoints, block notes and claim-check answers of its own log,
    nothing else."""
    try:
        text = message.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("refused: not UTF-8 note text") from None
    readers: tuple[tuple[str, Callable[[str], str]], ...] = (
        ("checkpoint", lambda t: note.parse_checkpoint(t).origin),
        ("block note", lambda t: note.parse_block_note_text(t)[0]),
        ("claim-check answer", lambda t: claims.parse_check_note_text(t)[0]),
    )
    for what, origin_of in readers:
        try:
            if origin_of(text) == origin:
                return what
        except CopyledgerError:
            continue
    raise InvalidInput(said("refused: only checkpoints, block notes and claim-check answers of "
                            "{origin} are signed",
                            origin=origin))


class CheckpointGuard:
    """The last checkpoint signed for one origin, and the rule that the next one extends it:
    no smaller tree, no other root for the same size, and a bigger tree only with a valid
    consistency proof from the last one. The memory is per origin, not per key, because it is
    the log that must not fork: a rotated key continues the same tree.

    With a `path` the memory is durable (the stand-alone notary): `sign` writes it, with fsync
    and an atomic rename, before the signature is returned. Without one it lives in memory and
    the caller says what to remember (the in-process notary remembers what the log committed).
    """

    def __init__(self, origin: str, path: Path | None = None) -> None:
        self.origin = origin
        self.path = path
        self.last: note.Checkpoint | None = None
        self._lock = threading.Lock()
        if path is not None and path.exists():
            self.last = self._read(path)

    def _read(self, path: Path) -> note.Checkpoint:
        try:
            cp = note.parse_checkpoint(path.read_text("utf-8"))
        except (OSError, UnicodeDecodeError, InvalidInput) as e:
            raise InvalidInput(said("cannot read the last signed checkpoint at {path}: {e}",
                                    path=path, e=e)) from None
        if cp.origin != self.origin:
            raise InvalidInput(said("{path} is a checkpoint of {origin!r}, not {origin2!r}",
                                    path=path, origin=cp.origin, origin2=self.origin))
        return cp

    def admit(self, new: note.Checkpoint, consistency: Consistency | None) -> None:
        """Conflict (or InvalidInput, for a missing proof) unless `new` may be signed."""
        last = self.last
        if new.origin != self.origin:
            raise InvalidInput(said("refused: a checkpoint of {origin}, not {origin2}",
                                    origin=new.origin, origin2=self.origin))
        if last is not None:
            if new.size < last.size:
                raise Conflict(said("refused: tree size {size} is smaller than {size2}, the last "
                                    "checkpoint signed",
                                    size=new.size, size2=last.size))
            if new.size == last.size and new.root != last.root:
                raise Conflict(said("refused: tree size {size} was signed with another root",
                                    size=new.size))
            if consistency is None:
                if new.size == last.size:
                    return  # the same tree again: nothing to prove
                raise InvalidInput(said("refused: a tree bigger than the last one signed (size "
                                        "{size}) needs a consistency proof from it",
                                        size=last.size))
            if (consistency.old_size, consistency.old_root) != (last.size, last.root):
                raise Conflict(said("refused: the consistency proof starts from tree size "
                                    "{old_size}, but the last checkpoint signed is size {size}, "
                                    "root {value}",
                                    old_size=consistency.old_size, size=last.size,
                                    value=last.root.hex()))
        if consistency is not None:  # with no memory yet, a proof given is still checked
            try:
                consistency.verify(new.size, new.root)
            except ProofError as e:
                raise Conflict(said("refused: the consistency proof does not hold: {e}",
                                    e=e)) from None

    def remember(self, cp: note.Checkpoint) -> None:
        """Make `cp` the last checkpoint signed (durably, with a path)."""
        if self.path is not None:
            replace_file(self.path, note.format_checkpoint(cp).encode(), 0o600)
        self.last = cp

    def sign(self, new: note.Checkpoint, consistency: Consistency | None,
             sign: Callable[[], T]) -> T:
        """Admit `new`, sign it, and remember it before the signature is returned."""
        with self._lock:
            self.admit(new, consistency)
            signature = sign()
            self.remember(new)
            return signature
