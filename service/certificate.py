"""The evidence certificate: a human-readable summary of one evidence bundle, in HTML and PDF.

A certificate is not itself evidence: it only says what the bundle says, and tells the reader
how to check the bundle without trusting us (the verification page, `copyledger verify`,
`sha256sum`, `openssl ts -verify`). So it is rendered from the bundle alone, escapes every
string a registrant chose, and shows a time-stamp as verified only when the token verifies.
"""

from __future__ import annotations

import base64
import dataclasses
import gc
import hashlib
import html
import io
import json
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from copyledger.ledger import cosignature, jcs, note, sm2
from copyledger.ledger.entry import parse_timestamp
from copyledger.ledger.errors import CopyledgerError
from copyledger.ledger.sm2_timestamp import verify_sm2_token
from copyledger.ledger.timestamp import load_pem_certs, verify_token
from copyledger.service import accounts
from copyledger.service.dates import beside_utc, both_times, human_time, times_note, zone
from copyledger.service.i18n import DEFAULT, gettext
from copyledger.service.rendercache import RenderCache, Slots, busy

if TYPE_CHECKING:
    from copyledger.service._pdf import Pdf

__all__ = ["Deposit", "Facts", "certificate_html", "certificate_pdf", "deposit",
           "deposit_number", "facts", "openssl_commands", "pdf_cache", "qr_png", "render_pdf"]

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")  # Debian: fonts-dejavu-core
# The CJK font the project installs (.ci/system-deps: fonts-wqy-microhei, TrueType outlines
# in a collection, which fpdf2 embeds and subsets); the others are used when installed.
CJK_FONT = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")
FALLBACK_FONTS = (  # for scripts DejaVu lacks (CJK)
    CJK_FONT,
    Path("/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf"),  # fonts-droid-fallback
)


RENDER_SLOTS = 2  # PDF renders at once in this process; the others queue (D53)
# The longest a render queues for a slot before it is refused (D53, D74): long enough that a
# machine with every core busy still serves each request, since a waiter holds no thread (D75).
RENDER_WAIT_S = 60.0
# The most renders that may queue for a slot in this process; one more is refused at once (503,
# Retry-After) with nothing rendered (D75): above the soak's 50 connections, so no client of
# that mix is refused even if every one asks for a PDF at once, and about what two slots can
# render within RENDER_WAIT_S at 1.9 s a render (a loaded machine: 0.66 s of CPU each); a
# waiter past it would most likely wait its 60 s for nothing.
RENDER_QUEUE = 64
_RENDER_SLOTS = Slots(RENDER_SLOTS, limit=RENDER_QUEUE)  # shared by every caller in the process


def N_(s: str) -> str:
    """Marks an English label as a msgid (tests/i18n_catalog.py extracts it); translated where
    it is shown, with `gettext`."""
    return s


def _t(lang: str, s: str) -> str:
    return gettext(lang, s)


DEFAULT_TITLE = "Certificate of a log entry"
TITLES = {
    "work": "Certificate of registration",
    "evidence": "Certificate of evidence deposit",
    "transfer": "Certificate of a recorded transfer of rights",
    "acceptance": "Certificate of an accepted assignment of rights",
    "withdrawal": "Certificate of a withdrawn offer of assignment",
}
MAX_METADATA_CHARS = 600
# A recorded code in words (msgids): a transfer's type and a work's type, as `in_words` says
# them; the explorer says a transfer's type with this table too.
TRANSFER_TYPES = {"assignment": N_("assignment"), "exclusive_licence": N_("exclusive licence"),
                  "non_exclusive_licence": N_("non-exclusive licence")}
WORK_TYPES = {"text": N_("text"), "image": N_("image"), "audio": N_("audio"),
              "video": N_("video"), "software": N_("software"), "dataset": N_("dataset"),
              "other": N_("other")}


def in_words(value: object, words: Mapping[str, str], lang: str = DEFAULT) -> str | None:
    """A code the entry records (a transfer's type, a regime) in `lang`'s words, with the code
    beside as the signed entry holds it, which a court may quote: "独占许可 (exclusive_licence)".
    The words alone where they are the code's own ("exclusive licence"); a code with no words
    (a newer one) as it is; None stays None (a row left out)."""
    if value is None:
        return None
    code = str(value)
    if code not in words:
        return code
    named = _t(lang, words[code])
    if named.replace("-", " ").lower() == code.replace("_", " ").lower():
        return named
    return _t(lang, "{words} ({code})").format(words=named, code=code)


@dataclass(frozen=True)
class Stamp:
    """One RFC 3161 token as the certificate reports it."""

    tsa: str  # "notary" (our TSA) or the external TSA's URL, as the bundle names it
    authority: str  # subject of the TSA certificate that signed, when the token verifies
    gen_time: str  # ISO 8601 UTC, when the token verifies
    status: str  # "verified ..." or "not verified: why"
    serial: str = ""  # the token's serial number in hex, when it verifies
    own: bool = False  # by the registry's own TSA: the operator's word, not independent (D177)


@dataclass(frozen=True)
class Facts:
    """Everything a certificate prints, as plain strings, in display order."""

    title: str
    seq: int
    origin: str
    kind: str
    registrant: str
    received_at: str
    described: list[tuple[str, str]]  # what the entry says about the work/evidence/transfer
    hashes: list[tuple[str, str]]
    block_height: int
    block_hash: str
    sealed_at: str
    checkpoint_size: int
    checkpoint_root: str
    checkpoint: str  # the signed note, verbatim
    verifier_keys: list[str]
    stamps: list[Stamp] = field(default_factory=list)
    witnesses: list[tuple[str, str]] = field(default_factory=list)  # (witness, what it signed)
    registrant_name: str = ""  # the operator's statement of who the account is (D50), or ""
    registrant_kind: str = ""  # "person" or "organisation", with the name
    zone: str = "UTC"  # the viewer's time zone, for the time lines


