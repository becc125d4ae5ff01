"""Platforms: record takedown notices and counter-notices, and check a claim against the
registry: who registered the work, first, and does the disputed content match it."""

from __future__ import annotations

import hashlib
from typing import Any

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from copyledger.api import auth
from copyledger.api.deps import FastJSONResponse, append, json_body, registration_json, registry
from copyledger.api.models import RegistrationOut
from copyledger.api.registry import Registry
from copyledger.api.routes.transfers import load_title
from copyledger.api.routes.works import MAX_FINGERPRINT_BYTES
from copyledger.ledger import claims as claims_mod
from copyledger.ledger import entry as entry_mod
from copyledger.ledger import fingerprint as fp
from copyledger.ledger import jcs
from copyledger.ledger.errors import InvalidInput, NotFound
from copyledger.ledger.store import EntryRow
from copyledger.matching import fingerprints_for
from copyledger.notary.signer import sign_note

router = APIRouter(tags=["platforms"])

CAVEATS = [
    "The registry proves who registered which content and when, as the operator authenticated "
    "them; it does not prove ownership of copyright.",
    "An earlier registration by someone else is evidence of priority, not of infringement.",
    "Perceptual hashes (PDQ, pHash, MinHash) survive re-encoding, resizing, recolouring and "
    "light edits, but not heavy crops, overlays, mirroring or re-composition; a 'none' verdict "
    "does not prove the content is different.",
    "Fingerprints supplied by a client are taken as given; upload the file to have them "
    "computed by the server.",
]


class ClaimIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "notice_type": "notice", "regime": "dmca_512c3",
        "claimant": {"name": "Ada Example", "email": "ada@example.org", "phone": "+1 555 0100",
                     "address": "1 Harbour St, Springfield", "authority": "owner",
                     "account": "ada"},
        "works": [{"seq": 0}],
        "targets": [{"url": "https://video.example/watch/123"}],
        "statements": {"good_faith": True, "accuracy": True, "perjury": True},
        "requested_action": "remove", "signature": "/Ada Example/",
    }]})
    notice_type: str = "notice"
    regime: str
    refers_to: int | None = Field(default=None, description="a counter-notice's claim seq")
    claimant: dict[str, Any]
    works: list[dict[str, Any]] | None = None
    targets: list[dict[str, Any]] | None = None
    substantiation: str | None = None
    statements: dict[str, Any] | None = None
    requested_action: str | None = None
    signature: str | None = None


def _claim_row(reg: Registry, seq: int) -> tuple[EntryRow, dict[str, Any]]:
    row = reg.store.get_entry(seq)
    if row.kind != "claim":
        raise NotFound(f"entry {seq} is a {row.kind}, not a claim")
    obj = jcs.parse(row.data)
    assert isinstance(obj, dict)
    return row, obj


@router.post(
    "/v1/claims",
    status_code=201,
    response_model=RegistrationOut,
    summary="Record a takedown notice or counter-notice",
    description="Records the notice as a ledger entry (kind `claim`). It must contain what its "
    "regime requires (DMCA 512(c)(3) / 512(g)(3), EU DSA Art. 16, China E-commerce Law Art. "
    "42/43, Information Network Dissemination Regulations Art. 14/16): an incomplete notice is "
    "refused with 422 and `missing` naming the fields, and nothing is written. Works given by "
    "registry seq get their content hash filled in. Needs a platform key.",
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": ClaimIn.model_json_schema()}}}},
)
async def record_claim(request: Request) -> FastJSONResponse:
    who = auth.require(request, "platform")
    c = await json_body(request, ClaimIn)
    reg = registry(request)
    body = c.model_dump(exclude_none=True)
    for i, w in enumerate(body.get("works", [])):
        if "seq" in w:
            try:
                row = reg.store.get_entry(w["seq"])
            except NotFound:
                raise InvalidInput(f"works[{i}].seq: no entry {w['seq']}") from None
            if row.kind != "work":
                raise InvalidInput(f"works[{i}].seq: entry {w['seq']} is a {row.kind}")
            if w.setdefault("sha256", row.sha256) != row.sha256:
                raise InvalidInput(f"works[{i}]: sha256 is not that of work {w['seq']}")
    if c.notice_type == "counter_notice":
        if c.refers_to is None:
            raise InvalidInput("refers_to: a counter-notice names the claim it answers",
                               missing=["refers_to"])
        try:
            _, claim = _claim_row(reg, c.refers_to)
        except NotFound as e:
            raise InvalidInput(f"refers_to: {e.detail}") from None
        body.setdefault("works", claim.get("works", []))
    entry = entry_mod.build_claim(registrant=who.account, received_at=entry_mod.utc_now(),
                                  body=body, check=False)
    receipt, entry = await append(request, entry)
    return FastJSONResponse(registration_json(receipt, entry), status_code=201)


