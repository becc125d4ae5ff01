"""copyledger: a copyright evidence registry on an RFC 6962 transparency log.

The public surface is what this package names in ``__all__``; every other module under
``copyledger`` is internal and may change without notice (see docs/architecture.md).
The client names load on first use, so the server and the offline verifier do not import
the HTTP client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "Client",
    "ClientError",
    "ProblemError",
    "ResponseError",
    "TransportError",
    "UnverifiedAnswer",
    "VerificationError",
    "__version__",
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
    if name in __all__:
        import copyledger.client

        return getattr(copyledger.client, name)
    raise AttributeError(f"module 'copyledger' has no attribute {name!r}")