WITNESS_NOTE = ("Witnesses are independent parties that cosign a checkpoint only if it extends "
                "every checkpoint they cosigned before, so the log cannot show this tree to one "
                "person and another tree to someone else. The cosignatures are listed as the "
                "bundle carries them; check them against the witnesses' published keys with "
                "copyledger verify --witness <key>.")


def facts(bundle: dict[str, Any], lang: str = DEFAULT,
          profile: Mapping[str, str] | None = None, tz: str | None = None) -> Facts:
    """Pick the certificate's facts out of a bundle (the server's own, so shape is trusted;
    content is not: every string may be anything a registrant typed). Labels stay English
    msgids (`N_`), translated where shown; values in words are in `lang`. `profile` is the
    registrant account's display name and kind (`service.accounts`), `tz` the viewer's zone."""
    entry = bundle["entry"]
    block = bundle["block"]
    cp = note.parse_checkpoint(note.parse_note(bundle["checkpoint"]).text)
    kind = str(entry.get("kind", ""))
    return Facts(
        title=_t(lang, TITLES.get(kind, DEFAULT_TITLE)),
        seq=int(bundle["seq"]),
        origin=str(bundle["origin"]),
        kind=kind,
        registrant=str(entry.get("registrant", "")),
        received_at=str(entry.get("received_at", "")),
        described=_described(entry, lang),
        hashes=_hashes(entry, lang),
        block_height=int(block["height"]),
        block_hash=str(block["hash"]),
        sealed_at=str(block["header"]["sealed_at"]),
        checkpoint_size=cp.size,
        checkpoint_root=cp.root.hex(),
        checkpoint=str(bundle["checkpoint"]),
        verifier_keys=[str(k["verifier_key"]) for k in bundle["notary"]["log_keys"]],
        stamps=[_stamp(bundle, i, lang) for i in range(len(bundle["timestamps"]))],
        witnesses=_witnesses(bundle, lang),
        registrant_name=str((profile or {}).get("display_name", "")),
        registrant_kind=str((profile or {}).get("kind", "")),
        zone=zone(lang, tz),
    )


def _registrant(f: Facts, lang: str) -> str:
    """The account id, with the operator's statement of who it is when there is one."""
    return accounts.beside(f.registrant, {"display_name": f.registrant_name,
                                          "kind": f.registrant_kind}, lang)


