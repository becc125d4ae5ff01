"""Where the notary's keys live, decided once: PEM files in the data directory, or a PKCS#11 token.

`service.node` calls these and never asks which backend is in use, so `init`, `serve`, `keys`
and `audit` treat file keys and HSM keys alike. The token's user PIN is read from an environment
variable, never from a config file, so it is not written to disk with the settings.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from copyledger.ledger.errors import InvalidInput, said
from copyledger.notary.pkcs11 import Pkcs11EcdsaKey, Pkcs11Ed25519Signer, Pkcs11Token, open_token
from copyledger.notary.signer import FileSigner, Signer
from copyledger.notary.tsa import (
    TSA_CERT_FILE,
    TsaChainPaths,
    TsaIdentity,
    TsaKey,
    create_tsa_chain,
    load_tsa,
    set_aside_unfinished,
)

__all__ = [
    "BACKENDS",
    "KeyConfig",
    "init_log_signer",
    "init_tsa_chain",
    "load_log_signer",
    "load_tsa_identity",
    "load_tsa_key",
    "open_configured_token",
]

BACKENDS = ("file", "pkcs11")


@dataclass(frozen=True)
class KeyConfig:
    """Key custody settings. With backend "pkcs11", module and token_label are required."""

    backend: str = "file"
    pkcs11_module: str | None = None
    token_label: str | None = None
    pin_env: str = "COPYLEDGER_HSM_PIN"
    log_key_label: str = "copyledger-log"
    tsa_key_label: str = "copyledger-tsa"

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise InvalidInput(said("key backend {backend!r} is not one of {backends}",
                                    backend=self.backend, backends=', '.join(BACKENDS)))
        if self.backend == "pkcs11" and not (self.pkcs11_module and self.token_label):
            raise InvalidInput("the pkcs11 key backend needs a PKCS#11 module and a token label")
        if self.log_key_label == self.tsa_key_label:
            raise InvalidInput("the log key and the TSA key need different labels")


def open_configured_token(config: KeyConfig) -> Pkcs11Token:
    """The configured token, logged in with the PIN from config.pin_env (shared per process)."""
    if config.backend != "pkcs11" or not config.pkcs11_module or not config.token_label:
        raise InvalidInput("no PKCS#11 token is configured")
    pin = os.environ.get(config.pin_env)
    if not pin:
        raise InvalidInput(said("set {pin_env} to the user PIN of token {token_label!r}",
                                pin_env=config.pin_env, token_label=config.token_label))
    return open_token(config.pkcs11_module, config.token_label, pin)


def load_log_signer(
    config: KeyConfig, name: str, key_path: Path, passphrase: bytes | None = None
) -> Signer:
    """The log key: the PEM file at key_path, or the token's key labelled log_key_label."""
    if config.backend == "file":
        return FileSigner.load(name, key_path, passphrase)
    return Pkcs11Ed25519Signer(name, open_configured_token(config), config.log_key_label)


def log_key_name(config: KeyConfig, key_path: Path) -> str:
    """Where the log key lives, as a refusal names it: its file, or its label in the token."""
    if config.backend == "file":
        return str(key_path)
    return f"the log key {config.log_key_label!r} in PKCS#11 token {config.token_label!r}"


def has_log_key(config: KeyConfig, key_path: Path) -> bool:
    """Whether the log key is there: what a start checks before `init_log_signer`, which
    would make a missing one."""
    if config.backend == "file":
        return Path(key_path).exists()
    return open_configured_token(config).has_object(config.log_key_label)


def init_log_signer(
    config: KeyConfig, name: str, key_path: Path, passphrase: bytes | None = None
) -> tuple[Signer, bool]:
    """The log key, created if there is none yet; (signer, created). Never replaces a key."""
    if config.backend == "file":
        if Path(key_path).exists():
            return FileSigner.load(name, key_path, passphrase), False
        Path(key_path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        return FileSigner.generate(name, key_path, passphrase), True
    token = open_configured_token(config)
    if token.has_object(config.log_key_label):
        return Pkcs11Ed25519Signer(name, token, config.log_key_label), False
    return Pkcs11Ed25519Signer.generate(name, token, config.log_key_label), True


def load_tsa_key(config: KeyConfig) -> TsaKey | None:
    """The TSA key in the token, or None for the file backend (tsa-key.pem in the TSA dir)."""
    if config.backend == "file":
        return None
    return Pkcs11EcdsaKey(open_configured_token(config), config.tsa_key_label)


def load_tsa_identity(
    config: KeyConfig, tsa_dir: Path, passphrase: bytes | None = None
) -> TsaIdentity:
    """The TSA chain in tsa_dir, with its key from the file beside it or from the token."""
    return load_tsa(tsa_dir, passphrase, tsa_key=load_tsa_key(config))


def init_tsa_chain(
    config: KeyConfig, tsa_dir: Path, name: str, passphrase: bytes | None = None
) -> bool:
    """Create the TSA chain in tsa_dir unless it exists; with pkcs11 the TSA key is generated
    in the token (or reused, if an earlier init made it and stopped), and what a stopped
    creation left in tsa_dir is set aside first. True if created."""
    if (Path(tsa_dir) / TSA_CERT_FILE).exists():
        return False
    Path(tsa_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
    set_aside_unfinished(TsaChainPaths.in_directory(tsa_dir))
    tsa_key: TsaKey | None = None
    if config.backend == "pkcs11":
        token = open_configured_token(config)
        label = config.tsa_key_label
        exists = token.has_object(label)
        tsa_key = Pkcs11EcdsaKey(token, label) if exists else Pkcs11EcdsaKey.generate(token, label)
    create_tsa_chain(tsa_dir, name, passphrase=passphrase, tsa_key=tsa_key)
    return True
