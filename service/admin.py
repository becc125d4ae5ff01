"""Operator tasks on a data directory, with or without a server running on it: API keys,
erasing a claimant's contact details, and the full audit. The CLI's `keys`, `claim
erase-contact` and `audit` commands are thin adapters over these."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from copyledger.ledger.audit import AuditReport, audit
from copyledger.ledger.store import Store
from copyledger.service import apikeys, contacts
from copyledger.service.apikeys import KeyRow
from copyledger.service.node import all_verifier_keys, open_store, tsa_roots_pem
from copyledger.service.settings import Settings


@contextmanager
def _store(s: Settings) -> Iterator[Store]:
    store = open_store(s)
    try:
        yield store
    finally:
        store.close()


def create_key(s: Settings, role: str, account: str) -> tuple[str, KeyRow]:
    """Mint a key: the secret (shown once, never stored) and its row."""
    with _store(s) as store:
        return apikeys.create_key(store, role, account)


def list_keys(s: Settings, account: str | None = None) -> list[KeyRow]:
    with _store(s) as store:
        return apikeys.list_keys(store, account)


def revoke_key(s: Settings, key_id: int) -> KeyRow:
    """Revoke a key; running servers refuse it within `apikeys.RECHECK_S` seconds."""
    with _store(s) as store:
        return apikeys.revoke_key(store, key_id)


def erase_claim_contact(s: Settings, seq: int) -> dict[str, Any]:
    """Erase the contact details of the claim at `seq` (`service.contacts.erase`)."""
    with _store(s) as store:
        return contacts.erase(store, seq)


def audit_registry(
    s: Settings,
    on_start: Callable[[int], None] = lambda total: None,
    progress: Callable[[int], None] = lambda n: None,
) -> AuditReport:
    """Recompute every hash, node, block link, root, signature and token from the database,
    accepting every log key and TSA root the registry has held. `on_start` gets the number of
    entries to check, `progress` each batch checked."""
    keys, roots = all_verifier_keys(s), tsa_roots_pem(s)
    with _store(s) as store:
        on_start(store.tree_size())
        return audit(store, keys, progress=progress, tsa_roots_pem=roots)
