"""Keys that never leave an HSM: PKCS#11 signers for the log key and the TSA key.

A court trusts a signature more when the key could not have been copied. So keys are generated
inside the token as sensitive and non-extractable, and a key that the token would export is
refused at load time: only the token ever computes with it.

- `Pkcs11Ed25519Signer` is a notary.signer.Signer (CKM_EDDSA, pure Ed25519) for checkpoints.
- `Pkcs11EcdsaKey` is a notary.tsa.TsaKey (CKM_ECDSA on P-256 over a SHA-256 digest taken
  here, the raw r||s turned into DER) for RFC 3161 tokens.

Why one session and one lock:

- python-pkcs11 initialises a module with C_Initialize(NULL), which promises the module that no
  two threads call it at once. The sequencer signs from its thread while the API time-stamps
  from others, so every call into one module goes through that module's lock. A signature
  takes well under a millisecond in SoftHSM2, and a block is signed once, so the lock is cheap.
- PKCS#11 login state belongs to the whole process: a second C_Login on a logged-in token
  answers CKR_USER_ALREADY_LOGGED_IN whatever PIN it is given. So a process keeps one logged-in
  session per (module, token), shared by the keys in it, and checks every later PIN against the
  one that logged in rather than accept any PIN.
- A PKCS#11 session does not survive fork(): open tokens in the process that signs.
- A session can be lost under a running process (a network HSM restarted, a token reset): the
  next call logs in again, once, and each key finds its object again and signs a probe that its
  loaded public key must verify before it signs anything else (D207). Without that, a process
  answered 503 for every signature until it was restarted.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import pkcs11
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11 import exceptions as p11

from copyledger.ledger import note
from copyledger.ledger.errors import Conflict, CopyledgerError, InvalidInput, Unavailable, said

__all__ = [
    "Pkcs11EcdsaKey",
    "Pkcs11Ed25519Signer",
    "Pkcs11Token",
    "close_all",
    "open_token",
]

T = TypeVar("T")

# CKA_EC_PARAMS: the curve as an OID, or (PKCS#11 3.0, for Edwards curves) as a PrintableString.
_ED25519_OID = bytes.fromhex("06032b6570")  # 1.3.101.112, id-Ed25519
_ED25519_NAME = b"\x13\x0cedwards25519"
_P256_OID = bytes.fromhex("06082a8648ce3d030107")  # 1.2.840.10045.3.1.7, prime256v1
_PROBE = b"copyledger: does this private key match its public key?"

_registry_lock = threading.Lock()
_module_locks: dict[str, threading.RLock] = {}
_tokens: dict[tuple[str, str], Pkcs11Token] = {}
# What a token says when the session (or the objects found in it) is gone rather than the
# operation refused: log in again, and find the keys again.
_LOST = (p11.SessionHandleInvalid, p11.SessionClosed, p11.DeviceRemoved, p11.TokenNotPresent,
         p11.UserNotLoggedIn, p11.ObjectHandleInvalid, p11.KeyHandleInvalid)
_LOGIN_WAIT_S = (1.0, 30.0)  # after a failed login again: the first wait, at most (doubling)
log = logging.getLogger("copyledger.pkcs11")


class Pkcs11Token:
    """One logged-in session on one token; every call into it holds the module's lock."""

    def __init__(
        self, module: str, label: str, session: Any, lock: threading.RLock, pin: str
    ) -> None:
        self.module = module
        self.label = label
        self._session: Any = session  # pkcs11.Session; Any: its methods are loosely typed
        self._lock = lock
        # Kept to log in again after a lost session, as the process's environment keeps it.
        self._pin = pin
        self._closed = False
        self._refused: str | None = None  # why logging in again is no longer tried
        self._login_at, self._login_wait = 0.0, 0.0  # the next login's earliest time, backoff
        self._login_error = ""
        # Counts the logins after the first: a key's object belongs to the session it was
        # found in, so a key finds it again when this changes (`_TokenKey._object`).
        self.generation = 0

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"Pkcs11Token(module={self.module!r}, label={self.label!r}, {state})"

    def run(self, what: str, operation: Callable[[Any], T], *, again: bool = True) -> T:
        """operation(session) under the lock; a PKCS#11 failure becomes Unavailable. A lost
        session (`_LOST`) is logged in again and, with `again`, the operation tried once
        more (not one that may have changed the token before the loss: a key's making)."""
        with self._lock:
            if self._closed:
                raise Unavailable(said("the session on token {label!r} is closed",
                                       label=self.label))
            try:
                if self._session is None:  # lost before, and not back yet
                    self._login_again()
                try:
                    return operation(self._session)
                except _LOST as lost:
                    if not again:
                        self._drop()  # (logged in again at the next call)
                        raise
                    self._login_again(type(lost).__name__)
                    return operation(self._session)
            except CopyledgerError:
                raise
            except p11.PKCS11Error as exc:
                raise Unavailable(
                    said("HSM {what} failed on token {label!r}: {value}",
                         what=what, label=self.label, value=_describe(exc))
                ) from exc

    def _drop(self) -> None:
        """Forget a lost session, closing what is left of it (the lock is held)."""
        lost, self._session = self._session, None
        if lost is not None:
            with contextlib.suppress(p11.PKCS11Error):
                lost.close()

    def _login_again(self, cause: str = "lost before") -> None:
        """A new logged-in session in place of a lost one (the lock is held). A PIN the token
        refuses is not tried again: tokens lock a PIN after a few failed logins. Other
        failures (the token still away) are tried again after a wait that doubles."""
        self._drop()
        if self._refused is not None:
            raise Unavailable(self._refused)
        if time.monotonic() < self._login_at:
            raise Unavailable(self._login_error)
        try:
            self._session = _login(self.module, self.label, self._pin, again=True)
        except _PinRefused as e:
            self._refused = said(
                "the session on token {label!r} was lost, and the token refused this "
                "process's PIN when it logged in again ({error}); no more logins are tried, "
                "which would lock the PIN: restart the process with the token's PIN",
                label=self.label, error=e.detail)
            log.critical("%s", self._refused)
            raise Unavailable(self._refused) from None
        except CopyledgerError as e:
            lo, hi = _LOGIN_WAIT_S
            self._login_wait = min(hi, self._login_wait * 2) if self._login_wait else lo
            self._login_at = time.monotonic() + self._login_wait
            self._login_error = said("the session on token {label!r} was lost, and logging "
                                     "in again failed: {error}", label=self.label,
                                     error=e.detail)
            raise Unavailable(self._login_error) from None
        self._login_wait = 0.0
        self.generation += 1
        log.warning("the session on token %r was lost (%s); logged in again", self.label,
                    cause)

    def has_object(self, label: str) -> bool:
        """Whether any object (key, certificate, ...) in the token carries this label."""

        return self.run(said("object lookup"), lambda s: _has_label(s, label))

    def close(self) -> None:
        """Log out and close the session, for every key that shares it; idempotent."""
        with _registry_lock:
            if _tokens.get((self.module, self.label)) is self:
                del _tokens[(self.module, self.label)]
        with self._lock:
            session, self._session = self._session, None
            self._closed = True
            if session is not None:
                with contextlib.suppress(p11.PKCS11Error):  # the token went away already
                    session.close()


