"""Cosignatures of our checkpoints from C2SP witnesses, collected off the sealing path.

Like the external TSAs (`notary/external_tsa.py`), witnesses are asked by one background thread,
poked after each seal: a witness that is slow or down never delays a write. On each pass every
witness is sent the latest checkpoint with C2SP tlog-witness `add-checkpoint`, from the size it
last cosigned (first the largest size we kept from it, else 0; a 409 tells us its real size in
`text/x.tlog.size`, and we retry once from there). A returned line is verified under the
witness's vkey before it is kept, append-only, in the `cosignatures` table. A witness that fails
is asked again after a delay that doubles up to `max_delay`, so cosignatures are filled in when
it returns (decision D30).

While the tree does not grow, each witness is asked again about the same checkpoint once its
newest cosignature is `refresh` seconds old (D133): it cosigns it again with a new time, so a
reader of `/checkpoint` or a monitor can tell a log that is idle (a recent cosignature of the
latest tree) from one that froze, or that shows someone an old tree (only old ones).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx

from copyledger.ledger import cosignature, merkle, note
from copyledger.ledger.bounded import PLAIN, read_bounded, refuse_encoded, within
from copyledger.ledger.cosignature import AddCheckpointRequest, Cosignature, CosignatureVerifier
from copyledger.ledger.errors import Conflict, CopyledgerError, VerificationError, said
from copyledger.ledger.store import Store
from copyledger.notary.worker import Worker

__all__ = ["Cosigner", "WitnessConfig", "add_checkpoint"]

log = logging.getLogger("copyledger.witnesses")

SIZE_MEDIA_TYPE = "text/x.tlog.size"


@dataclass(frozen=True)
class WitnessConfig:
    """A witness we ask: its URL prefix (where `/add-checkpoint` is) and its cosignature vkey."""

    url: str
    vkey: str
    verifier: CosignatureVerifier = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:  # a malformed vkey is refused at open, not in the thread
        object.__setattr__(self, "verifier", cosignature.parse_verifier_key(self.vkey))


MAX_ANSWER_BYTES = 64 * 1024
"""The most of a witness's answer read: its cosignature lines are a few hundred bytes."""
ANSWER_S = 30.0
"""The longest a witness's answer may take, however it trickles in (D185)."""


def add_checkpoint(http: httpx.Client, url: str, request: AddCheckpointRequest) -> str:
    """POST one add-checkpoint request; the cosignature line (unverified). Conflict (with the
    witness's `size`) on a 409, VerificationError on any other refusal."""
    with within(ANSWER_S) as deadline, http.stream(
            "POST", url.rstrip("/") + "/add-checkpoint", content=request.to_bytes(),
            headers=PLAIN) as r:
        refuse_encoded(r.headers.get("content-encoding"), url)
        body = read_bounded(r.iter_bytes(), MAX_ANSWER_BYTES, deadline, url)
    text = body.decode("utf-8", "replace")
    if r.status_code == 409 and r.headers.get("content-type", "").startswith(SIZE_MEDIA_TYPE):
        text = text.strip()
        # ASCII digits only, and no more than a uint64 has: str.isdigit() is also true of "²"
        # and "٣", and int() of 4,301 digits raises
        if not (text.isascii() and text.isdigit() and len(text) <= 20):
            raise VerificationError(said("witness {url}: 409 without a tree size", url=url))
        raise Conflict(said("witness {url} last cosigned size {text}",
                            url=url, text=text), size=int(text))
    if r.status_code != 200:
        raise VerificationError(said("witness {url}: HTTP {status_code}: {text}",
                                     url=url, status_code=r.status_code, text=text[:200]))
    return text


