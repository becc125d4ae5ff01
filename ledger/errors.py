"""One exception hierarchy for the whole project.

Every error a client can cause maps to an HTTP status and an RFC 9457 problem type, so the API
layer never has to guess, and the CLI can print the same message a server would send.
"""

from __future__ import annotations


class CopyledgerError(Exception):
    """Base class. `status` and `slug` drive the problem+json rendering."""

    status: int = 500
    slug: str = "internal-error"
    title: str = "Internal error"

    def __init__(self, detail: str, **extra: object) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class InvalidInput(CopyledgerError):
    """The request or file is malformed; nothing was written."""

    status = 422
    slug = "invalid-input"
    title = "Invalid input"


class NotFound(CopyledgerError):
    status = 404
    slug = "not-found"
    title = "Not found"


class Unauthorized(CopyledgerError):
    status = 401
    slug = "unauthorized"
    title = "Missing or unknown API key"


class Forbidden(CopyledgerError):
    status = 403
    slug = "forbidden"
    title = "This API key may not do that"


class Conflict(CopyledgerError):
    status = 409
    slug = "conflict"
    title = "Conflict"


class PayloadTooLarge(CopyledgerError):
    status = 413
    slug = "payload-too-large"
    title = "Request body too large"


class RateLimited(CopyledgerError):
    status = 429
    slug = "rate-limited"
    title = "Too many requests"


class Unavailable(CopyledgerError):
    """The registry cannot take writes right now (shutting down, signer unreachable)."""

    status = 503
    slug = "unavailable"
    title = "Service unavailable"


class VerificationError(CopyledgerError):
    """A proof, signature or hash did not check out."""

    status = 422
    slug = "verification-failed"
    title = "Verification failed"


class ProofError(VerificationError):
    """A Merkle inclusion or consistency proof is malformed or does not verify."""

    slug = "proof-failed"
    title = "Merkle proof does not verify"


class SignatureError(VerificationError):
    """A signed note is malformed or no trusted signature verifies."""

    slug = "signature-failed"
    title = "Signature does not verify"


class IntegrityError(CopyledgerError):
    """Stored data does not match what it commits to (found by audit)."""

    slug = "integrity"
    title = "Ledger integrity violated"
