"""One exception hierarchy for the whole project.

Domain errors only: they say what went wrong, never how a transport reports it. The HTTP layer
maps each class to a status and an RFC 9457 problem type in one table
(`copyledger.api.problems.PROBLEMS`), and the CLI prints the same `detail` a server would send.
"""

from __future__ import annotations


class Said(str):
    """A detail built from a template with named values: it reads as the English sentence, and
    keeps `template` and `values` so a reader's language can say it (the catalogue holds the
    template, filled in after the lookup; decision D50). Make one with `said`."""

    template: str
    values: dict[str, object]

    def __new__(cls, template: str, /, **values: object) -> Said:
        self = super().__new__(cls, template.format(**values))
        self.template, self.values = template, values
        return self

    def __getnewargs_ex__(self) -> tuple[tuple[str], dict[str, object]]:
        return (self.template,), self.values

    @classmethod
    def literal(cls, text: str) -> Said:
        """`text` as it is, with nothing to fill in: a detail written as a literal, whose text
        is its msgid. Its template escapes braces, so a copy (a pickle) reads the same."""
        if isinstance(text, Said):
            return text
        text = str(text)  # a detail read from a peer's JSON may be anything
        return cls(text.replace("{", "{{").replace("}", "}}"))


def said(template: str, /, **values: object) -> Said:
    """`template` filled with `values`, translatable as a whole: `said("no entry {seq}",
    seq=12)`. The template is the msgid; values are never translated, except a value that is
    itself a `Said` (another error's `detail`), said in the same language."""
    return Said(template, **values)


class CopyledgerError(Exception):
    """Base class: `detail` is the human message; `extra` holds machine-readable members (for
    example `errors`, a list of every bad field). `internal` is what only the operator may see
    (an internal URL, a file path, an errno, a database message): logs and the CLI show it,
    clients of the HTTP API never get it."""

    def __init__(self, detail: str, **extra: object) -> None:
        internal = str(extra.pop("internal", "") or "")
        super().__init__(f"{detail} ({internal})" if internal else detail)  # str(): operator's
        self.detail: str = Said.literal(detail)  # a said(...) even when written as a literal, so
        # another said(...) that quotes it says it in the reader's language too
        self.internal = internal
        self.extra = extra

    @property
    def full_detail(self) -> str:
        """`detail` with the internal cause, for the operator's eyes only."""
        return str(self)


class InvalidInput(CopyledgerError):
    """The request or file is malformed; nothing was written."""


class NotFound(CopyledgerError):
    """No such entry, block, key or file."""


class Unauthorized(CopyledgerError):
    """No credential, or one nobody issued (or that was revoked)."""


class Forbidden(CopyledgerError):
    """A known caller asked for something its role or position does not allow."""


class WrongLogKey(InvalidInput):
    """None of this data directory's log keys signed the log's latest checkpoint (D116): its
    keys are another registry's, and it must not sign this log's blocks."""


class Conflict(CopyledgerError):
    """The request contradicts what is already recorded."""


class AlreadyRegistered(Conflict):
    """Not written: the registrant already registered a work with this content, and the entry
    asked to be written only once (D36). `seq` is that earlier work, the answer instead. The
    sequencer decides it (D94), so it holds across every API process of one log."""

    def __init__(self, seq: int) -> None:
        super().__init__(said("this account already registered this content (seq {seq})",
                              seq=seq))
        self.seq = seq


class PayloadTooLarge(CopyledgerError):
    """The input is larger than this registry accepts."""


class RequestTimeout(CopyledgerError):
    """The request did not arrive in the time allowed; nothing was written."""


class RateLimited(CopyledgerError):
    """The caller asked too often; try again later."""


class Unavailable(CopyledgerError):
    """The registry cannot take writes right now (shutting down, signer unreachable)."""


class LockLost(Unavailable):
    """This process no longer holds the log's sequencer lock (the database session that held
    it ended, and another process took it): it writes no block; nothing was written."""


class WrongSecret(Unavailable):
    """This host's hand-over secret is not the one the registry's hosts share (its check
    differs from the one in the database, D113): it does not sequence the log."""


class Uncertain(Unavailable):
    """A write whose fate is not known: it may or may not be recorded (the database write
    failed part-way, the receipt could not be built, the sequencer died before answering).
    Whoever retries must look first; an Idempotency-Key that met it keeps this answer, and
    its retry is answered with the entry if it was recorded (D132), else run again, which the
    sequencer writes once however the two sends meet (D134, D135)."""


class VerificationError(CopyledgerError):
    """A proof, signature or hash did not check out."""


class ProofError(VerificationError):
    """A Merkle inclusion or consistency proof is malformed or does not verify."""


class SignatureError(VerificationError):
    """A signed note is malformed or no trusted signature verifies."""


class IntegrityError(CopyledgerError):
    """Stored data does not match what it commits to (found by audit)."""