def _witnesses(bundle: dict[str, Any], lang: str) -> list[tuple[str, str]]:
    """Who cosigned the bundle's witnessed checkpoint (signature lines shaped as cosignature/v1:
    a timestamp and an Ed25519 signature), with the tree size and the time they state."""
    witnessed = bundle.get("witnessed")
    if not witnessed:
        return []
    signed = note.parse_note(witnessed["checkpoint"])
    size = note.parse_checkpoint(signed.text).size
    rows = []
    for sig in signed.signatures:
        try:
            cosig = cosignature.Cosignature.from_note_signature(sig)
        except CopyledgerError:
            continue  # the log's own signature
        try:
            when = datetime.fromtimestamp(cosig.timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        except (OverflowError, ValueError, OSError):
            when = f"POSIX time {cosig.timestamp}"
        rows.append((cosig.name, _t(lang, "cosigned tree size {size} at {when} (key ID {key}; "
                                          "not checked here)").format(
                                              size=size, when=when, key=cosig.key_id.hex())))
    return rows


def _described(entry: dict[str, Any], lang: str) -> list[tuple[str, str]]:
    kind = entry.get("kind")
    rows: list[tuple[str, object]] = []
    if kind == "work":
        rows = [(N_("Title"), entry.get("title")),
                (N_("Work type"), in_words(entry.get("work_type"), WORK_TYPES, lang)),
                (N_("Creators"), "; ".join(map(str, entry.get("creators") or []))),
                (N_("Licence"), entry.get("license"))]
    elif kind == "evidence":
        rows = [(N_("Description"), entry.get("description")),
                (N_("Source URL"), entry.get("source_url")),
                (N_("Captured at"), entry.get("captured_at")),
                (N_("Capture method"), entry.get("capture_method")),
                (N_("Related work"), _seq(entry.get("related_work"), lang))]
    elif kind == "transfer":
        work = entry.get("work") or {}
        term = entry.get("term") or {}
        rows = [(N_("Work"), _seq(work.get("seq"), lang)),
                (N_("Type"), in_words(entry.get("transfer_type"), TRANSFER_TYPES, lang)),
                (N_("From"), entry.get("from")), (N_("To"), entry.get("to")),
                (N_("Territory"), entry.get("territory")),
                (N_("Term"), _t(lang, " to ").join(str(term[k]) for k in ("start", "end")
                                                   if k in term)),
                (N_("Terms SHA-256"), entry.get("terms_sha256")), (N_("Note"), entry.get("note")),
                (N_("Awaits acceptance"),
                 _t(lang, "yes: an offer, until its recipient accepts it")
                 if entry.get("needs_acceptance") else None)]
    elif kind in ("acceptance", "withdrawal"):
        work = entry.get("work") or {}
        rows = [(N_("Work"), _seq(work.get("seq"), lang)),
                (N_("Offer"), _seq(entry.get("offer"), lang)),
                (N_("Accepted by") if kind == "acceptance" else N_("Withdrawn by"),
                 entry.get("registrant")), (N_("Note"), entry.get("note"))]
    if entry.get("metadata"):
        meta = json.dumps(entry["metadata"], ensure_ascii=False, sort_keys=True)
        if len(meta) > MAX_METADATA_CHARS:
            meta = meta[:MAX_METADATA_CHARS] + _t(lang, " … (see the bundle)")
        rows.append((N_("Metadata"), meta))
    return [(k, str(v)) for k, v in rows if v not in (None, "")]


def _seq(v: object, lang: str) -> str | None:
    return None if v is None else _t(lang, "entry {seq} of this log").format(seq=v)


def _hashes(entry: dict[str, Any], lang: str) -> list[tuple[str, str]]:
    content = entry.get("content") or entry.get("work") or {}
    rows = [(N_("SHA-256"), str(content.get("sha256", "")))]
    if "size" in content:
        rows.append((N_("Size"), _t(lang, "{n} bytes").format(n=content["size"])))
    if "media_type" in content:
        rows.append((N_("Media type"), str(content["media_type"])))
    for k, v in content.items():
        if k == "fingerprints" and isinstance(v, dict):
            rows += [(_t(lang, "Fingerprint ({name})").format(name=name), _fingerprint(fp, lang))
                     for name, fp in v.items()]
        elif k not in ("sha256", "size", "media_type", "seq"):
            rows.append((str(k), _short(v, lang)))
    return rows


def _fingerprint(fp: object, lang: str) -> str:
    """A perceptual hash in a line: its hash when it has one (PDQ, pHash), else a pointer to
    the bundle (a MinHash signature is kilobytes of base64 no reader compares by eye)."""
    if isinstance(fp, dict) and isinstance(fp.get("hash"), str):
        quality = (_t(lang, " (quality {q})").format(q=fp["quality"]) if "quality" in fp
                   else "")
        return f"{fp['hash']}{quality}"
    return _t(lang, "recorded in the bundle (entry.content.fingerprints)")


def _short(v: object, lang: str) -> str:
    text = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= 200 else text[:200] + _t(lang, " … (see the bundle)")


def _stamp(bundle: dict[str, Any], i: int, lang: str = DEFAULT) -> Stamp:
    """Verify token i over the block hash under the bundle's own TSA roots: the certificate
    reports a time only when a signature vouches for it."""
    t = bundle["timestamps"][i]
    tsa = str(t.get("tsa", ""))
    try:
        notary = bundle["notary"]
        info = verify_token(
            base64.b64decode(t["token"], validate=True),
            bytes.fromhex(bundle["block"]["hash"]),
            "".join(notary["tsa_roots"]).encode(),
            untrusted_pem="".join(notary.get("tsa_chain", [])).encode() or None,
        )
        # The operator's own TSA (as `copyledger verify` tells it, docs/verification.md
        # §10.2): the first tsa_roots string, and the notary's TSA certificates.
        own = [*load_pem_certs(str(notary["tsa_roots"][0]).encode()),
               *load_pem_certs("".join(notary.get("tsa_chain", [])).encode())]
    except (CopyledgerError, KeyError, TypeError, ValueError, IndexError) as e:
        why = e.detail if isinstance(e, CopyledgerError) else f"malformed token ({e})"
        return Stamp(tsa, "", "", _t(lang, "not verified: {why}").format(why=why))
    gen = info.gen_time.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return Stamp(tsa, info.tsa_certificate.subject.rfc4514_string(), gen,
                 _t(lang, "verified over the block hash under the bundle's TSA root "
                          "certificate"), f"{info.serial_number:x}",
                 own=info.root in own or info.tsa_certificate in own)


def base_url(verify_url: str) -> str:
    """The registry's address, from its verification URL ({base}/verify?seq=N)."""
    parts = urlsplit(verify_url)
    path = parts.path[: -len("/verify")] if parts.path.endswith("/verify") else ""
    return f"{parts.scheme}://{parts.netloc}{path}"


def openssl_commands(bundle: dict[str, Any], i: int = 0, name: str = "bundle.json") -> list[str]:
    """Shell commands that check time-stamp token i with OpenSSL (and jq) alone."""
    chain = bool(bundle["notary"].get("tsa_chain"))
    cmds = [
        f"jq -r '.timestamps[{i}].token' {name} | base64 -d > token.der",
        f"jq -r '.notary.tsa_roots[]' {name} > root.pem",
    ]
    if chain:
        cmds.append(f"jq -r '.notary.tsa_chain[]' {name} > chain.pem")
    cmds.append(
        f"openssl ts -verify -digest {bundle['block']['hash']} -in token.der -token_in "
        "-CAfile root.pem" + (" -untrusted chain.pem" if chain else "")
    )
    return cmds


def _instructions(f: Facts, bundle: dict[str, Any], verify_url: str,
                  lang: str = DEFAULT) -> list[tuple[str, str, list[str]]]:
    """(heading, plain-language text, commands) for each independent way to check."""
    base = base_url(verify_url)
    vkey = f.verifier_keys[0] if f.verifier_keys else "KEY"
    sha = f.hashes[0][1]
    items = [
        (_t(lang, "1. In a web browser"),
         _t(lang, "Open {url} (or scan the QR code) and choose the file. Your browser computes "
                  "the file's SHA-256 and checks the proofs and signatures itself; the file is "
                  "not uploaded. The page also accepts a saved bundle file instead of the "
                  "address.").format(url=verify_url), []),
        (_t(lang, "2. With the copyledger program, offline"),
         _t(lang, "Save the evidence bundle once, then check it with no network. Take the log "
                  "key from the operator's own publication, not from this certificate, and "
                  "pass it with --trust."),
         [f"copyledger bundle {f.seq} -o bundle.json --server {shlex.quote(base)}",
          f"copyledger verify bundle.json EXHIBIT-FILE --trust {shlex.quote(vkey)}"]),
        (_t(lang, "3. The file's fingerprint, with standard tools"),
         _t(lang, "The SHA-256 of the exhibit must be {sha}.").format(sha=sha),
         ["sha256sum EXHIBIT-FILE"]),
    ]
    if bundle["timestamps"]:
        items.append((
            _t(lang, "4. The trusted time, with OpenSSL"),
            _t(lang, "The RFC 3161 token covers block hash {hash}. OpenSSL must print "
                     "\"Verification: OK\". Compare root.pem with the time-stamp authority's "
                     "published root certificate.").format(hash=f.block_hash)
            + (_t(lang, " The bundle holds {n} tokens; for token i, write .timestamps[i] in "
                        "the first command.").format(n=len(f.stamps))
               if len(f.stamps) > 1 else ""),
            openssl_commands(bundle)))
    items.append((
        _t(lang, "{n}. With any RFC 6962 / C2SP verifier").format(n=len(items) + 1),
        _t(lang, "The bundle's tlog_proof field is the c2sp.org/tlog-proof form of the inclusion "
                 "proof and signed checkpoint; Go's golang.org/x/mod/sumdb packages and other "
                 "transparency-log tools read it."), []))
    return items


LIMITS = (
    "What this shows: that the holder of the log key recorded exactly this content hash, with "
    "these details, for this account, in the signed tree of the block that sealed it; and that "
    "the time-stamp authority saw that block no later than the time shown. It does not show "
    "who owns the rights: the registry records claims, it does not decide them."
)


TEXT: dict[str, str] = {  # the certificate's words for a reader who is not an engineer (page 1)
    "for_reader": "For the reader",
    "for_expert": "Technical detail, for an expert",
    "expert_intro": "Everything a technical expert needs to check this certificate "
                    "independently, without trusting the registry: the exact values, the "
                    "signatures and the commands.",
    "summary": "This certifies that the account {who} registered the file described below with "
               "the copyright evidence registry {origin} on {when}, as entry {seq} of its "
               "public log.",
    "what": "What was registered",
    "who_when": "Who registered it, and when",
    "fingerprint": "File fingerprint (SHA-256)",
    "fingerprint_note": "A file's fingerprint changes completely if even one byte of the file "
                        "changes: a re-saved, resized or converted copy has a different one.",
    "registered_by": "Registered by (account)",
    "registered_on": "Registered on",
    "timestamp": "Time-stamped",
    "timestamp_by": "{when}, by {authority}, a time-stamp authority outside the registry",
    "timestamp_own": "{when}, by {authority}, the registry's own time-stamp authority (the "
                     "operator's statement, not an independent one)",
    "timestamp_none": "no verified time-stamp in this record",
    "sealed_on": "Sealed into the public log",
    "sealed_text": "{when} (block {height})",
    "proves": "What this proves",
    "not_proves": "What this does not prove",
    "check": "How to check it",
    "check_text": "Scan the code, or open {url}, and choose the file: the page tells you in "
                  "plain words whether it is exactly the registered file. It runs in your "
                  "browser and does not upload the file. Page 2 explains how an expert can check "
                  "everything independently.",
    "entry_n": "entry {seq}",
    "qr_alt": "QR code for {url}",
    "scan": "Scan to verify",
    "verify_at": "Verify at",
    "none": "none",
    "no_token": "no token",
    "log_key": "Log key (the operator publishes it; compare before trusting):",
}

PROVES = (  # page 1: what the certificate proves, in plain words
    "That exactly this file (identified by its fingerprint) was registered by this account "
    "at the time shown, and that the record has not been changed since.",
    "That the record is part of a public log that cannot be rewritten without anyone who "
    "checks it noticing.",
)
PROVES_TIME = (  # and, only with a token by a TSA other than the registry's own (D177)
    "That a time-stamp authority outside the registry saw the record no later than the time "
    "stamped (whether you trust that authority is yours to decide: page 2 names it)."
)
NOT_PROVES = (  # page 1: and what it does not
    "Who owns the copyright: the registry records who registered what and when; it does "
    "not decide rights.",
    "That the person behind the account is who they say they are, beyond how the registry "
    "identified its account holders.",
    "That any other file is the same work: a copy that differs by even one byte has a "
    "different fingerprint.",
)


def _shown_stamp(stamps: list[Stamp]) -> Stamp | None:
    """The token a certificate shows: the first that verifies, another TSA's before the
    registry's own (D177), which page 1 and the deposit record both name (D186)."""
    verified = [s for s in stamps if s.gen_time]
    return next((s for s in verified if not s.own), verified[0] if verified else None)


def _judge(f: Facts, lang: str = DEFAULT) -> dict[str, Any]:
    """Page 1's facts, in words: the summary, what and who/when rows (labels translated)."""
    t = _text(lang)
    stamp = _shown_stamp(f.stamps)
    authority = ""
    if stamp is not None:
        cn = [p[3:] for p in stamp.authority.split(",") if p.startswith("CN=")]
        authority = cn[0] if cn else stamp.authority or stamp.tsa
    what = [r for r in f.described if r[0] != "Metadata"]
    what += [(t["fingerprint"], f.hashes[0][1])] + [r for r in f.hashes[1:]
                                                     if r[0] in ("Size", "Media type")]
    who = [
        (t["registered_by"], _registrant(f, lang)),
        (t["registered_on"], both_times(f.received_at, lang, f.zone)),
        (t["timestamp"], t["timestamp_own" if stamp.own else "timestamp_by"].format(
            when=both_times(stamp.gen_time, lang, f.zone), authority=authority)
         if stamp is not None else t["timestamp_none"]),
        (t["sealed_on"], t["sealed_text"].format(when=both_times(f.sealed_at, lang, f.zone),
                                                 height=f.block_height)),
    ]
    quote = _t(lang, '"{who}"').format(who=f.registrant)
    proves = [PROVES[0], *([PROVES_TIME] if stamp is not None and not stamp.own else []),
              PROVES[1]]
    return {"summary": t["summary"].format(who=quote, origin=f.origin,
                                           when=human_time(f.received_at, lang), seq=f.seq),
            "what": _labels(what, lang), "who": who, "proves": proves}


def _text(lang: str) -> dict[str, str]:
    return {k: _t(lang, v) for k, v in TEXT.items()}


def _labels(rows: list[tuple[str, str]], lang: str) -> list[tuple[str, str]]:
    """Rows with their (English msgid) labels in `lang`."""
    return [(_t(lang, k), v) for k, v in rows]


def _mono(lang: str) -> frozenset[str]:
    """The labels whose values are hashes, shown in a monospaced font."""
    return frozenset(_t(lang, k) for k in (N_("SHA-256"), N_("Block hash"), N_("Root hash"),
                                           N_("Terms SHA-256"), TEXT["fingerprint"]))


def qr_png(url: str) -> bytes:
    """A QR code (error correction M, quiet zone 4) for url, as PNG bytes."""
    import qrcode  # type: ignore[import-untyped]  # here, not at start: D54
    from qrcode.image.pil import PilImage  # type: ignore[import-untyped]

    qr = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, box_size=8, border=4)
    qr.add_data(url)
    qr.make(fit=True)
    buf = io.BytesIO()
    qr.make_image(image_factory=PilImage).save(buf, format="PNG")
    return buf.getvalue()


