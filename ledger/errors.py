"""One exception hierarchy for the whole project.

Domain errors only: they say what went wrong, never how a transport reports it. The HTTP layer
maps each class to a status and an RFC 9457 problem type in one table
(`copyledger.api.problems.PROBLEMS`), and the CLI prints the same `detail` a server would send.
"""

from __future__ import annotations


class CopyledgerError(Exception):
    """Base class: `detail` is the human message; `extra` holds machine-readable members (for
    example `errors`, a list of every bad field)."""

    def __init__(self, detail: str, **extra: object) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class InvalidInput(CopyledgerError):
    """The request or file is malformed; nothing was written."""


class NotFound(CopyledgerError):
    """No such entry, block, key or file."""


class Unauthorized(CopyledgerError):
    """No credential, or one nobody issued (or that was revoked)."""


class Forbidden(CopyledgerError):
    """A known caller asked for something its role or position does not allow."""


class Conflict(CopyledgerError):
    """The request contradicts what is already recorded."""


class PayloadTooLarge(CopyledgerError):
    """The input is larger than this registry accepts."""


class RateLimited(CopyledgerError):
    """The caller asked too often; try again later."""


class Unavailable(CopyledgerError):
    """The registry cannot take writes right now (shutting down, signer unreachable)."""


class VerificationError(CopyledgerError):
    """A proof, signature or hash did not check out."""


class ProofError(VerificationError):
    """A Merkle inclusion or consistency proof is malformed or does not verify."""


class SignatureError(VerificationError):
    """A signed note is malformed or no trusted signature verifies."""


class IntegrityError(CopyledgerError):
    """Stored data does not match what it commits to (found by audit)."""
