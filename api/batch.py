"""Batch writes (`POST /v1/works/batch`, `POST /v1/evidence/batch`): many items in one request,
each validated, kept or replayed under its own `idempotency_key`, and answered on its own."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
from pydantic import BaseModel
from pydantic_core import from_json

from copyledger.api.deps import FastJSONResponse, written_answers
from copyledger.api.problems import body_of
from copyledger.ledger.errors import (
    CopyledgerError,
    InvalidInput,
    PayloadTooLarge,
    Uncertain,
    said,
)
from copyledger.service import idempotency
from copyledger.service.apikeys import Principal
from copyledger.service.idempotency import (
    Answer,
    Claim,
    Written,
    check_key,
    claim,
    keep,
    release_all,
    request_hash,
)
from copyledger.service.node import Node
from copyledger.service.operations import MAX_BATCH, Outcome, PlainWorkIn, parse_item

MAX_DEPTH = 201  # the most levels of nesting a batch's body may have (pydantic's parser's)
Run = Callable[[Sequence[Any]], Awaitable[list[Outcome]]]
Parsed = tuple[BaseModel | PlainWorkIn | CopyledgerError, str | None, bytes]
"""An item as `_parse` leaves it: the model (or the error refusing it), its key, its bytes."""


def items_of(body: bytes, member: str, limit: int) -> list[Any]:
    """The batch's list of raw items; InvalidInput (nothing written) for any other body."""
    if len(body) > limit:
        raise PayloadTooLarge(said("request body is {size} bytes; the limit is {limit}",
                                   size=len(body), limit=limit))
    # pydantic's parser, as `POST /v1/works` reads its body, not orjson's: orjson reads an
    # integer past 64 bits as a float, which the entry would then record as a value the
    # caller never sent (an item's check refuses the exact integer, as the single path does),
    # and it nests 1,024 levels deep, where later steps recurse (this one stops at 201).
    try:
        doc = from_json(body, allow_inf_nan=False)
    except ValueError as e:
        if "recursion limit" in str(e):
            raise InvalidInput(said("body: nested too deeply (at most {most} levels)",
                                    most=MAX_DEPTH)) from None
        raise InvalidInput("body: not JSON") from None
    raw = doc.get(member) if isinstance(doc, dict) and set(doc) == {member} else None
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_BATCH:
        msg = said("must be an object with only `{member}`: a list of 1 to {most} items",
                   member=member, most=MAX_BATCH)
        raise InvalidInput(said("body: {msg}", msg=msg), errors=[{"field": member, "message": msg}])
    return raw