# ---------------------------------------------------------------- the deposit record (D51)
# Issue 15 item 5: what a certificate of electronic evidence deposit (电子数据存证证书) states
# in Chinese practice, beside what the certificate already shows: the deposit number, every
# hash with its algorithm, the deposit time and its source (the TSA and the token's serial),
# the block's height and hash, how to verify in plain words, and what the deposit does and
# does not prove.

DEPOSIT = {
    "heading": N_("Deposit record"),
    "number": N_("Deposit number"),
    "number_note": N_("The deposit number is CL-, the first 8 hexadecimal digits (upper case) "
                      "of the SHA-256 of the log's name ({origin}), a hyphen, and the entry's "
                      "number in the log, in 12 digits: it names this entry of this log and "
                      "no other, and anyone can recompute it."),
    "file_sha256": N_("File hash (SHA-256)"),
    "file_sm3": N_("File hash (SM3)"),
    "block_sha256": N_("Block hash (SHA-256)"),
    "header_sm3": N_("Block header hash (SM3)"),
    "height": N_("Block height"),
    "time": N_("Deposit time"),
    "time_value": N_("{when} (UTC {utc})"),
    "source": N_("Time source"),
    "source_value": N_("{authority}: RFC 3161 time-stamp token, serial number {serial}, "
                       "verified over the block hash"),
    "source_own": N_("{authority}, the registry's own time-stamp authority (the operator's "
                     "statement): RFC 3161 time-stamp token, serial number {serial}, verified "
                     "over the block hash"),
    "sm2_source": N_("Time source (SM2/SM3)"),
    "sm2_source_value": N_("{authority}: SM2/SM3 RFC 3161 time-stamp token, serial number "
                           "{serial}, verified over the block header's SM3 hash"),
    "no_source": N_("no verified time-stamp token: the time shown is the registry's own clock "
                    "when it sealed the block"),
    "method": N_("Verification method"),
    "method_text": N_("Compute the hash of the exhibit file and compare it with the file hash "
                      "above; then check, with the evidence bundle, that the entry is in the "
                      "log's signed tree (an RFC 6962 Merkle proof), that the block and its "
                      "signed checkpoint name that tree, and that the time-stamp tokens verify "
                      "over the block. The verification page, the copyledger program and "
                      "standard tools (sha256sum, OpenSSL) each do this without trusting the "
                      "registry; page 2 gives the commands."),
    "sm_method_text": N_("This registry uses the SM suite as well: SM3 hashes, an SM2 "
                         "signature on each checkpoint and block note, and an SM2/SM3 "
                         "time-stamp token, which copyledger verify checks and the OpenSSL "
                         "command line checks piece by piece (openssl dgst -sm3, openssl "
                         "pkeyutl -verify with the SM2 distinguishing ID 1234567812345678)."),
    "statement": N_("Statement"),
    "does": N_("This deposit proves that the file with the hash above existed, unchanged, no "
               "later than the deposit time, and that the record has been kept in a public "
               "append-only log since then: anyone can detect a change."),
    "does_not": N_("It does not prove who created the work or owns its rights, that the "
                   "content is lawful or true, or who stands behind the account. It is not a "
                   "notarisation by a notary office nor a forensic appraisal; a court weighs "
                   "it with the other evidence."),
}


