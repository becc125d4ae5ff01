"""Claimants' contact details: kept off the log, shown to whom filed the claim, erasable (D32).

A claim is checked as it was given, contact details and all (the regimes require them), then
logged with a salted commitment in their place (`ledger.contact`); the details and the salt go
to the erasable `claim_contacts` table. Only the platform account that filed the claim and
admins may read them back; erasing them leaves the log, its proofs and the audit untouched.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from copyledger.ledger import entry as entry_mod
from copyledger.ledger import jcs, merkle
from copyledger.ledger.contact import CONTACT_FIELDS, Disclosure, seal, split
from copyledger.ledger.errors import Forbidden, InvalidInput, NotFound, said
from copyledger.ledger.store import Store
from copyledger.service.apikeys import Principal

_SET_BY_REGISTRY = ("contact_fields", "contact_commitment")

log = logging.getLogger("copyledger.contacts")


def seal_claim(store: Store, entry: dict[str, Any]) -> dict[str, Any]:
    """The claim as it may be logged: checked as given (every rule, the regime's included),
    then its claimant's contact details replaced by a commitment and kept in the erasable table.
    Raises InvalidInput, keeping nothing, if the claim is not valid."""
    claimant = entry.get("claimant")
    if isinstance(claimant, dict):
        given = [k for k in _SET_BY_REGISTRY if k in claimant]
        if given:
            raise InvalidInput(
                said("claimant.{field}: set by the registry, not by the client", field=given[0]),
                errors=[{"field": f"claimant.{k}", "message": "set by the registry"}
                        for k in given])
    entry_mod.validate(entry)
    assert isinstance(claimant, dict)  # validated
    public, contact = split(claimant)
    if not contact:
        return entry
    salt, commitment = seal(contact)
    public["contact_fields"] = [k for k in CONTACT_FIELDS if k in contact]
    public["contact_commitment"] = commitment
    logged = {**entry, "claimant": public}
    entry_mod.encode(logged, new=True)  # the logged form is valid too (size, rules) ...
    # ... so a row is kept only for a claim about to be logged.
    store.put_contact(commitment, salt, jcs.canonicalize(contact).decode(), entry_mod.utc_now())
    return logged


FORGET_AFTER_S = 60.0
"""How long after a claim's write of unknown fate its details are kept before the check that
forgets them unless the claim was logged (`forget_later`): time for an entry still queued, or
a COMMIT still in flight, to be sealed, as a claim taken over from a dead process waits (D69)."""


def forget_later(store: Store, logged: dict[str, Any]) -> None:
    """After a write whose fate is unknown (`Uncertain`: the entry may still be sealed): keep
    the details now, and forget them `FORGET_AFTER_S` later unless the claim was logged by
    then (D135). Forgetting at once could erase what a claim sealed a moment later commits to;
    never forgetting would leave details no claim commits to, which no erasure by seq can
    reach. Called on the event loop: the check waits among its timers (no thread while it
    waits) and runs on its default executor; a process that stops before a check leaves its
    details (never shown)."""
    loop = asyncio.get_running_loop()
    loop.call_later(FORGET_AFTER_S, _check_now, loop, store, logged)


def _check_now(loop: asyncio.AbstractEventLoop, store: Store, logged: dict[str, Any]) -> None:
    """`forget_later`'s check, once due, off the loop; a store closed meanwhile is let be (its
    process is stopping)."""
    if not store.closed:
        loop.run_in_executor(None, forget_unless_logged, store, logged)


def forget_unless_logged(store: Store, logged: dict[str, Any]) -> None:
    """After a failed write: erase the details kept for `logged` unless the claim is in the log
    after all (a failure after the commit, D13). If even that cannot be told, keep them: they
    are never shown unless a logged claim commits to them."""
    claimant = logged.get("claimant")
    found = claimant.get("contact_commitment") if isinstance(claimant, dict) else None
    if not isinstance(found, str):
        return
    try:
        data = entry_mod.canonical_bytes(logged)
        if not store.holds_leaf(entry_mod.content_sha256(logged), merkle.leaf_hash(data)):
            store.delete_contact(found)
    except Exception:  # best effort, while the write path is failing already
        log.warning("could not tell whether a claim whose write failed was logged; its "
                    "contact details are kept (never shown unless a logged claim commits to "
                    "them)", exc_info=True)


def _commitment(store: Store, seq: int) -> tuple[str, str | None]:
    """The filing account of the claim at `seq`, and its contact commitment (None if the claim
    was logged with none: before D32, or without contact details)."""
    row = store.get_entry(seq)
    if row.kind != "claim":
        raise NotFound(said("entry {seq} is a {kind}, not a claim", seq=seq, kind=row.kind))
    claim = jcs.parse(row.data)
    assert isinstance(claim, dict) and isinstance(claim.get("claimant"), dict)
    found = claim["claimant"].get("contact_commitment")
    return row.registrant, found if isinstance(found, str) else None


def may_see(who: Principal, filed_by: str) -> bool:
    """Contact details are for the platform account that filed the claim, and admins."""
    return who.role == "admin" or (who.role == "platform" and who.account == filed_by)


def disclose(store: Store, who: Principal, seq: int) -> Disclosure:
    """The contact details of the claim at `seq`, with the salt that opens its commitment."""
    filed_by, commitment = _commitment(store, seq)
    if not may_see(who, filed_by):
        raise Forbidden(said("only the platform account that filed claim {seq} and admins "
                             "may see its claimant's contact details", seq=seq))
    if commitment is None:
        raise NotFound(said("claim {seq} has no contact details kept off the log (none "
                            "were given, or it was logged before they were)", seq=seq))
    kept = store.get_contact(commitment)
    if kept is None:
        raise NotFound(said("the contact details of claim {seq} were erased", seq=seq))
    salt, contact = kept
    return Disclosure(seq, salt, json.loads(contact), commitment)


def erase(store: Store, seq: int) -> dict[str, Any]:
    """Erase the contact details of the claim at `seq` (an admin's act). The commitment stays
    in the log, which stays verifiable; without the salt it proves nothing about anyone."""
    _, commitment = _commitment(store, seq)
    if commitment is None:
        raise NotFound(said("claim {seq} has no contact details kept off the log (none "
                            "were given, or it was logged before they were: the log "
                            "cannot be changed)", seq=seq))
    if not store.delete_contact(commitment):
        raise NotFound(said("the contact details of claim {seq} were already erased", seq=seq))
    return {"seq": seq, "erased": True, "commitment": commitment}