def open_token(module: str, token_label: str, pin: str) -> Pkcs11Token:
    """Log in to the token labelled token_label in a PKCS#11 module (a .so path).

    Opened once per process and shared: later calls with the same PIN get the same session.
    InvalidInput for a missing module, an unknown token or a wrong PIN; Unavailable if the
    module or token fails.
    """
    if not pin:
        raise InvalidInput(said("no PIN given for token {token_label!r}", token_label=token_label))
    path = Path(module)
    if not path.is_file():
        raise InvalidInput(said("no PKCS#11 module at {module}", module=module))
    module = os.path.realpath(path)
    with _registry_lock:
        token = _tokens.get((module, token_label))
        if token is not None:
            if not hmac.compare_digest(token._pin.encode(), pin.encode()):
                raise InvalidInput(said("wrong PIN for token {token_label!r}",
                                        token_label=token_label))
            return token
        lock = _module_locks.setdefault(module, threading.RLock())
        with lock:
            session = _login(module, token_label, pin)
        token = Pkcs11Token(module, token_label, session, lock, pin)
        _tokens[(module, token_label)] = token
        return token


def close_all() -> None:
    """Close every session this process opened and finalise the modules (tests, shutdown).

    A module re-reads its configuration when next opened: that is how tests point SoftHSM2 at
    a fresh token directory.
    """
    with _registry_lock:
        tokens = list(_tokens.values())
    for token in tokens:
        token.close()
    with _registry_lock:
        for module, lock in _module_locks.items():
            with lock, contextlib.suppress(p11.PKCS11Error, RuntimeError, OSError):
                pkcs11.lib(module).finalize()


