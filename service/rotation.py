"""Key rotation: a new log key and TSA certificate, without breaking what was signed before.

`copyledger notary rotate` moves the current key and TSA chain to `notary/retired/<n>/`, makes
new ones in their place, and notes the retired key's validity in `notary/rotations.json`.
Until `overlap_until`, checkpoints and block notes carry both keys' signatures, so a verifier
that pinned either key accepts them; afterwards only the new key signs. Retired public keys
stay published (/v1/notary/keys, bundles) with the period they were valid, so everything signed
before still verifies. The rotation itself is a ledger entry (kind `rotation`), sealed in a
block that both keys sign.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from copyledger.ledger.entry import parse_timestamp
from copyledger.ledger.errors import InvalidInput
from copyledger.notary.signer import FileSigner, Signer
from copyledger.service.fsperm import trusted_text
from copyledger.service.settings import Settings

ROTATIONS = "rotations.json"


@dataclass(frozen=True)
class Retired:
    n: int
    verifier_key: str
    valid_from: str | None
    valid_until: str  # when the key stopped being the current one
    overlap_until: str  # until when it still co-signs
    tsa_root: str
    tsa_chain: list[str]
    key_path: Path


def _now() -> datetime:
    return datetime.now(UTC)


def _ts(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")




def retired_keys(s: Settings) -> list[Retired]:
    path = s.data_dir / "notary" / ROTATIONS
    if not path.exists():
        return []
    out = []
    for r in json.loads(path.read_text()):
        base = s.data_dir / "notary" / "retired" / str(r["n"])
        out.append(Retired(r["n"], r["verifier_key"], r.get("valid_from"), r["valid_until"],
                           r["overlap_until"], r["tsa_root"], r["tsa_chain"],
                           base / "log-key.pem"))
    return out


def overlap_signers(s: Settings, passphrase: bytes | None) -> list[tuple[Signer, datetime]]:
    """Retired keys still inside their overlap, with the moment each stops co-signing."""
    out: list[tuple[Signer, datetime]] = []
    for r in retired_keys(s):
        until = parse_timestamp(r.overlap_until)
        if until > _now() and r.key_path.exists():
            out.append((FileSigner.load(s.origin, r.key_path, passphrase), until))
    return out


def rotate(s: Settings, *, overlap: timedelta, valid_from: str | None) -> Retired:
    """Retire the current log key and TSA chain (the caller makes the new ones)."""
    if s.key_backend != "file" or s.notary_url:
        raise InvalidInput("rotation here covers keys in files; for an HSM or a stand-alone "
                           "notary, rotate there (new key label) and re-init")
    notary = s.data_dir / "notary"
    done = retired_keys(s)
    n = max((r.n for r in done), default=0) + 1
    dest = notary / "retired" / str(n)
    dest.mkdir(parents=True, mode=0o700)
    now = _now()
    vkey = trusted_text(s.verifier_key_path, s.data_dir).strip()
    tsa_root = (s.tsa_dir / "root.pem").read_text()
    chain_text = (s.tsa_dir / "tsa.pem").read_text()
    shutil.move(str(s.log_key_path), dest / "log-key.pem")
    shutil.move(str(s.tsa_dir), dest / "tsa")
    record = {
        "n": n, "verifier_key": vkey, "valid_from": valid_from, "valid_until": _ts(now),
        "overlap_until": _ts(now + overlap), "tsa_root": tsa_root, "tsa_chain": [chain_text],
    }
    path = notary / ROTATIONS
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps([*(_record(r) for r in done), record], indent=2) + "\n")
    os.replace(tmp, path)
    return retired_keys(s)[-1]


def _record(r: Retired) -> dict[str, Any]:
    return {"n": r.n, "verifier_key": r.verifier_key, "valid_from": r.valid_from,
            "valid_until": r.valid_until, "overlap_until": r.overlap_until,
            "tsa_root": r.tsa_root, "tsa_chain": r.tsa_chain}


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