def _parse(raw: Any, model: type[BaseModel], where: str, seen: set[str]) -> Parsed:
    """One item: the model (or the error refusing it), its key and its canonical bytes."""
    if not isinstance(raw, dict):
        return InvalidInput(said("{where}: must be an object", where=where)), None, b""
    key = raw.get("idempotency_key")
    item = ({k: v for k, v in raw.items() if k != "idempotency_key"}
            if "idempotency_key" in raw else raw)
    try:
        # What a kept answer is matched by: only a keyed item needs it.
        canonical = b"" if key is None else orjson.dumps(item, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # an integer past 64 bits: refused below, as the entry's check would
        canonical = None
    try:
        if key is not None:
            if not isinstance(key, str):
                raise InvalidInput(said("{where}.idempotency_key: must be a string",
                                        where=where))
            check_key(key, f"{where}.idempotency_key")
            if key in seen:
                raise InvalidInput(said(
                    "{where}.idempotency_key: {key!r} is repeated in this batch",
                    where=where, key=key))
            seen.add(key)
        parsed = parse_item(model, item, f"{where}.")
        if canonical is None:  # (in metadata, which the model takes as any JSON)
            raise InvalidInput(said("{where}: an integer outside +-(2**53-1)", where=where))
        return parsed, key, canonical
    except CopyledgerError as e:
        return e, None, canonical or b""


async def answer(
    n: Node, who: Principal, body: bytes, query: bytes, path: str, member: str,
    model: type[BaseModel], run: Run,
) -> FastJSONResponse:
    """Parse, recall kept answers, run the rest together, keep the new successes, and answer
    every item in order: `{index, status, registration}` or `{index, status, problem}`."""
    raw = items_of(body, member, n.settings.max_batch_body_bytes)
    seen: set[str] = set()
    parsed = [_parse(item, model, f"{member}[{i}]", seen) for i, item in enumerate(raw)]
    results: list[dict[str, Any] | None] = [None] * len(parsed)
    digests = {i: request_hash(path.encode(), query, canonical)
               for i, (_, key, canonical) in enumerate(parsed) if key is not None}
    # One wait for the whole batch, from its arrival (as `deps.once`), not WAIT_S an item:
    # item after item waiting on keys still in flight would reach the last ones past
    # ABANDONED_S, take over the claims of a process that died after sealing them, and write
    # those items again (D131).
    deadline = time.monotonic() + idempotency.WAIT_S
    # Every key held in one order (sorted), so two batches sharing keys cannot deadlock.
    async with n.idempotency_locks.hold_many(sorted((who.account, str(parsed[i][1]))
                                                    for i in digests)):
        claimed: dict[int, Claim] = {}  # keys this request now holds in the database (D59)
        unsure: set[int] = set()  # items whose write's fate is unknown (Uncertain)
        written: dict[int, int] = {}  # item: the seq its key's earlier request wrote (D132)
        cancelled = handed_over = False
        try:
            for i, digest in digests.items():
                try:
                    kept = await claim(n.idempotency, who.account, str(parsed[i][1]), digest,
                                       wait_s=max(0.0, deadline - time.monotonic()))
                except CopyledgerError as e:
                    results[i] = _refused(i, e, path)
                    continue
                if isinstance(kept, Written):
                    written[i] = kept.seq
                elif isinstance(kept, Answer):
                    results[i] = {"index": i, "status": kept.status, "replayed": True,
                                  ("problem" if kept.status >= 400 else "registration"):
                                  orjson.loads(kept.body)}
                else:
                    claimed[i] = kept
            if written:
                await _recorded_before(n, who, path, written, digests, parsed, results)
            todo = [i for i in range(len(parsed)) if results[i] is None]
            handed_over = True
            # Each claimed item's block records it as written under its claim (D132).
            token = idempotency.WRITING_MANY.set([claimed[i].request if i in claimed else None
                                                  for i in todo])
            try:
                outcomes = await run([parsed[i][0] for i in todo])
            finally:
                idempotency.WRITING_MANY.reset(token)
            # Should a fault end the loop below, these are not released (D147).
            unsure.update(i for i, o in zip(todo, outcomes, strict=True)
                          if isinstance(o, Uncertain))
            for i, outcome in zip(todo, outcomes, strict=True):
                item: dict[str, Any]
                if isinstance(outcome, CopyledgerError):
                    item, member = _refused(i, outcome, path), "problem"
                    # A refusal frees its key (or puts back a kept 503 it took over); a write
                    # of unknown fate keeps this answer, so a retry is answered with its entry
                    # if it was recorded, and run again if not (D132, D135).
                    keeps = isinstance(outcome, Uncertain)
                else:
                    item = {"index": i, "status": 200 if outcome.existing else 201,
                            "registration": outcome.to_json()}
                    if outcome.replayed:  # its earlier send's entry (D134)
                        item["replayed"] = True
                    member, keeps = "registration", True
                results[i] = item
                if keeps and i in claimed:
                    # (the answer made first: should that fail, the claim is still listed, and
                    # released below rather than held and refreshed for the process's life)
                    answer = Answer(item["status"], orjson.dumps(item[member]))
                    await keep(n.idempotency, claimed.pop(i), answer)
        except asyncio.CancelledError:
            # Cancelled (the server's stop, past its grace: uvicorn does not cancel a request
            # whose client hung up): what was handed over may still be sealed, so its keys
            # stay claimed ("in flight") until taken over as abandoned, rather than freed for
            # a retry that could write the same items again (no longer refreshed, D69); a key
            # that took over a kept 503 puts it back instead (D150). Cancelled before anything
            # was handed over: nothing can be written, so the keys are freed below.
            cancelled = handed_over
            if cancelled:
                await asyncio.shield(release_all(n.idempotency, [], list(claimed.values())))
            raise
        finally:
            # Refused, or never run: released, all of them, even if this task is cancelled
            # meanwhile (a cancel scope cancels every await in it): each release left undone
            # would hold its key "in flight", refreshed, for the life of the process (D141).
            if claimed and not cancelled:
                await asyncio.shield(release_all(
                    n.idempotency, [c for i, c in claimed.items() if i not in unsure],
                    [c for i, c in claimed.items() if i in unsure]))
    done = [r for r in results if r is not None]
    return FastJSONResponse({
        "results": done,
        "registered": sum(1 for r in done if r["status"] == 201),
        "already_registered": sum(1 for r in done if r["status"] == 200),
        "refused": sum(1 for r in done if r["status"] >= 400),
    })


async def _recorded_before(n: Node, who: Principal, path: str, written: dict[int, int],
                           digests: dict[int, str], parsed: list[Parsed],
                           results: list[dict[str, Any] | None]) -> None:
    """Answer the items whose keys' earlier requests were recorded but never answered
    (`Written`, D132) with those entries, as the single request is (`written_answers`); if
    the entries cannot be read now, each is answered 503 (retry), its key left as it was."""
    try:
        bodies = await written_answers(n, who.account, [(str(parsed[i][1]), digests[i], seq)
                                                        for i, seq in written.items()])
    except CopyledgerError as e:
        for i in written:
            results[i] = _refused(i, e, path)
        return
    for i, body in zip(written, bodies, strict=True):
        results[i] = {"index": i, "status": 201, "replayed": True,
                      "registration": orjson.Fragment(body)}


def _refused(i: int, e: CopyledgerError, path: str) -> dict[str, Any]:
    problem = body_of(e, path)
    return {"index": i, "status": problem["status"], "problem": problem}