def _custody(private_key: Any) -> dict[str, bool]:
    """The attributes that say where a private key has been (PKCS#11 4.9): generated in the
    token (local), never readable (always_sensitive) and never exportable (never_extractable)."""
    names = {
        "sensitive": Attribute.SENSITIVE,
        "extractable": Attribute.EXTRACTABLE,
        "always_sensitive": Attribute.ALWAYS_SENSITIVE,
        "never_extractable": Attribute.NEVER_EXTRACTABLE,
        "local": Attribute.LOCAL,
    }
    values = private_key.get_attributes(list(names.values()))
    return {name: bool(values.get(attr)) for name, attr in names.items()}


class _TokenKey(abc.ABC):
    """A key pair in a token, by label: its private object is the session's, found again
    after the token logged in again, and then trusted only once it signed a probe its public
    key, read at load, verifies: a token reset and filled again under the same label must not
    have this process sign with another key."""

    KEY_TYPE: ClassVar[KeyType]
    SIGNING: ClassVar[str]  # what `run` names in a failure
    token: Pkcs11Token
    key_label: str
    _private: Any
    _generation: int

    def _find(self) -> Any:
        """The public key object; sets the private one (at load)."""
        self._generation = self.token.generation
        self._private, public = self.token.run(
            said("key lookup"),
            lambda s: _find_pair(s, self.token.label, self.key_label, self.KEY_TYPE))
        return public

    def _object(self, session: Any) -> Any:
        """The private key object in `session` (under the token's lock)."""
        if self._generation == self.token.generation:
            return self._private
        where = said("key {label!r} in token {token_label!r}", label=self.key_label,
                     token_label=self.token.label)
        self._generation = -1  # (until the probe verifies: looked for again at each use)
        try:
            private, _ = _find_pair(session, self.token.label, self.key_label, self.KEY_TYPE)
            # The probe signs in this session, not through `run`: no second login inside.
            self._verify(self._signed(private, _PROBE), _PROBE)
        except (InvalidInput, InvalidSignature) as e:
            error = e.detail if isinstance(e, InvalidInput) else said(
                "the private and public keys labelled {label!r} are not one pair",
                label=self.key_label)
            raise Unavailable(said("{where} is not the key this process loaded, since the "
                                   "token's session was lost: {error}; it is looked for "
                                   "again at the next signature", where=where,
                                   error=error)) from None
        self._private, self._generation = private, self.token.generation
        return private

    def sign(self, data: bytes) -> bytes:
        """A signature over `data` by the key in the token."""
        return self.token.run(self.SIGNING, lambda s: self._signed(self._object(s), data))

    @abc.abstractmethod
    def _signed(self, private: Any, data: bytes) -> bytes:
        """`private`'s signature over `data`, as `sign` returns it (the lock is held)."""

    @abc.abstractmethod
    def _verify(self, signature: bytes, data: bytes) -> None:
        """InvalidSignature unless the public key read at load verifies `signature`."""


class Pkcs11Ed25519Signer(_TokenKey):
    """The log key in a token: a notary.signer.Signer whose private half never leaves it."""

    KEY_TYPE = KeyType.EC_EDWARDS
    SIGNING = said("Ed25519 signing")

    def __init__(self, name: str, token: Pkcs11Token, key_label: str) -> None:
        if not note.is_valid_key_name(name):
            raise InvalidInput(said("invalid key name {name!r}: no spaces, '+' or control "
                                    "characters",
                                    name=name))
        self.name = name
        self.token = token
        self.key_label = key_label
        public = self._find()
        self._public_key = token.run(said("key read"), lambda _s: _ed25519_point(public))
        _check(self._verify, self, key_label)

    def __repr__(self) -> str:
        key_id = note.key_id(self.name, self._public_key).hex()
        return f"Pkcs11Ed25519Signer(name={self.name!r}, label={self.key_label!r}, key_id={key_id})"

    @property
    def public_key(self) -> bytes:
        return self._public_key

    def custody(self) -> dict[str, bool]:
        """What the token says about the private key: sensitive, extractable, local, ..."""
        return self.token.run(said("attribute read"), lambda s: _custody(self._object(s)))

    def _signed(self, private: Any, data: bytes) -> bytes:
        return bytes(private.sign(data, mechanism=Mechanism.EDDSA))

    def _verify(self, signature: bytes, data: bytes) -> None:
        Ed25519PublicKey.from_public_bytes(self._public_key).verify(signature, data)

    @classmethod
    def generate(cls, name: str, token: Pkcs11Token, key_label: str) -> Pkcs11Ed25519Signer:
        """Create an Ed25519 key pair inside the token; Conflict if key_label is taken."""
        _generate(token, key_label, KeyType.EC_EDWARDS, _ED25519_OID)
        return cls(name, token, key_label)


