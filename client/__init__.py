"""The public HTTP client (`Client`, `AsyncClient`): talks to a registry and verifies what it
receives against pinned keys. The offline checks it runs are public too (`check_*`), for
receipts, proofs and claim checks kept on disk. docs/client.md shows how to use it."""

from copyledger.client._calls import BatchWork
from copyledger.client._client import AsyncClient, Client
from copyledger.client.errors import (
    ClientError,
    ProblemError,
    ResponseError,
    TransportError,
    UnverifiedAnswer,
)
from copyledger.client.files import fingerprint_file
from copyledger.client.results import (
    ClaimCheck,
    ConsistencyProof,
    InclusionProof,
    Receipt,
    SignedCheckpoint,
)
from copyledger.client.verify import (
    check_checkpoint,
    check_claim_check,
    check_consistency,
    check_contact,
    check_history,
    check_proof,
    check_receipt,
    check_receipts,
)
from copyledger.ledger.contact import Disclosure
from copyledger.ledger.errors import VerificationError

__all__ = [
    "AsyncClient",
    "BatchWork",
    "ClaimCheck",
    "Client",
    "ClientError",
    "ConsistencyProof",
    "Disclosure",
    "InclusionProof",
    "ProblemError",
    "Receipt",
    "ResponseError",
    "SignedCheckpoint",
    "TransportError",
    "UnverifiedAnswer",
    "VerificationError",
    "check_checkpoint",
    "check_claim_check",
    "check_consistency",
    "check_contact",
    "check_history",
    "check_proof",
    "check_receipt",
    "check_receipts",
    "fingerprint_file",
]
