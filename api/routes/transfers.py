"""Creators: record assignments and licences of rights; anyone: read a work's chain of title."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, ConfigDict, Field

from copyledger.api import auth
from copyledger.api.deps import FastJSONResponse, append, json_body, registration_json, registry
from copyledger.api.models import RegistrationOut
from copyledger.api.registry import Registry
from copyledger.ledger import entry as entry_mod
from copyledger.ledger import jcs, merkle
from copyledger.ledger.errors import Forbidden, InvalidInput, NotFound
from copyledger.ledger.title import Title, chain_of_title

router = APIRouter(tags=["creators"])


class TransferIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{
            "work_seq": 0, "to": "harbour-press", "transfer_type": "exclusive_licence",
            "territory": "EU", "term_start": "2027-01-01T00:00:00Z",
            "term_end": "2032-01-01T00:00:00Z",
            "terms_sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        }]},
    )
    work_seq: int = Field(ge=0, description="seq of the registered work")
    to: str = Field(description="the receiving account")
    transfer_type: str = Field(description="assignment, exclusive_licence or non_exclusive_licence")
    territory: str = "worldwide"
    term_start: str | None = None
    term_end: str | None = None
    terms_sha256: str | None = Field(default=None, description="SHA-256 of the signed contract")
    note: str | None = None


def load_title(reg: Registry, work_seq: int) -> tuple[Title, dict[str, Any], list[Any]]:
    """The work, its transfers in log order, and the replayed chain of title."""
    row = reg.store.get_entry(work_seq)
    work = jcs.parse(row.data)
    assert isinstance(work, dict)
    if row.kind != "work":
        raise InvalidInput(f"work_seq: entry {work_seq} is a {row.kind}, not a work",
                           errors=[{"field": "work_seq", "message": "not a work"}])
    transfers = []
    for r in reg.store.search_sha256(row.sha256, limit=100_000):
        if r.kind == "transfer":
            t = jcs.parse(r.data)
            assert isinstance(t, dict)
            if t["work"]["seq"] == work_seq:
                transfers.append((r, t))
    title = chain_of_title(work_seq, work, [(r.seq, t) for r, t in transfers])
    return title, work, transfers


@router.post(
    "/v1/transfers",
    status_code=201,
    response_model=RegistrationOut,
    summary="Record a transfer of rights",
    description="Records an assignment or licence of rights in a registered work. Only the "
    "work's current holder (the registrant, or whoever it was last assigned to) may do this; "
    "anyone else gets 403 and nothing is written. Needs a creator key.",
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": TransferIn.model_json_schema()}}}},
)
async def record_transfer(request: Request) -> FastJSONResponse:
    who = auth.require(request, "creator")
    t = await json_body(request, TransferIn)
    reg = registry(request)
    locks: dict[int, asyncio.Lock] = request.app.state.transfer_locks
    # One transfer per work at a time, until sealed, so the holder check cannot race.
    async with locks.setdefault(t.work_seq, asyncio.Lock()):
        try:
            title, work, _ = load_title(reg, t.work_seq)
        except NotFound:
            raise InvalidInput(f"work_seq: no entry with seq {t.work_seq}",
                               errors=[{"field": "work_seq", "message": "no such entry"}]) from None
        if title.holder != who.account:
            raise Forbidden(f"only the current holder of work {t.work_seq} ({title.holder!r}) "
                            f"may transfer or license it, not {who.account!r}")
        entry = entry_mod.build_transfer(
            registrant=who.account, received_at=entry_mod.utc_now(), work_seq=t.work_seq,
            work_sha256=entry_mod.content_sha256(work), from_account=title.holder,
            to_account=t.to, transfer_type=t.transfer_type, territory=t.territory,
            term_start=t.term_start, term_end=t.term_end, terms_sha256=t.terms_sha256,
            note=t.note, check=False,
        )
        receipt, entry = await append(request, entry)
    return FastJSONResponse(registration_json(receipt, entry), status_code=201)


@router.get(
    "/v1/works/{seq}/history",
    summary="Chain of title",
    description="The work, every transfer recorded on it in log order, who held it after each, "
    "and for each link its inclusion proof to the latest signed checkpoint (included), so the "
    "chain can be checked link by link. Each link's full evidence bundle is at `bundle`.",
)
def history(request: Request, seq: int = Path(ge=0)) -> dict[str, Any]:
    reg = registry(request)
    title, _, transfers = load_title(reg, seq)
    last = reg.sequencer.state.last
    assert last is not None
    size = last.header.tree_size
    ids = [seq] + [r.seq for r, _ in transfers]
    proofs = merkle.inclusion_proofs(ids, size, reg.store)
    rows = [reg.store.get_entry(seq)] + [r for r, _ in transfers]
    links = [
        {
            "seq": r.seq,
            "kind": r.kind,
            "entry": jcs.parse(r.data),
            "leaf_hash": r.leaf_hash.hex(),
            "holder_after": _holder_after(title, r.seq),
            "proof": [h.hex() for h in p],
            "bundle": f"/v1/entries/{r.seq}/bundle",
        }
        for r, p in zip(rows, proofs, strict=True)
    ]
    return {
        "work_seq": seq,
        "registrant": title.registrant,
        "holder": title.holder,
        "licences": [{"seq": li.seq, "to": li.to_account, "transfer_type": li.transfer_type}
                     for li in title.licences],
        "tree_size": size,
        "root": last.header.tree_root.hex(),
        "checkpoint": last.checkpoint,
        "links": links,
    }


def _holder_after(title: Title, seq: int) -> str:
    holder = title.registrant
    for link in title.links:
        if link.seq <= seq:
            holder = link.holder_after
    return holder