def deposit_number(origin: str, seq: int) -> str:
    """CL-<first 8 hex digits, upper case, of SHA-256(origin)>-<seq in 12 digits>: stable,
    derived from the log alone, different for each log and entry (docs/zh-CN/verification.md)."""
    return f"CL-{hashlib.sha256(origin.encode()).hexdigest()[:8].upper()}-{seq:012d}"


@dataclass(frozen=True)
class Deposit:
    """The deposit record's rows, in `lang`, and whether the SM suite is in use."""

    origin: str
    rows: list[tuple[str, str]]
    sm_suite: bool


def deposit(bundle: dict[str, Any], f: Facts, lang: str = DEFAULT) -> Deposit:
    """The deposit record of a bundle: times only from tokens that verify under the bundle's
    own roots (as `_stamp`), hashes with their algorithms."""
    d = {k: _t(lang, v) for k, v in DEPOSIT.items()}
    content = bundle["entry"].get("content") or {}
    rows = [(d["number"], deposit_number(f.origin, f.seq)),
            (d["file_sha256"], f.hashes[0][1])]
    if isinstance(content.get("sm3"), str):
        rows.append((d["file_sm3"], content["sm3"]))
    rows += [(d["height"], str(f.block_height)), (d["block_sha256"], f.block_hash)]
    sm2_stamp = _sm2_stamp(bundle)
    if sm2_stamp is not None:
        rows.append((d["header_sm3"], sm2_stamp[2]))
    stamp = _shown_stamp(f.stamps)
    when = stamp.gen_time if stamp is not None else f.sealed_at
    rows.append((d["time"], d["time_value"].format(when=human_time(when, lang), utc=when)))
    if stamp is not None:
        rows.append((d["source"], d["source_own" if stamp.own else "source_value"].format(
            authority=stamp.authority or stamp.tsa, serial=stamp.serial)))
    else:
        rows.append((d["source"], d["no_source"]))
    if sm2_stamp is not None:
        rows.append((d["sm2_source"], d["sm2_source_value"].format(
            authority=sm2_stamp[0], serial=sm2_stamp[1])))
    return Deposit(f.origin, rows, bool(bundle["notary"].get("sm2_keys")))


