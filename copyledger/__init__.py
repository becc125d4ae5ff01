"""copyledger: a copyright evidence registry on an RFC 6962 transparency log.

The public surface is what this package names in ``__all__`` (the typed documents, the HTTP
client and its errors) and the modules ``copyledger.client`` and ``copyledger.verify``; every
other module under ``copyledger`` is internal and may change without notice (see
docs/architecture.md). The client names load on first use, so the server and the offline
verifier do not import the HTTP client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from copyledger.ledger.documents import (
    Bundle,
    Claim,
    ClaimCheck,
    Entry,
    Evidence,
    Receipt,
    Rotation,
    Transfer,
    Work,
    parse_entry,
)

__version__ = "0.1.0"

_CLIENT_NAMES = (
    "AsyncClient",
    "Client",
    "ClientError",
    "ProblemError",
    "ResponseError",
    "TransportError",
    "UnverifiedAnswer",
    "VerificationError",
)

__all__ = [
    "AsyncClient",
    "Bundle",
    "Claim",
    "ClaimCheck",
    "Client",
    "ClientError",
    "Entry",
    "Evidence",
    "ProblemError",
    "Receipt",
    "ResponseError",
    "Rotation",
    "Transfer",
    "TransportError",
    "UnverifiedAnswer",
    "VerificationError",
    "Work",
    "__version__",
    "parse_entry",
]

if TYPE_CHECKING:
    from copyledger.client import (
        AsyncClient,
        Client,
        ClientError,
        ProblemError,
        ResponseError,
        TransportError,
        UnverifiedAnswer,
        VerificationError,
    )


def __getattr__(name: str) -> Any:
    if name in _CLIENT_NAMES:
        import copyledger.client

        return getattr(copyledger.client, name)
    raise AttributeError(f"module 'copyledger' has no attribute {name!r}")
