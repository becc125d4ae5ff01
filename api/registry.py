"""Opening a registry from its data directory: store, notary key, sequencer.

`copyledger init`, `serve`, `keys` and `audit` all come through here, so a data directory works
the same whether or not a server is running on it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from api.settings import Settings, write_config
from ledger.errors import InvalidInput, NotFound
from ledger.sequencer import Sequencer
from ledger.store import Store, make_engine, migrate
from notary.signer import FileSigner, Signer, sign_note, verifier_key


def _passphrase(s: Settings) -> bytes | None:
    v = os.environ.get(s.key_passphrase_env)
    return v.encode() if v else None


@dataclass(frozen=True)
class InitResult:
    created_key: bool
    verifier_key: str
    database_url: str


def init_data_dir(s: Settings) -> InitResult:
    """Create the data directory, its config, the notary key and the schema. Idempotent:
    an existing key is kept, never overwritten."""
    s.data_dir.mkdir(parents=True, exist_ok=True)
    if not s.config_path.exists():
        write_config(s)
    created = False
    if s.log_key_path.exists():
        signer = FileSigner.load(s.origin, s.log_key_path, _passphrase(s))
    else:
        s.log_key_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        signer = FileSigner.generate(s.origin, s.log_key_path, _passphrase(s))
        created = True
    vkey = verifier_key(signer)
    s.verifier_key_path.write_text(vkey + "\n")
    engine = make_engine(s.database_url)
    try:
        migrate(engine)
    finally:
        engine.dispose()
    return InitResult(created, vkey, s.database_url)


def load_signer(s: Settings) -> Signer:
    if not s.log_key_path.exists():
        raise NotFound(f"no notary key at {s.log_key_path}: run `copyledger init` first")
    return FileSigner.load(s.origin, s.log_key_path, _passphrase(s))


def read_verifier_key(s: Settings) -> str:
    p: Path = s.verifier_key_path
    if not p.exists():
        raise NotFound(f"no verifier key at {p}: run `copyledger init` first")
    return p.read_text().strip()


def open_store(s: Settings) -> Store:
    if not s.database and not (s.data_dir / "ledger.sqlite3").exists():
        raise NotFound(
            f"no registry in {s.data_dir}: run `copyledger init --data-dir {s.data_dir}`"
        )
    return Store.open(s.database_url)


class Registry:
    """A running registry: the store, the signer and the sequencer that seals blocks."""

    def __init__(self, settings: Settings, store: Store, signer: Signer) -> None:
        if signer.name != settings.origin:
            raise InvalidInput(f"key name {signer.name!r} != origin {settings.origin!r}")
        self.settings = settings
        self.store = store
        self.signer = signer
        self.origin = settings.origin
        self.verifier_key = verifier_key(signer)
        self.sequencer = Sequencer(
            store,
            lambda text: sign_note(text, [signer]),
            settings.origin,
            max_batch=settings.max_batch,
            linger=settings.linger_ms / 1000.0,
            heartbeat=settings.heartbeat_s,
        )

    @classmethod
    def open(cls, s: Settings) -> Registry:
        init_data_dir(s)
        return cls(s, Store.open(s.database_url), load_signer(s))

    def start(self) -> None:
        self.sequencer.start()

    def stop(self) -> None:
        self.sequencer.stop()
        self.store.close()