class Pkcs11EcdsaKey(_TokenKey):
    """The TSA key in a token: a notary.tsa.TsaKey (ECDSA P-256 with SHA-256)."""

    digest_algorithm = "sha256"
    KEY_TYPE = KeyType.EC
    SIGNING = said("ECDSA signing")

    def __init__(self, token: Pkcs11Token, key_label: str) -> None:
        self.token = token
        self.key_label = key_label
        public = self._find()
        self._public_key = token.run(said("key read"), lambda _s: _p256_point(public, key_label))
        _check(self._verify, self, key_label)

    def __repr__(self) -> str:
        return f"Pkcs11EcdsaKey(token={self.token.label!r}, label={self.key_label!r})"

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public_key

    def custody(self) -> dict[str, bool]:
        """What the token says about the private key: sensitive, extractable, local, ..."""
        return self.token.run(said("attribute read"), lambda s: _custody(self._object(s)))

    def _signed(self, private: Any, data: bytes) -> bytes:
        """A DER ECDSA-Sig-Value over SHA-256(data): what a CMS SignerInfo carries."""
        digest = hashlib.sha256(data).digest()
        raw = bytes(private.sign(digest, mechanism=Mechanism.ECDSA))
        if len(raw) != 64:
            raise Unavailable(said("the HSM returned a {raw_len}-byte P-256 signature, not 64",
                                   raw_len=len(raw)))
        r, s = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
        return encode_dss_signature(r, s)

    def _verify(self, signature: bytes, data: bytes) -> None:
        self._public_key.verify(signature, data, ec.ECDSA(hashes.SHA256()))

    @classmethod
    def generate(cls, token: Pkcs11Token, key_label: str) -> Pkcs11EcdsaKey:
        """Create a P-256 key pair inside the token; Conflict if key_label is taken."""
        _generate(token, key_label, KeyType.EC, _P256_OID)
        return cls(token, key_label)


class _PinRefused(InvalidInput):
    """The token refused the PIN (wrong or locked): `_login_again` stops trying."""


def _login(module: str, token_label: str, pin: str, *, again: bool = False) -> Any:
    """A read-write session on the token, logged in as its user. `again`, after a lost
    session: if the process is logged in still (a session the token did not close holds the
    login, which is the application's, not a session's), a session without the PIN shares it."""
    try:
        lib = pkcs11.lib(module)
    except (RuntimeError, OSError) as exc:  # not a shared library, or no C_GetFunctionList
        raise InvalidInput(said("{module} is not a usable PKCS#11 module: {exc}",
                                module=module, exc=exc)) from None
    try:
        tokens = list(lib.get_tokens(token_label=token_label))
        if not tokens:
            labels = sorted(t.label for t in lib.get_tokens() if t.label)
            raise InvalidInput(
                said("no token labelled {token_label!r} in {module}; tokens: {value}",
                     token_label=token_label, module=module, value=labels or 'none')
            )
        if len(tokens) > 1:
            raise InvalidInput(said("{tokens_len} tokens are labelled {token_label!r} in {module}",
                                    tokens_len=len(tokens), token_label=token_label, module=module))
        if again:  # (a login that fails leaves its session open: python-pkcs11 0.10)
            session = tokens[0].open(rw=True)
            if next(iter(session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY})),
                    None) is not None:
                return session  # still logged in: private objects are visible
            session.close()  # (opened without a login: closed without a logout)
        return tokens[0].open(rw=True, user_pin=pin)
    except (p11.PinIncorrect, p11.PinInvalid, p11.PinLenRange):
        raise _PinRefused(said("wrong PIN for token {token_label!r}",
                               token_label=token_label)) from None
    except p11.PinLocked:
        raise _PinRefused(said("the user PIN of token {token_label!r} is locked",
                               token_label=token_label)) from None
    except p11.UserPinNotInitialized:  # (set up again after a reset, perhaps: not refused)
        raise InvalidInput(said("token {token_label!r} has no user PIN yet",
                                token_label=token_label)) from None
    except p11.UserAlreadyLoggedIn:
        raise Unavailable(
            said("token {token_label!r} is already logged in by other code in this process",
                 token_label=token_label)
        ) from None
    except p11.PKCS11Error as exc:
        raise Unavailable(said("cannot open token {token_label!r}: {value}",
                               token_label=token_label, value=_describe(exc))) from exc


