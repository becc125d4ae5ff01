"""copyledger: a copyright evidence registry on an RFC 6962 transparency log.

The public surface is what this package names in ``__all__``; every other module under
``copyledger`` is internal and may change without notice (see docs/architecture.md).
"""

from __future__ import annotations

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

__all__ = [
    "Bundle",
    "Claim",
    "ClaimCheck",
    "Entry",
    "Evidence",
    "Receipt",
    "Rotation",
    "Transfer",
    "Work",
    "__version__",
    "parse_entry",
]