def _sm2_stamp(bundle: dict[str, Any]) -> tuple[str, str, str] | None:
    """(TSA subject, serial in hex, header SM3 in hex) of the first SM2/SM3 token that verifies
    under the bundle's SM2 TSA roots; None if there is none."""
    header_sm3 = sm2.sm3(jcs.canonicalize(bundle["block"]["header"]))
    roots = "".join(bundle["notary"].get("sm2_tsa_roots") or []).encode()
    for t in bundle.get("sm2_timestamps") or []:
        try:
            info = verify_sm2_token(base64.b64decode(t["token"], validate=True), header_sm3,
                                    roots)
        except (CopyledgerError, KeyError, TypeError, ValueError):
            continue
        return info.tsa_subject, f"{info.serial_number:x}", header_sm3.hex()
    return None


def _deposit_html(dep: Deposit, lang: str) -> str:
    d = {k: _t(lang, v) for k, v in DEPOSIT.items()}
    mono = frozenset(d[k] for k in ("file_sha256", "file_sm3", "block_sha256", "header_sm3"))
    method = d["method_text"] + (" " + d["sm_method_text"] if dep.sm_suite else "")
    return (f'<section class="deposit" aria-labelledby="deposit-h">'
            f'<h3 id="deposit-h">{_e(d["heading"])}</h3><table>{_rows(dep.rows, mono)}</table>'
            f'<p class="note">{_e(d["number_note"].format(origin=dep.origin))}</p>'
            f'<h4>{_e(d["method"])}</h4><p>{_e(method)}</p>'
            f'<h4>{_e(d["statement"])}</h4><p>{_e(d["does"])}</p><p>{_e(d["does_not"])}</p>'
            "</section>")


def _deposit_pdf(pdf: Pdf, dep: Deposit, lang: str) -> None:
    d = {k: _t(lang, v) for k, v in DEPOSIT.items()}
    mono = frozenset(d[k] for k in ("file_sha256", "file_sm3", "block_sha256", "header_sm3"))
    pdf.heading(d["heading"])
    pdf.rows(dep.rows, mono)
    pdf.para(d["number_note"].format(origin=dep.origin), 8)
    pdf.para(d["method"], 9.5, "B")
    pdf.para(d["method_text"] + (" " + d["sm_method_text"] if dep.sm_suite else ""), 9)
    pdf.para(d["statement"], 9.5, "B")
    pdf.para(d["does"], 9)
    pdf.para(d["does_not"], 9)


# ---------------------------------------------------------------- HTML

_CSS = """
body{font-family:system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem;
color:#111;line-height:1.4}
h1{font-size:1.6rem;margin-bottom:.2rem} h2{font-size:1.15rem;margin-top:1.6rem;
border-bottom:1px solid #ccc} .sub{color:#555;margin-top:0}
table{border-collapse:collapse;width:100%} th{text-align:left;vertical-align:top;
width:13rem;padding:.2rem .6rem .2rem 0;font-weight:600} td{padding:.2rem 0;
overflow-wrap:anywhere} code,pre,.mono{font-family:ui-monospace,monospace;font-size:.85rem}
pre{background:#f4f4f4;padding:.5rem;white-space:pre-wrap;overflow-wrap:anywhere}
.qr{float:right;margin:0 0 1rem 1rem;text-align:center;font-size:.8rem}
.qr img{width:10rem;height:10rem;image-rendering:pixelated}
.bad{color:#a00} .ok{color:#060} .lead{font-size:1.1rem} .note{color:#444;font-size:.9rem}
.vh{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}
.expert{margin-top:3rem;border-top:2px solid #888}
@media print{body{margin:0;max-width:none} a{color:inherit} .expert{break-before:page;
border-top:none;margin-top:0}}
"""


def _e(s: object) -> str:
    return html.escape(str(s), quote=True)


def _rows(rows: list[tuple[str, str]], mono: frozenset[str] = frozenset()) -> str:
    cls = ' class="mono"'
    return "".join(f'<tr><th>{_e(k)}</th>'
                   f"<td{cls if k in mono else ''}>{_e(v)}</td></tr>" for k, v in rows)