@router.get("/v1/claims/{seq}", summary="A claim and its timeline")
def get_claim(request: Request, seq: int = Path(ge=0)) -> dict[str, Any]:
    reg = registry(request)
    row, claim = _claim_row(reg, seq)
    root_seq = claim.get("refers_to", seq) if claim["notice_type"] == "counter_notice" else seq
    timeline = []
    for r in reg.store.search_sha256(row.sha256, limit=100_000):
        if r.kind != "claim":
            continue
        c = jcs.parse(r.data)
        assert isinstance(c, dict)
        if r.seq == root_seq or c.get("refers_to") == root_seq:
            timeline.append({"seq": r.seq, "notice_type": c["notice_type"],
                             "regime": c["regime"], "registrant": c["registrant"],
                             "received_at": c["received_at"], "claimant": c["claimant"]["name"],
                             "bundle": f"/v1/entries/{r.seq}/bundle"})
    return {"seq": seq, "leaf_hash": row.leaf_hash.hex(), "block_height": row.block_height,
            "entry": claim, "timeline": timeline}


class CheckIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "claimant": "ada", "work_seq": 0,
        "content": {"sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                    "pdq": "f" * 64},
    }]})
    claimant: str = Field(description="the claimant's account in this registry")
    work_seq: int | None = Field(default=None, ge=0)
    work_sha256: str | None = None
    content: dict[str, Any] = Field(default_factory=dict,
                                    description="disputed content: sha256, pdq, phash, minhash")


async def _check_from_form(request: Request) -> CheckIn:
    form = await request.form(max_files=1, max_fields=20)
    try:
        content: dict[str, Any] = {}
        upload = form.get("file")
        if isinstance(upload, UploadFile):
            data = await upload.read(MAX_FINGERPRINT_BYTES + 1)
            h = hashlib.sha256(data)
            while chunk := await upload.read(1 << 20):
                h.update(chunk)
            content["sha256"] = h.hexdigest()
            if len(data) <= MAX_FINGERPRINT_BYTES:
                media = (upload.content_type or "").split(";")[0].strip().lower() or None
                content.update(await run_in_threadpool(fingerprints_for, data, media))
        for k in ("sha256", "pdq", "phash"):
            v = form.get(k)
            if isinstance(v, str) and v:
                content.setdefault(k, v)  # what the server computed from the file wins
        seq_s, sha_s, claimant = form.get("work_seq"), form.get("work_sha256"), form.get(
            "claimant")
        return CheckIn(claimant=claimant if isinstance(claimant, str) else "",
                       work_seq=int(seq_s) if isinstance(seq_s, str) and seq_s.isdigit() else None,
                       work_sha256=sha_s if isinstance(sha_s, str) and sha_s else None,
                       content=content)
    finally:
        await form.close()


@router.post(
    "/v1/claims/check",
    summary="Check a takedown claim",
    description="Is the claimed work registered, is the claimant its registrant or current "
    "holder, which registrations match the disputed content (exactly, or nearly by PDQ / pHash "
    "/ MinHash), oldest first, and what claims exist on the work. The answer is signed by the "
    "notary (`signature`, a C2SP signed note over the SHA-256 of the answer's RFC 8785 JSON "
    "without `signature`). JSON, or multipart/form-data with a `file`. Needs a platform key.",
)
async def check_claim(request: Request) -> FastJSONResponse:
    auth.require(request, "platform")
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        q = await _check_from_form(request)
    else:
        q = await json_body(request, CheckIn)
    return FastJSONResponse(await run_in_threadpool(run_check, request, q))


