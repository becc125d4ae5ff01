"""SM2 keys and PKCS#11 (D57): the evidence that SoftHSM2 offers no SM2 mechanism, and the
refusal an SM-suite registry or notary with PKCS#11 keys gets, in English and zh-CN.

SM2 is not ECDSA: ECDSA's s = k⁻¹(e + r·d) under a k the token picks, SM2's s = (1+d)⁻¹(k − r·d)
with r = e + x(kG). An ECDSA oracle does not give the second without d or k (the token reveals
neither), and CKM_ECDH1_DERIVE gives the point d·P, not a scalar. So without CKM_SM2 there is
no honest SM2 signature from the token; if SoftHSM2 ever offers one, the first test turns red
and D57 has to be revisited."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from copyledger.ledger.errors import InvalidInput
from copyledger.service.node import Node
from tests.helpers import settings_for
from tests.server import cli

MODULE = "/usr/lib/softhsm/libsofthsm2.so"

_LIST = """
import json, sys
import pkcs11
lib = pkcs11.lib(sys.argv[1])
slot = lib.get_slots()[0]
print(json.dumps(sorted(int(m) for m in slot.get_mechanisms())))
"""


def _softhsm_mechanisms(tmp: Path) -> set[int]:
    """The mechanism numbers SoftHSM2 offers, from a process with a token of its own."""
    (tmp / "tokens").mkdir()
    conf = tmp / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tmp}/tokens\nobjectstore.backend = file\n"
                    "log.level = ERROR\n")
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "mech", "--pin",
                    "123456", "--so-pin", "12345678"], env=env, check=True, capture_output=True)
    r = subprocess.run([sys.executable, "-c", _LIST, MODULE], env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return set(json.loads(r.stdout))


def test_softhsm2_offers_ecdsa_but_no_sm2_mechanism(tmp_path: Path) -> None:
    import pkcs11

    mechanisms = _softhsm_mechanisms(tmp_path)
    # What it does offer for elliptic curves: key generation, ECDSA, ECDH.
    for m in (pkcs11.Mechanism.EC_KEY_PAIR_GEN, pkcs11.Mechanism.ECDSA,
              pkcs11.Mechanism.ECDH1_DERIVE):
        assert int(m) in mechanisms, m
    # PKCS#11 (2.40 and 3.0) assigns SM2 no mechanism: tokens that sign SM2 do so with a
    # vendor-defined one (CKM_VENDOR_DEFINED and up). SoftHSM2 offers none at all.
    assert not any(m >= 0x80000000 for m in mechanisms), sorted(hex(m) for m in mechanisms)
    assert not [m.name for m in pkcs11.Mechanism if "SM2" in m.name]


def test_an_sm_suite_with_pkcs11_keys_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"no SM2 mechanism \(CKM_SM2\)") as e:
        Node.open(settings_for(tmp_path / "y", crypto_suite="sm", key_backend="pkcs11",
                               pkcs11_module=MODULE, pkcs11_token_label="t"))
    assert 'key_backend = "file"' in e.value.detail
    assert not (tmp_path / "y" / "data" / "notary" / "log-key.pem").exists()  # nothing made


@pytest.mark.parametrize("command", [("init",), ("notary", "init")])
def test_the_refusal_is_said_in_zh_cn(tmp_path: Path, command: tuple[str, ...]) -> None:
    env = {"COPYLEDGER_KEY_BACKEND": "pkcs11", "COPYLEDGER_PKCS11_MODULE": MODULE,
           "COPYLEDGER_PKCS11_TOKEN_LABEL": "t", "LANG": "zh_CN.UTF-8", "LC_ALL": "",
           "LC_MESSAGES": ""}
    r = cli(*command, "--data-dir", str(tmp_path / "d"), "--suite", "sm", env=env)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "CKM_SM2" in r.stderr and "SM2" in r.stderr
    assert "SM 套件" in r.stderr or "SM2 密钥" in r.stderr, r.stderr  # the zh-CN msgstr