@dataclass
class Cosigner:
    """Background thread: every pass, send the latest checkpoint to each witness that has not
    cosigned it, and keep what they return."""

    store: Store
    witnesses: Sequence[WitnessConfig]
    interval: float = 2.0
    timeout: float = 10.0
    max_delay: float = 60.0
    refresh: float = 300.0  # ask again about an unchanged tree after this long (0: never)
    on_lag: Callable[[str, int], None] | None = None
    on_cosigned: Callable[[str, int], None] | None = None
    lag: dict[str, int] = field(default_factory=dict)  # entries not yet cosigned, by vkey
    cosigned_at: dict[str, int] = field(default_factory=dict)  # newest cosignature's time, by vkey
    _sizes: dict[str, int] = field(default_factory=dict)  # what each witness last cosigned
    _retry_at: dict[str, float] = field(default_factory=dict)
    _asked_at: dict[str, float] = field(default_factory=dict)  # monotonic, of the last line kept
    _delay: dict[str, float] = field(default_factory=dict)
    _worker: Worker = field(init=False)

    def __post_init__(self) -> None:
        self._worker = Worker("witnesses", self.interval, self.timeout)

    def start(self) -> None:
        if self.witnesses:
            self._worker.start(self._pass)

    def stop(self) -> None:
        self._worker.stop()

    def poke(self) -> None:
        """A block was sealed: look sooner than the interval."""
        self._worker.poke()

    def _pass(self, http: httpx.Client) -> float:
        self.run_once(http)
        now = time.monotonic()
        return min([self.interval, *(t - now for t in self._retry_at.values() if t > now)])

    def run_once(self, http: httpx.Client) -> None:
        """One pass over the witnesses (each one that is not backing off). Whatever goes wrong
        with one witness is logged and it backs off; the others are still asked."""
        last = self.store.latest_block()
        if last is None:
            return
        size = last.header.tree_size
        for w in self.witnesses:
            if self._worker.stopping.is_set():
                return
            try:
                self._visit(http, w, size, last.checkpoint)
            except Exception:  # a fault _ask does not expect: this witness's alone
                delay = self._back_off(w)
                log.exception("witness %s: the pass failed; again in %.1f s", w.url, delay)

    def _visit(self, http: httpx.Client, w: WitnessConfig, size: int, signed: str) -> None:
        if self._retry_at.get(w.vkey, 0.0) <= time.monotonic():
            self._ask(http, w, size, signed)
        cosigned = self._known_size(w)
        self.lag[w.vkey] = size - cosigned if cosigned is not None else size
        if self.on_lag is not None:
            self.on_lag(w.vkey, self.lag[w.vkey])
        if self.on_cosigned is not None and w.vkey in self.cosigned_at:
            self.on_cosigned(w.vkey, self.cosigned_at[w.vkey])

    def _back_off(self, w: WitnessConfig) -> float:
        """Ask `w` again only after a delay that doubles up to `max_delay`; the delay."""
        delay = min(self._delay.get(w.vkey, self.interval / 2) * 2, self.max_delay)
        self._delay[w.vkey] = delay
        self._retry_at[w.vkey] = time.monotonic() + delay
        return delay

    def _known_size(self, w: WitnessConfig) -> int | None:
        if w.vkey not in self._sizes:
            kept = self.store.last_cosigned(w.vkey)
            if kept is None:
                return None
            self._sizes[w.vkey] = kept
        return self._sizes[w.vkey]

    def _ask(self, http: httpx.Client, w: WitnessConfig, size: int, signed: str) -> None:
        old = self._known_size(w) or 0
        if old == size and not self._refresh_due(w, size):
            return
        try:
            for _ in range(2):  # once more after a 409 told us the witness's size
                try:
                    line = add_checkpoint(http, w.url, self._request(old, size, signed))
                    break
                except Conflict as e:
                    old = int(str(e.extra["size"]))
                    if old > size:
                        raise VerificationError(said("witness {url} has cosigned size {old}, "
                                                     "beyond this log's {size}: a fork?",
                                                     url=w.url, old=old, size=size)) from None
            else:
                raise VerificationError(said("witness {url} keeps answering 409", url=w.url))
            cosig = Cosignature.by(line, w.verifier)
            cosignature.verify_cosignature(note.parse_note(signed).text, cosig, w.verifier)
        except (httpx.HTTPError, CopyledgerError) as e:
            delay = self._back_off(w)
            log.warning("witness %s: no cosignature of size %d (%s); again in %.1f s",
                        w.url, size, e, delay)
            return
        self.store.add_cosignature(size, w.vkey, cosig.line(), cosig.timestamp)
        self._sizes[w.vkey] = size
        self.cosigned_at[w.vkey] = cosig.timestamp
        self._asked_at[w.vkey] = time.monotonic()
        self._delay.pop(w.vkey, None)
        self._retry_at.pop(w.vkey, None)

    def _refresh_due(self, w: WitnessConfig, size: int) -> bool:
        """Whether to ask `w` about the tree of `size` again: it has no line of that size kept,
        or its newest is `refresh` seconds old (a line that does not parse counts as old) and
        this process kept none from it for as long, by its own clock: a witness whose clock
        is behind is asked once a period, not at every pass."""
        lines = self.store.cosignature_lines(size, [w.vkey])
        if not lines:
            return True
        try:
            at = Cosignature.parse_line(lines[0]).timestamp
        except CopyledgerError:
            return True
        self.cosigned_at[w.vkey] = max(at, self.cosigned_at.get(w.vkey, 0))
        return (self.refresh > 0 and time.time() - at >= self.refresh
                and time.monotonic() - self._asked_at.get(w.vkey, -math.inf) >= self.refresh)

    def _request(self, old: int, size: int, signed: str) -> AddCheckpointRequest:
        proof = merkle.consistency_proof(old, size, self.store) if 0 < old < size else []
        return AddCheckpointRequest(old, tuple(proof), signed.encode())