def _find_pair(session: Any, token_label: str, label: str, key_type: KeyType) -> tuple[Any, Any]:
    """The private and public key objects labelled label, checked to be usable and unexportable."""
    where = said("key {label!r} in token {token_label!r}", label=label, token_label=token_label)
    pair = []
    classes = ((ObjectClass.PRIVATE_KEY, said("private")),
               (ObjectClass.PUBLIC_KEY, said("public")))
    for object_class, what in classes:
        found = list(session.get_objects({Attribute.CLASS: object_class, Attribute.LABEL: label}))
        if not found:
            raise InvalidInput(said("no {what} {where}", what=what, where=where))
        if len(found) > 1:
            raise InvalidInput(said("{found_len} {what} keys are labelled {label!r}; keep one",
                                    found_len=len(found), what=what, label=label))
        if found[0].key_type != key_type:
            kind = getattr(found[0].key_type, "name", found[0].key_type)
            raise InvalidInput(said("{where} has key type {kind}, not {name}",
                                    where=where, kind=kind, name=key_type.name))
        pair.append(found[0])
    private = pair[0]
    if private[Attribute.EXTRACTABLE] or not private[Attribute.SENSITIVE]:
        raise InvalidInput(
            said("{where} can be exported from the token; generate one inside it instead",
                 where=where)
        )
    return private, pair[1]


def _generate(token: Pkcs11Token, label: str, key_type: KeyType, ec_params: bytes) -> None:
    """Generate a signing key pair on the token: private sensitive, never extractable."""

    def generate(session: Any) -> None:
        if _has_label(session, label):  # (checked and made under one hold of the lock)
            raise Conflict(said("token {label!r} already holds {label2!r}; refusing to overwrite",
                                label=token.label, label2=label))
        session.generate_keypair(
            key_type,
            store=True,
            label=label,
            id=secrets.token_bytes(16),  # pairs the two halves for tools that match by CKA_ID
            capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
            public_template={Attribute.EC_PARAMS: ec_params, Attribute.PRIVATE: False},
            private_template={
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
                Attribute.PRIVATE: True,
            },
        )

    token.run(said("key generation"), generate, again=False)


def _has_label(session: Any, label: str) -> bool:
    """Whether any object (key, certificate, ...) in the token carries this label."""
    return next(iter(session.get_objects({Attribute.LABEL: label})), None) is not None


def _ed25519_point(public: Any) -> bytes:
    """The raw 32-byte key: PKCS#11 3.0 wraps CKA_EC_POINT in an OCTET STRING; some don't."""
    params = bytes(public[Attribute.EC_PARAMS])
    if params not in (_ED25519_OID, _ED25519_NAME):
        raise InvalidInput(said("key {label!r} is an Edwards key, but not on Ed25519",
                                label=public.label))
    point = bytes(public[Attribute.EC_POINT])
    if len(point) == 34 and point[:2] == b"\x04\x20":
        point = point[2:]
    if len(point) != 32:
        raise InvalidInput(said("key {label!r} has a {point_len}-byte Ed25519 point",
                                label=public.label, point_len=len(point)))
    return point


def _p256_point(public: Any, label: str) -> ec.EllipticCurvePublicKey:
    """The public key from CKA_EC_POINT (an uncompressed point, DER-wrapped or raw)."""
    if bytes(public[Attribute.EC_PARAMS]) != _P256_OID:
        raise InvalidInput(said("key {label!r} is not on P-256 (prime256v1)", label=label))
    point = bytes(public[Attribute.EC_POINT])
    if len(point) == 67 and point[:2] == b"\x04\x41":
        point = point[2:]
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except ValueError:
        raise InvalidInput(said("key {label!r} has an unreadable P-256 point",
                                label=label)) from None


def _check(verify: Callable[[bytes, bytes], None], key: Any, label: str) -> None:
    """Sign once and verify: two objects that share a label but not a key fail here, not later."""
    signature = key.sign(_PROBE)
    try:
        verify(signature, _PROBE)
    except InvalidSignature:
        raise InvalidInput(
            said("the private and public keys labelled {label!r} are not one pair", label=label)
        ) from None


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}{': ' + str(exc) if str(exc) else ''}"