def certificate_html(bundle: dict[str, Any], verify_url: str, lang: str = DEFAULT,
                     profile: Mapping[str, str] | None = None, tz: str | None = None) -> str:
    """The certificate as one self-contained HTML page (no scripts, no external resources):
    first what a judge reads, in words; then, from a new printed page, the expert's detail.
    In `lang`; the values (names, hashes, keys, commands) as recorded."""
    f = facts(bundle, lang, profile, tz)
    t = _text(lang)
    j = _judge(f, lang)
    qr = base64.b64encode(qr_png(verify_url)).decode()
    stamps = "".join(
        f"<tr><th>{_e(s.tsa)}</th><td>"
        + (f"{_e(s.gen_time)}<br>{_e(s.authority)}<br><span class=\"ok\">{_e(s.status)}</span>"
           if s.gen_time else f"<span class=\"bad\">{_e(s.status)}</span>")
        + "</td></tr>" for s in f.stamps) or (f"<tr><th>{_e(t['none'])}</th>"
                                              f"<td>{_e(t['no_token'])}</td></tr>")
    howto = "".join(
        f"<h4>{_e(h)}</h4><p>{_e(text)}</p>"
        + (f"<pre>{_e(chr(10).join(cmds))}</pre>" if cmds else "")
        for h, text, cmds in _instructions(f, bundle, verify_url, lang))
    registration = _labels([(N_("Registrant"), _registrant(f, lang)),
                            (N_("Registered at"), f.received_at), (N_("Log"), f.origin),
                            (N_("Entry number (seq)"), str(f.seq)), *f.described], lang)
    block = _labels([(N_("Block height"), str(f.block_height)), (N_("Block hash"), f.block_hash),
                     (N_("Block sealed at"), f.sealed_at)], lang)
    checkpoint = _labels([(N_("Log (origin)"), f.origin),
                          (N_("Tree size"), str(f.checkpoint_size)),
                          (N_("Root hash"), f.checkpoint_root)], lang)
    mono = _mono(lang)
    witnesses = _rows(f.witnesses) or _rows([(t["none"],
                                              _t(lang, "no witnessed checkpoint in the bundle"))])
    items = "".join
    return f"""<!doctype html>
<html lang="{_e(lang)}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>{_e(f.title)} — {_e(t["entry_n"].format(seq=f.seq))}</title>
<style>{_CSS}</style></head>
<body><main>
<section aria-labelledby="reader-h">
<div class="qr"><img src="data:image/png;base64,{qr}"
alt="{_e(t["qr_alt"].format(url=verify_url))}"><br>
{_e(t["scan"])}</div>
<h1>{_e(f.title)}</h1>
<p class="sub">{_e(_t(lang, "Entry {seq} of the transparency log {origin}")
                   .format(seq=f.seq, origin=f.origin))}</p>
<h2 id="reader-h" class="vh">{_e(t["for_reader"])}</h2>
<p class="lead">{_e(j["summary"])}</p>
<h2>{_e(t["what"])}</h2><table>{_rows(j["what"], mono)}</table>
<p class="note">{_e(t["fingerprint_note"])}</p>
<h2>{_e(t["who_when"])}</h2><table>{_rows(j["who"])}</table>
<h2>{_e(t["proves"])}</h2><ul>{items(f"<li>{_e(_t(lang, x))}</li>" for x in j["proves"])}</ul>
<h2>{_e(t["not_proves"])}</h2><ul>{items(f"<li>{_e(_t(lang, x))}</li>" for x in NOT_PROVES)}</ul>
<h2>{_e(t["check"])}</h2>
<p>{_e(t["check_text"].format(url=verify_url))}</p>
<p>{_e(t["verify_at"])} <a href="{_e(verify_url)}">{_e(verify_url)}</a></p>
<p class="note">{_e(times_note(lang, beside_utc(lang, f.zone)))}</p>
</section>
<section class="expert" aria-labelledby="expert-h">
<h2 id="expert-h">{_e(t["for_expert"])}</h2><p>{_e(t["expert_intro"])}</p>
{_deposit_html(deposit(bundle, f, lang), lang)}
<h3>{_e(_t(lang, "Registration"))}</h3><table>{_rows(registration)}</table>
<h3>{_e(_t(lang, "Content"))}</h3><table>{_rows(_labels(f.hashes, lang), mono)}</table>
<h3>{_e(_t(lang, "Block"))}</h3><table>{_rows(block, mono)}</table>
<h3>{_e(_t(lang, "Signed checkpoint"))}</h3><table>{_rows(checkpoint, mono)}</table>
<pre>{_e(f.checkpoint)}</pre>
<p>{_e(t["log_key"])}</p>
<pre>{_e(chr(10).join(f.verifier_keys))}</pre>
<h3>{_e(_t(lang, "Trusted time (RFC 3161)"))}</h3><table>{stamps}</table>
<h3>{_e(_t(lang, "Witnesses"))}</h3><table>{witnesses}</table>
<p>{_e(_t(lang, WITNESS_NOTE))}</p>
<h3>{_e(_t(lang, "How to check this yourself"))}</h3>{howto}
<p>{_e(_t(lang, LIMITS))}</p>
</section>
</main></body></html>
"""


# ---------------------------------------------------------------- PDF


def certificate_pdf(bundle: dict[str, Any], verify_url: str, lang: str = DEFAULT,
                    profile: Mapping[str, str] | None = None, tz: str | None = None) -> bytes:
    """The certificate as a PDF (A4), in `lang`: page 1 for a judge (the QR code, what was
    registered, by whom, when, what it proves and does not, in words), page 2 on for an expert
    (the exact values, signatures and how to check them).

    fpdf2 and fontTools leave each document's parsed fonts in reference cycles (about 4.5 MiB
    with DejaVu), which only the cyclic collector frees; `serve` runs it rarely (young objects
    in bulk, D47), so they are collected here, once the document is out.

    At most `RENDER_SLOTS` renders run at once, each holding its own parsed fonts and fpdf2's
    process-wide glyph cache holding the glyphs of every render in flight (the heap keeps the
    peak they reach). A caller waits on its thread up to `RENDER_WAIT_S` for a slot (none if
    `RENDER_QUEUE` callers wait already) and is then refused with Unavailable (503,
    Retry-After): rendering without one let overlapping renders
    pile up under load, the soak's memory growth (D74). The server does not come here: it waits
    as a coroutine, through `pdf_cache` (D75)."""
    if not _RENDER_SLOTS.acquire(timeout=RENDER_WAIT_S):
        raise busy()
    try:
        return render_pdf(bundle, verify_url, lang, profile, tz)
    finally:
        _RENDER_SLOTS.release()


def render_pdf(bundle: dict[str, Any], verify_url: str, lang: str = DEFAULT,
               profile: Mapping[str, str] | None = None, tz: str | None = None) -> bytes:
    """`certificate_pdf` without the slot, for a caller that holds one (`pdf_cache`)."""
    try:
        return _certificate_pdf(bundle, verify_url, lang, profile, tz)
    finally:
        gc.collect()


def pdf_cache() -> RenderCache:
    """A server's memo of PDF certificates: renders share this process's slots, a request
    waits for one as a coroutine up to `RENDER_WAIT_S` (behind at most `RENDER_QUEUE`
    others), and identical requests share one render (D75)."""
    return RenderCache(render_pdf, slots=_RENDER_SLOTS, wait_s=RENDER_WAIT_S)