def run_check(request: Request, q: CheckIn) -> dict[str, Any]:
    """The claim check itself (blocking reads: runs in the thread pool)."""
    reg = registry(request)
    if not entry_mod.valid_registrant(q.claimant):
        raise InvalidInput("claimant: an account name (A-Z, a-z, 0-9, '.', '_', '-')")
    if (q.work_seq is None) == (q.work_sha256 is None):
        raise InvalidInput("give exactly one of work_seq and work_sha256")
    content = dict(q.content)
    sha = content.pop("sha256", None)
    if sha is not None and (not isinstance(sha, str) or not entry_mod.valid_sha256(sha)):
        raise InvalidInput("content.sha256: must be 64 lowercase hex characters")
    fps = fp.validate_fingerprints(content, field="content", allow_bare=True) if content else {}
    if sha is None and not fps:
        raise InvalidInput("content: give the disputed content's sha256 and/or fingerprints, "
                           "or upload it")

    # The claimed work.
    work_row: EntryRow | None = None
    if q.work_seq is not None:
        try:
            work_row = reg.store.get_entry(q.work_seq)
        except NotFound:
            work_row = None
        if work_row is not None and work_row.kind != "work":
            raise InvalidInput(f"work_seq: entry {q.work_seq} is a {work_row.kind}, not a work")
    else:
        assert q.work_sha256 is not None
        if not entry_mod.valid_sha256(q.work_sha256):
            raise InvalidInput("work_sha256: must be 64 lowercase hex characters")
        works = [r for r in reg.store.search_sha256(q.work_sha256) if r.kind == "work"]
        work_row = works[0] if works else None
    registered = work_row is not None
    title = load_title(reg, work_row.seq)[0] if work_row is not None else None

    # Everything that matches the disputed content.
    matches: list[dict[str, Any]] = []
    if sha is not None:
        for r in reg.store.search_sha256(sha):
            if r.kind == "work":
                matches.append({"seq": r.seq, "algorithm": "sha256", "distance": 0,
                                "threshold": 0, "verdict": "match"})
    index = request.app.state.fp_index
    caveats = list(CAVEATS)
    if fps:
        if not index.ready:
            caveats.insert(0, "The near-duplicate index is still being rebuilt after a restart: "
                           "only exact (SHA-256) matches were checked. Ask again shortly.")
        matches += [c.to_json() for c in index.search(fps)]
    matched_seqs = sorted({m["seq"] for m in matches})
    rows = {s: reg.store.get_entry(s) for s in matched_seqs}
    registrations = []
    for s in matched_seqs:
        e = jcs.parse(rows[s].data)
        assert isinstance(e, dict)
        registrations.append({"seq": s, "registrant": e["registrant"],
                              "registered_at": e["received_at"], "title": e.get("title"),
                              "bundle": f"/v1/entries/{s}/bundle"})
    on_work = [m for m in matches if work_row is not None and m["seq"] == work_row.seq]
    verdict = ("match" if any(m["verdict"] == "match" for m in on_work)
               else "possible" if on_work else "none")
    earliest = registrations[0] if registrations else None

    claims_on_work = []
    if work_row is not None:
        for r in reg.store.search_sha256(work_row.sha256, limit=100_000):
            if r.kind == "claim":
                c = jcs.parse(r.data)
                assert isinstance(c, dict)
                claims_on_work.append({"seq": r.seq, "notice_type": c["notice_type"],
                                       "regime": c["regime"], "registrant": c["registrant"],
                                       "received_at": c["received_at"],
                                       "refers_to": c.get("refers_to")})
    last = reg.sequencer.state.last
    assert last is not None
    answer: dict[str, Any] = {
        "verdict": verdict,
        "work_registered": registered,
        "work_seq": work_row.seq if work_row is not None else None,
        "claimant": q.claimant,
        "claimant_is_registrant": bool(title and title.registrant == q.claimant),
        "claimant_is_holder": bool(title and title.holder == q.claimant),
        "holder": title.holder if title else None,
        "earliest_registration": earliest and {k: earliest[k] for k in
                                               ("seq", "registrant", "registered_at")},
        "registrations": registrations,
        "matches": matches,
        "claims": claims_on_work,
        "caveats": caveats,
        "index_ready": index.ready,
        "checked_at": entry_mod.utc_now(),
        "tree_size": last.header.tree_size,
        "origin": reg.origin,
    }
    digest = hashlib.sha256(jcs.canonicalize(answer)).digest()
    text = claims_mod.check_note_text(reg.origin, last.header.tree_size, digest)
    answer["signature"] = sign_note(text, reg.signers())
    return answer
