"""The evidence bundle: one self-contained JSON document that proves an entry offline.

It holds the entry, its leaf hash, the inclusion proof to the signed checkpoint of the block
that sealed it, the block header with its signed block note, the RFC 3161 tokens over the block
hash, and the notary's public keys and TSA certificates. `ledger.verify` checks all of it with
no network; docs/verification.md specifies how, step by step.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from copyledger.ledger import jcs
from copyledger.ledger.documents import (
    BUNDLE_FORMAT,
    Bundle,
    BundleBlock,
    BundleTimestamp,
    BundleWitnessed,
    Inclusion,
    NotaryPublicKeys,
    TitleChain,
)
from copyledger.ledger.note import BlockHeader
from copyledger.ledger.sm2_timestamp import TSA_LABEL as SM2_TSA_LABEL
from copyledger.ledger.tlog_proof import TlogProof, format_tlog_proof

FORMAT = BUNDLE_FORMAT


@dataclass(frozen=True)
class Timestamp:
    tsa: str  # "notary" for our own TSA, else the external TSA's URL
    token: bytes  # DER TimeStampToken over the block hash (SHA-256)


@dataclass(frozen=True)
class NotaryKeys:
    log_keys: list[dict[str, Any]] = field(default_factory=list)  # {verifier_key, valid_from,...}
    tsa_roots: list[str] = field(default_factory=list)  # PEM
    tsa_chain: list[str] = field(default_factory=list)  # PEM: TSA certificate and intermediates
    sm2_keys: list[dict[str, Any]] = field(default_factory=list)  # SM suite: {verifier_key}
    sm2_tsa_roots: list[str] = field(default_factory=list)  # SM suite: the SM2 TSA root, PEM
    # SM suite: retired SM2 TSA certificates, {certificate_sm3, retired_at} (D57)
    sm2_tsa_retired: list[dict[str, str]] = field(default_factory=list)


def make_bundle(
    *,
    origin: str,
    seq: int,
    leaf_hash: bytes,
    entry_data: bytes,
    proof: list[bytes],
    header: BlockHeader,
    block_hash: bytes,
    checkpoint: str,
    block_note: str,
    timestamps: list[Timestamp],
    notary: NotaryKeys,
    witnessed: BundleWitnessed | None = None,
    title_chain: TitleChain | None = None,
) -> dict[str, Any]:
    """Assemble a bundle as JSON; the inclusion proof is to the sealing block's tree size,
    `witnessed`, if given, is a later cosigned checkpoint with the consistency proof to it, and
    `title_chain` the links of the work the entry is or belongs to."""
    return Bundle(
        origin=origin,
        seq=seq,
        leaf_hash=leaf_hash.hex(),
        entry=jcs.parse_object(entry_data),
        inclusion=Inclusion(tree_size=header.tree_size, root=header.tree_root.hex(),
                            proof=tuple(h.hex() for h in proof)),
        checkpoint=checkpoint,
        block=BundleBlock(height=header.height, hash=block_hash.hex(), header=header.to_json(),
                          block_note=block_note),
        timestamps=tuple(BundleTimestamp(tsa=t.tsa, hash_alg="sha256",
                                         token=base64.b64encode(t.token).decode())
                         for t in timestamps if t.tsa != SM2_TSA_LABEL),
        notary=NotaryPublicKeys(log_keys=tuple(notary.log_keys), tsa_roots=tuple(notary.tsa_roots),
                                tsa_chain=tuple(notary.tsa_chain),
                                sm2_keys=tuple(notary.sm2_keys) or None,
                                sm2_tsa_roots=tuple(notary.sm2_tsa_roots) or None,
                                sm2_tsa_retired=tuple(notary.sm2_tsa_retired) or None),
        tlog_proof=format_tlog_proof(
            TlogProof(index=seq, proof=proof, checkpoint=checkpoint, extra=entry_data)
        ),
        witnessed=witnessed,
        title_chain=title_chain,
        sm2_timestamps=tuple(BundleTimestamp(tsa=t.tsa, hash_alg="sm3",
                                             token=base64.b64encode(t.token).decode())
                             for t in timestamps if t.tsa == SM2_TSA_LABEL) or None,
    ).to_dict()