def _unprintable_notice(pdf: Any, missing: list[str], lang: str) -> str:
    """The PDF's word that characters of `missing` cannot be printed, in `lang`; in English
    where its own words cannot be printed either (a zh-CN PDF without a CJK font): the one
    line that explains the gaps must not be one."""
    def notice(lang: str) -> str:
        shown = ", ".join(f"U+{ord(c):04X}" for c in missing[:12])
        if len(missing) > 12:
            shown = _t(lang, "{shown} and {n} more").format(shown=shown, n=len(missing) - 12)
        return _t(lang, "Some characters cannot be printed with this PDF's fonts and are left "
                        "out or shown as '?': {shown}. The HTML certificate and the evidence "
                        "bundle hold the exact text.").format(shown=shown)

    words = notice(lang)
    return notice(DEFAULT) if lang != DEFAULT and pdf.cover(words) else words


def _certificate_pdf(bundle: dict[str, Any], verify_url: str, lang: str,
                     profile: Mapping[str, str] | None, tz: str | None) -> bytes:
    from fpdf.enums import XPos, YPos  # fpdf2 loads with the first PDF, not at start (D54)

    from copyledger.service._pdf import Pdf

    f = facts(bundle, lang, profile, tz)
    t, j = _text(lang), _judge(f, lang)
    pdf = Pdf(lang)
    missing = pdf.cover(json.dumps(dataclasses.asdict(f), ensure_ascii=False) + verify_url)
    pdf.set_title(pdf.text_(_t(lang, "{title}: entry {seq} of {origin}").format(
        title=f.title, seq=f.seq, origin=f.origin)))
    pdf.set_lang(lang)
    pdf.set_creator("copyledger")
    pdf.set_creation_date(parse_timestamp(f.sealed_at))
    pdf.add_page()
    qr_size = 42
    pdf.image(io.BytesIO(qr_png(verify_url)), x=pdf.w - pdf.r_margin - qr_size, y=14,
              w=qr_size, h=qr_size, alt_text=t["qr_alt"].format(url=verify_url))
    narrow = pdf.epw - qr_size - 4
    pdf.set_font(pdf.sans, "B", 17)
    pdf.multi_cell(narrow, 8, pdf.text_(f.title), align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font(pdf.sans, "", 10)
    pdf.multi_cell(narrow, 5, pdf.text_(_t(lang, "Entry {seq} of the transparency log {origin}")
                                        .format(seq=f.seq, origin=f.origin)),
                   align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(2)
    pdf.set_font(pdf.sans, "", 8.5)
    pdf.multi_cell(narrow, 4.3, pdf.text_(_t(lang, "Scan the code or open {url} to check it.")
                                          .format(url=verify_url)),
                   align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    if missing:
        pdf.ln(1)
        pdf.set_font(pdf.sans, "B", 8.5)
        pdf.multi_cell(narrow, 4.3, pdf.text_(_unprintable_notice(pdf, missing, lang)),
                       align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_y(max(pdf.get_y(), 14 + qr_size + 2))

    # Page 1, for a judge: what, who, when, in words; what it proves and does not.
    pdf.para(j["summary"], 10.5)
    mono = _mono(lang)
    pdf.heading(t["what"])
    pdf.rows(j["what"], mono)
    pdf.para(t["fingerprint_note"], 8.5)
    pdf.heading(t["who_when"])
    pdf.rows(j["who"])
    for head, items in ((t["proves"], j["proves"]), (t["not_proves"], NOT_PROVES)):
        pdf.heading(head)
        for x in items:
            pdf.para(f"\u2022 {_t(lang, x)}" if pdf.unicode else f"- {x}", 9)
    pdf.heading(t["check"])
    pdf.para(t["check_text"].format(url=verify_url), 9)
    pdf.para(times_note(lang, beside_utc(lang, f.zone)), 8)

    # Page 2 on, for an expert: the exact values, signatures and commands.
    pdf.add_page()
    pdf.para(t["for_expert"], 14, "B")
    pdf.para(t["expert_intro"], 9)
    _deposit_pdf(pdf, deposit(bundle, f, lang), lang)
    pdf.heading(_t(lang, "Registration"))
    pdf.rows(_labels([(N_("Registrant"), _registrant(f, lang)),
                      (N_("Registered at"), f.received_at),
                      (N_("Entry number (seq)"), str(f.seq)), *f.described], lang))
    pdf.heading(_t(lang, "Content"))
    pdf.rows(_labels(f.hashes, lang), mono)
    pdf.heading(_t(lang, "Block and signed checkpoint"))
    pdf.rows(_labels([(N_("Block height"), str(f.block_height)), (N_("Block hash"), f.block_hash),
                      (N_("Block sealed at"), f.sealed_at), (N_("Log (origin)"), f.origin),
                      (N_("Tree size"), str(f.checkpoint_size)),
                      (N_("Root hash"), f.checkpoint_root)], lang), mono)
    pdf.ln(1)
    pdf.para(f.checkpoint.rstrip("\n"), 7.5, mono=True)
    pdf.ln(1)
    pdf.para(_t(lang, "Log key (published by the operator; compare before trusting): ")
             + ", ".join(f.verifier_keys), 8)
    pdf.heading(_t(lang, "Trusted time (RFC 3161)"))
    if not f.stamps:
        pdf.para(_t(lang, "No time-stamp token in the bundle."))
    for s in f.stamps:
        pdf.rows(_labels([(N_("Authority"),
                           f"{s.tsa}" + (f" ({s.authority})" if s.authority else "")),
                          (N_("Time (genTime)"), s.gen_time or "-"), (N_("Status"), s.status)],
                         lang))
    pdf.heading(_t(lang, "Witnesses"))
    if f.witnesses:
        pdf.rows(f.witnesses)
    else:
        pdf.para(_t(lang, "No witnessed checkpoint in the bundle."))
    pdf.para(_t(lang, WITNESS_NOTE), 8.5)
    pdf.heading(_t(lang, "How to check this yourself"))
    for h, text, cmds in _instructions(f, bundle, verify_url, lang):
        pdf.para(h, 9.5, "B")
        pdf.para(text, 9)
        for c in cmds:
            pdf.para(c, 7.5, mono=True)
        pdf.ln(1.5)
    pdf.ln(1)
    pdf.para(_t(lang, LIMITS), 8.5)
    return bytes(pdf.output())
