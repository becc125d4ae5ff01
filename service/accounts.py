"""Who stands behind an account id: a display name and a kind, as the operator states them.

Entries record only an account id (`registrant`, `holder`); a judge or a platform wants the
person or organisation. An administrator sets a profile per account (`copyledger accounts
set`, `PUT /v1/accounts/{account}`); certificates and pages show it beside the id, marked as
the operator's statement: it is not in the log, nothing signs it, and it may change (D50).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import select

from copyledger.ledger.entry import utc_now, valid_registrant
from copyledger.ledger.errors import InvalidInput, NotFound, said
from copyledger.ledger.schema import accounts
from copyledger.ledger.store import Store
from copyledger.service.i18n import DEFAULT, gettext

__all__ = ["KINDS", "MAX_NAME", "Profile", "beside", "get_profile", "profile", "set_profile"]

KINDS = ("person", "organisation")
MAX_NAME = 200
KIND_WORDS = {"person": "natural person", "organisation": "organisation"}  # msgids
STATEMENT = ("{name} ({kind}), account {account}: the registry operator's statement, not "
             "signed by the log")  # a msgid: how pages and certificates show a profile


def beside(account: str, profile: Mapping[str, str] | None, lang: str = DEFAULT) -> str:
    """The account id as a reader sees it: with the operator's statement of who it is, marked
    as such, when there is one; the bare id otherwise."""
    if not profile or not profile.get("display_name"):
        return account
    kind = str(profile.get("kind", ""))
    return gettext(lang, STATEMENT).format(name=profile["display_name"], account=account,
                                           kind=gettext(lang, KIND_WORDS.get(kind, kind)))


@dataclass(frozen=True)
class Profile:
    """An account's display name and kind (natural person or organisation)."""

    account: str
    display_name: str
    kind: str
    updated_at: str

    def to_dict(self) -> dict[str, str]:
        return {"account": self.account, "display_name": self.display_name,
                "kind": self.kind, "updated_at": self.updated_at}


def _check(account: str, display_name: str, kind: str) -> str:
    if not valid_registrant(account):
        raise InvalidInput("account must be 1-64 characters from A-Z, a-z, 0-9, '.', '_', '-'")
    if kind not in KINDS:
        raise InvalidInput(said("kind must be one of {kinds}, not {kind}", kinds=", ".join(KINDS),
                                kind=repr(kind)))
    name = unicodedata.normalize("NFC", display_name).strip()
    if not name or len(name) > MAX_NAME:
        raise InvalidInput(said("display_name must be 1-{MAX_NAME} characters", MAX_NAME=MAX_NAME))
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in name):
        raise InvalidInput("display_name must not contain control or formatting characters")
    return name


def set_profile(store: Store, account: str, display_name: str, kind: str) -> Profile:
    """Set (or replace) an account's profile; the account need not have a key yet."""
    name = _check(account, display_name, kind)
    row = Profile(account, name, kind, utc_now())
    with store.engine.begin() as conn:
        conn.execute(accounts.delete().where(accounts.c.account == account))
        conn.execute(accounts.insert().values(**row.to_dict()))
    return row


def get_profile(store: Store, account: str) -> Profile | None:
    """The account's profile, or None when the operator has stated none."""
    if not valid_registrant(account):
        return None
    with store.engine.connect() as conn:
        r = conn.execute(select(accounts).where(accounts.c.account == account)).first()
    return None if r is None else Profile(r.account, r.display_name, r.kind, r.updated_at)


def profile(store: Store, account: str) -> Profile:
    """The account's profile; NotFound when there is none."""
    p = get_profile(store, account)
    if p is None:
        raise NotFound(said("no profile for account {account}", account=repr(account)))
    return p
