"""Offline verification: what a court, a platform or anyone holding a copyledger receipt or
evidence bundle imports to check it without the registry and without trusting its operator.

- `verify_bundle(bundle, file_sha256=..., trusted_keys=..., tsa_roots_pem=...)` checks a
  `copyledger/bundle/v1` evidence bundle step by step and returns a `Report`: the document's
  shape (`format`); that the exhibit's SHA-256 is the registered one (`file`); that the entry's
  RFC 8785 bytes hash to the leaf hash (`entry`); the RFC 9162 inclusion proof to the root
  (`inclusion`); a trusted log key's signature on the checkpoint naming that root
  (`checkpoint`); the block header's hash and its match with the checkpoint (`block`); the signed
  block note (`block-signature`); RFC 3161 tokens over the block hash under the TSA roots
  (`timestamp`); and that the C2SP tlog-proof says the same (`tlog-proof`). Each step's
  `StepResult` has a `Status`: PASSED, FAILED (with why), SKIPPED (nothing to check) or
  NOT_CHECKED (an earlier step failed). Pin the log's published key with `trusted_keys`;
  without it the report's `trust` is "bundle".
- `verify_receipt(registration, verifiers, file_sha256=...)` checks the answer to a
  registration: the entry's bytes give the leaf hash, the proof leads to the root, and a trusted
  key signed a checkpoint of that size and root. It raises VerificationError (InvalidInput for a
  malformed receipt) and returns None when the receipt holds.
- The documents they read: `Bundle`, `Receipt`, the entry classes (`Work`, `Evidence`,
  `Transfer`, `Claim`, `Rotation`, read by `parse_entry`) and the signed `ClaimCheck` answer,
  each with a strict `from_dict` and an exact `to_dict`.

docs/verification.md specifies the same checks in prose, precisely enough to reimplement them.
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
from copyledger.ledger.errors import InvalidInput, VerificationError
from copyledger.ledger.note import Verifier, parse_verifier_key
from copyledger.ledger.verify import Report, Status, StepResult, verify_bundle, verify_receipt

__all__ = [
    "Bundle",
    "Claim",
    "ClaimCheck",
    "Entry",
    "Evidence",
    "InvalidInput",
    "Receipt",
    "Report",
    "Rotation",
    "Status",
    "StepResult",
    "Transfer",
    "VerificationError",
    "Verifier",
    "Work",
    "parse_entry",
    "parse_verifier_key",
    "verify_bundle",
    "verify_receipt",
]
