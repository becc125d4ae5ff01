"""Operator tasks on a data directory, with or without a server running on it: API keys,
accounts' display names, erasing a claimant's contact details, and the audit. The CLI's
`keys`, `accounts`, `claim erase-contact` and `audit` commands are thin adapters over these."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from copyledger.ledger.audit import AuditReport, AuditState, audit
from copyledger.ledger.errors import Conflict, CopyledgerError, InvalidInput, said
from copyledger.ledger.store import Store
from copyledger.service import accounts, apikeys, contacts
from copyledger.service.accounts import Profile
from copyledger.service.apikeys import KeyRow
from copyledger.service.node import all_sm2_keys, all_verifier_keys, open_store, tsa_roots_pem
from copyledger.service.rotation import retired_keys
from copyledger.service.settings import Settings


@contextmanager
def _store(s: Settings, current: bool = True) -> Iterator[Store]:
    """The registry's store; unless `current` is False (the audit, which reads any revision),
    refused when its schema is older than this release's."""
    store = open_store(s, current=current)
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


def forget_handoff_secret(s: Settings) -> str | None:
    """Forget the hosts' recorded hand-over secret check (D113), for a secret changed on every
    host; when the forgotten one had been recorded, or None if none was."""
    with _store(s) as store:
        return store.forget_handoff_secret()


def set_account(s: Settings, account: str, display_name: str, kind: str) -> Profile:
    """State who stands behind an account (`service.accounts.set_profile`)."""
    with _store(s) as store:
        return accounts.set_profile(store, account, display_name, kind)


def show_account(s: Settings, account: str) -> Profile:
    with _store(s) as store:
        return accounts.profile(store, account)


def erase_claim_contact(s: Settings, seq: int) -> dict[str, Any]:
    """Erase the contact details of the claim at `seq` (`service.contacts.erase`)."""
    with _store(s) as store:
        return contacts.erase(store, seq)


AUDIT_STATE = "audit-state.json"
"""Where, in the data directory, an audit that found nothing wrong leaves its end state."""


def audit_registry(
    s: Settings,
    on_start: Callable[[int], None] = lambda total: None,
    progress: Callable[[int], None] = lambda n: None,
    *,
    workers: int | None = None,
    incremental: bool = False,
) -> AuditReport:
    """Recompute every hash, node, block link, root, signature and token from the database,
    accepting every log key and TSA root the registry has held. `on_start` gets the number of
    entries to check, `progress` each batch checked. `workers` processes (default: one per
    CPU) share the checks. With `incremental`, resume from where the last clean audit of this
    data directory ended (everything, if there is none): the head it ended on must be
    unchanged, and only what came after is checked (D39). A clean audit saves its end."""
    keys, roots = all_verifier_keys(s), tsa_roots_pem(s)
    sm2_roots = None
    if s.sm_suite:  # its SM2 line is checked too (D40), and its SM2 tokens (D51)
        sm2_keys, sm2_roots = all_sm2_keys(s)
        keys += sm2_keys
    path = s.data_dir / AUDIT_STATE
    since = _load_state(path) if incremental else None
    with _store(s, current=False) as store:
        at = store.schema_at()
        on_start(store.tree_size() - (since.tree_size if since else 0))
        try:
            rep = audit(store, keys, progress=progress, tsa_roots_pem=roots,
                        workers=workers or os.cpu_count() or 1, since=since,
                        witness_keys=[vkey for _, vkey in s.witness_list],
                        sm2_tsa_roots_pem=sm2_roots,
                        sm2_tsa_retired=[(d["certificate_sm3"], d["retired_at"])
                                         for r in retired_keys(s)
                                         if (d := r.sm2_retirement()) is not None])
        except Exception:
            # The database may be what failed the audit: its error stands then.
            with suppress(*store.database_errors):
                _refuse_if_moved(store, at)
            raise
        _refuse_if_moved(store, at)
    if rep.state is not None:
        _save_state(path, rep.state)
    return rep


def _refuse_if_moved(store: Store, at: str | None) -> None:
    """Conflict if the schema was upgraded while the audit read (`at` is its revision
    before): what it and its workers read, they may have read in the schema's old form
    (revision 0012 changed the content hashes', D124), so its findings are not reported."""
    if store.schema_at() != at:
        raise Conflict(said("the database's schema was upgraded while the audit ran: run the "
                            "audit again"))


def _load_state(path: Path) -> AuditState | None:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return AuditState.from_dict(json.loads(raw))
    except (ValueError, CopyledgerError):
        raise InvalidInput(said("{path} is not an audit state; delete it to audit everything",
                                path=path)) \
            from None


def _save_state(path: Path, state: AuditState) -> None:
    """Write atomically, readable by the operator only."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(state.to_dict(), f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
