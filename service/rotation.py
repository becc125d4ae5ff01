"""Key rotation: a new log key and TSA certificate, without breaking what was signed before.

`copyledger notary rotate` moves the current key and TSA chain to `notary/retired/<n>/`, makes
new ones in their place (an SM-suite registry's SM2 note key and SM2 TSA chain too, D57), and
notes the retired key's validity in `notary/rotations.json`.
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

from copyledger.ledger import sm2
from copyledger.ledger.entry import parse_timestamp
from copyledger.ledger.errors import InvalidInput
from copyledger.ledger.sm2_timestamp import load_certificates
from copyledger.notary.signer import FileSigner, Signer
from copyledger.notary.sm2 import Sm2Signer
from copyledger.notary.sm2_tsa import SM2_ROOT_FILE, SM2_TSA_CERT_FILE
from copyledger.service.fsperm import trusted_text
from copyledger.service.settings import Settings

ROTATIONS = "rotations.json"
SM2_KEY_FILE = "log-sm2-key.pem"  # a retired SM2 note key, beside the retired log key


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
    # An SM-suite registry's SM2 note key and SM2 TSA chain, retired with the others (D57).
    sm2_verifier_key: str | None = None
    sm2_tsa_root: str | None = None
    sm2_tsa_certificate_sm3: str | None = None  # SM3 (hex) of the retired SM2 TSA cert's DER
    sm2_key_path: Path | None = None

    def sm2_retirement(self) -> dict[str, str] | None:
        """What a verifier needs to refuse an SM2 token its certificate signed after this
        rotation: the certificate (by SM3, as the token's ESS id names it) and when."""
        if self.sm2_tsa_certificate_sm3 is None:
            return None
        return {"certificate_sm3": self.sm2_tsa_certificate_sm3, "retired_at": self.valid_until}


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
                           base / "log-key.pem", r.get("sm2_verifier_key"),
                           r.get("sm2_tsa_root"), r.get("sm2_tsa_certificate_sm3"),
                           base / SM2_KEY_FILE if r.get("sm2_verifier_key") else None))
    return out


def overlapping(s: Settings) -> list[tuple[Retired, datetime]]:
    """Retired keys still inside their overlap (they co-sign), with the moment each stops."""
    now = _now()
    return [(r, until) for r in retired_keys(s)
            if (until := parse_timestamp(r.overlap_until)) > now]


def overlap_signers(s: Settings, passphrase: bytes | None) -> list[tuple[Signer, datetime]]:
    """Retired keys still inside their overlap, with the moment each stops co-signing."""
    return [(FileSigner.load(s.origin, r.key_path, passphrase), until)
            for r, until in overlapping(s) if r.key_path.exists()]


def overlap_sm2_signers(s: Settings,
                        passphrase: bytes | None) -> list[tuple[Sm2Signer, datetime]]:
    """Retired SM2 note keys still inside their overlap: they add their SM2 line, as the
    retired Ed25519 key adds its own, so a verifier that pinned either SM2 key accepts."""
    return [(Sm2Signer.load(s.origin, r.sm2_key_path, s.sm2_distid.encode(), passphrase), until)
            for r, until in overlapping(s)
            if r.sm2_key_path is not None and r.sm2_key_path.exists()]


def rotate(s: Settings, *, overlap: timedelta, valid_from: str | None) -> Retired:
    """Retire the current log key and TSA chain (the caller makes the new ones)."""
    if s.key_backend != "file" or s.notary_url:
        raise InvalidInput("rotation here covers keys in files; HSM keys and a stand-alone "
                           "notary's keys have no rotation yet (notary.md §6.2)")
    notary = s.data_dir / "notary"
    done = retired_keys(s)
    n = max((r.n for r in done), default=0) + 1
    dest = notary / "retired" / str(n)
    dest.mkdir(parents=True, mode=0o700)
    now = _now()
    vkey = trusted_text(s.verifier_key_path, s.data_dir).strip()
    tsa_root = (s.tsa_dir / "root.pem").read_text()
    chain_text = (s.tsa_dir / "tsa.pem").read_text()
    record: dict[str, Any] = {
        "n": n, "verifier_key": vkey, "valid_from": valid_from, "valid_until": _ts(now),
        "overlap_until": _ts(now + overlap), "tsa_root": tsa_root, "tsa_chain": [chain_text],
    }
    if s.sm_suite:  # the SM2 note key and SM2 TSA chain retire with the others (D57)
        sm2_cert = load_certificates((s.tsa_dir / SM2_TSA_CERT_FILE).read_bytes())[0]
        record |= {
            "sm2_verifier_key": trusted_text(s.sm2_verifier_key_path, s.data_dir).strip(),
            "sm2_tsa_root": (s.tsa_dir / SM2_ROOT_FILE).read_text(),
            "sm2_tsa_certificate_sm3": sm2.sm3_hex(sm2_cert),
        }
        shutil.move(str(s.sm2_key_path), dest / SM2_KEY_FILE)
    shutil.move(str(s.log_key_path), dest / "log-key.pem")
    shutil.move(str(s.tsa_dir), dest / "tsa")  # the SM2 TSA chain lives there too
    path = notary / ROTATIONS
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps([*(_record(r) for r in done), record], indent=2) + "\n")
    os.replace(tmp, path)
    return retired_keys(s)[-1]


def _record(r: Retired) -> dict[str, Any]:
    out: dict[str, Any] = {
        "n": r.n, "verifier_key": r.verifier_key, "valid_from": r.valid_from,
        "valid_until": r.valid_until, "overlap_until": r.overlap_until,
        "tsa_root": r.tsa_root, "tsa_chain": r.tsa_chain}
    if r.sm2_verifier_key is not None:
        out |= {"sm2_verifier_key": r.sm2_verifier_key, "sm2_tsa_root": r.sm2_tsa_root,
                "sm2_tsa_certificate_sm3": r.sm2_tsa_certificate_sm3}
    return out


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
