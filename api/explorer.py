"""The log explorer's pages, rendered on the server from what `service/explorer.py` returns.

Plain HTML and one stylesheet of ours; the only script is the home page's file hasher
(`static/explorer.js`), so every page but that one control works without JavaScript. Every
string a registrant chose is escaped. Links are relative (`root` climbs to the site's root from
the page's depth), so the pages work behind any public URL or path prefix. Every human string
is in `EN`, one table per page, so a translation is a second table.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlencode

from copyledger.ledger.sm2_timestamp import TSA_LABEL as SM2_TSA_LABEL
from copyledger.ledger.timestamp import TSA_LABEL as OWN_TSA
from copyledger.service.accounts import beside
from copyledger.service.certificate import TRANSFER_TYPES, in_words
from copyledger.service.dates import beside_utc, both_times, human_time, times_note
from copyledger.service.i18n import DEFAULT, gettext, table

EN: dict[str, dict[str, str]] = {
    "layout": {
        "site": "copyledger",
        "nav": "Site",
        "home": "Log explorer",
        "entries": "Entries",
        "blocks": "Blocks",
        "verify": "Verify a file",
        "search_label": "Search by entry number or SHA-256",
        "search_button": "Search",
        "older": "Older",
        "newer": "Newer",
        "pages": "Pages",
        "next": "Next page",
        "none": "Nothing here yet.",
        "language": "Language",
        "entry_prefix": "entry ",
    },
    "home": {
        "title": "Copyright evidence registry",
        "intro": "This registry keeps a public, permanent record of creative works: who "
                 "registered which file, and when. Each record is numbered, sealed into a "
                 "block, and signed, and the signed record can only grow: nothing in it can be "
                 "changed or removed later without everyone noticing. Anyone can look a file up "
                 "here, and anyone can check a record without having to trust this website. A "
                 "registration is evidence of who had a file first; it does not by itself "
                 "decide who owns the copyright.",
        "state": "The record today",
        "size": "Entries recorded",
        "latest": "Latest block",
        "sealed": "Sealed",
        "root": "Root hash",
        "checkpoint": "Signed checkpoint (the log's signed statement of its size and root)",
        "key": "Log key (check it against the operator's publication)",
        "empty": "Nothing has been recorded yet.",
        "search": "Look a file up",
        "search_text": "Enter an entry number or a file's SHA-256 fingerprint, or choose a file: "
                       "your browser computes its fingerprint and looks it up. The file itself "
                       "is never uploaded.",
        "file_label": "Choose a file to look up",
        "drop": "or drop a file here",
        "file_needs_js": "Looking a file up needs JavaScript (the fingerprint is computed in "
                         "your browser). Without it, compute the SHA-256 with sha256sum and "
                         "search for it.",
        "js_hashing": "Computing the fingerprint of {name} on this computer…",
        "js_found": "Fingerprint {hash}: looking it up…",
        "js_toolarge": "{name} is larger than 256 MB: compute its SHA-256 with sha256sum and "
                       "search for it.",
        "js_failed": "Could not read {name}: {why}",
        "js_nocrypto": "This browser cannot compute fingerprints here (open the page over "
                       "HTTPS, or from localhost).",
        "recent_blocks": "Recent blocks",
        "recent_entries": "Recent entries",
        "all_entries": "All entries",
        "all_blocks": "All blocks",
    },
    "tables": {
        "seq": "Entry",
        "kind": "What",
        "label": "Title or description",
        "who": "Recorded for",
        "when": "When",
        "height": "Block",
        "count": "Entries",
        "range": "Entry numbers",
        "sealed": "Sealed",
        "rel": "How it is linked",
        "claim_label": "{notice} by {name}",
        "transfer_label": "{type}: {giver} to {to}",
    },
    "entries": {"title": "Entries", "caption": "Entries, newest first"},
    "blocks": {"title": "Blocks", "caption": "Blocks, newest first"},
    "entry": {
        "title": "Entry {seq}: {kind}",
        "summary": "In plain words",
        "plain": "{who} recorded this {kind_lower} on {when}. It is entry {seq} of this "
                 "registry's public log, sealed in block {height}.",
        "kind": "What",
        "label": "Title or description",
        "who": "Recorded for",
        "when": "When",
        "block": "Block",
        "sha256": "File fingerprint (SHA-256)",
        "actions": "Use this entry",
        "certificate": "Evidence certificate (web page)",
        "certificate_pdf": "Evidence certificate (PDF)",
        "verify": "Check a file against this entry",
        "bundle": "Evidence bundle (JSON, for checking offline)",
        "title_link": "Chain of title of this work",
        "claim_link": "Timeline of this claim",
        "names": "Entries this one refers to",
        "named_by": "Entries that refer to this one",
        "more": "More entries that refer to this one",
        "proof": "Technical detail: proof that this entry is in the log",
        "proof_text": "The inclusion proof below shows that entry {seq} is part of the log's "
                      "tree of {size} entries whose root hash the signed checkpoint names. "
                      "Anyone can recompute it; the verification page does it for you.",
        "leaf": "Leaf hash",
        "tree_size": "Tree size",
        "root": "Root hash",
        "path": "Proof hashes",
        "checkpoint": "Signed checkpoint",
        "record": "Technical detail: the full record (JSON)",
    },
    "title": {
        "title": "Chain of title: entry {seq}",
        "plain": "{registrant} registered this work. Today it is held by {holder}.",
        "registrant": "Registered by",
        "holder": "Held now by",
        "licences": "Licences granted",
        "links": "Every record on this work, oldest first",
        "holder_after": "Held by, after this record",
        "none": "No transfer has been recorded on this work.",
        "proof_note": "Each record's inclusion proof to the log's tree of {size} entries is in "
                      "the chain of title data (JSON).",
        "json": "Chain of title (JSON)",
        "licence": "{type} to {to}",
    },
    "claim": {
        "title": "Claim timeline: entry {seq}",
        "plain": "{claimant} filed this {notice} under {regime} on {when}.",
        "timeline": "Notices and counter-notices, oldest first",
        "notice": "Notice",
        "regime": "Legal basis",
        "claimant": "Claimant",
        "who": "Recorded for",
        "when": "Received",
    },
    "block": {
        "title": "Block {height}",
        "plain": "Block {height} was sealed on {when}. It holds {count} entries (numbers "
                 "{first} to {last}), after which the log had {size} entries.",
        "plain_empty": "Block {height} was sealed on {when}. It holds no entries.",
        "sealed": "Sealed",
        "count": "Entries in this block",
        "size": "Log size after this block",
        "tsas": "Time-stamped by",
        "own_tsa": "this registry's notary",
        "own_sm2_tsa": "this registry's notary (SM2/SM3)",
        "entries": "Entries in this block",
        "hash": "Block hash",
        "root": "Root hash",
        "notes": "Technical detail: signed checkpoint and block note",
        "checkpoint": "Signed checkpoint",
        "note": "Signed block note",
        "json": "Block (JSON)",
    },
    "search": {
        "title": "Search results",
        "found": "Entries whose file has the SHA-256 fingerprint {sha}, oldest first "
                 "(the first is the earliest registration):",
        "none": "Nothing in this registry has a file with the SHA-256 fingerprint {sha}. A "
                "file that was re-saved, resized or converted has a different fingerprint.",
    },
    "error": {
        "title": "Not found or not understood",
        "back": "Back to the log explorer",
    },
    "regimes": {  # a claim's legal regime in words (`ledger.claims.REGIMES`), the code beside
        "dmca_512c3": "US Digital Millennium Copyright Act, 17 U.S.C. § 512",
        "eu_dsa_art16": "EU Digital Services Act, Article 16",
        "cn_ecommerce_art42": "PRC E-Commerce Law, Articles 42 and 43",
        "cn_indr_art14": "PRC Regulations on the Protection of the Right of Information Network "
                         "Dissemination, Articles 14 to 16",
    },
}

KINDS = {"work": "Registered work", "evidence": "Evidence deposit",
         "transfer": "Transfer of rights", "claim": "Claim",
         "acceptance": "Acceptance of an offer", "withdrawal": "Withdrawal of an offer",
         "rotation": "Key rotation"}
RELS = {"transfer": "transfer of the work", "claim": "claim naming the work",
        "reply": "counter-notice answering the claim"}
NOTICES = {"notice": "notice", "counter_notice": "counter-notice"}


SWITCH = {"en": "English", "zh-CN": "中文"}  # each language named in itself, never translated


_SWITCH_LINK = re.compile(r'href="\?lang=([A-Za-z-]+)"')


def keep_query(page: str, query: list[tuple[str, str]]) -> str:
    """`page` with its language switch's links keeping the rest of the page's `query` (a
    search's `q`, the verify page's `seq`, paging, `tz`): a bare `?lang=` dropped them, so a
    search switched to Chinese was a 422 and the verify page lost its entry (D180)."""
    rest = [(k, v) for k, v in query if k != "lang"]
    if not rest:
        return page
    return _SWITCH_LINK.sub(
        lambda m: 'href="?' + html.escape(urlencode([*rest, ("lang", m[1])])) + '"', page)


def kind_name(kind: str, lang: str = DEFAULT) -> str:
    """A kind in words; a kind added later reads as its name until it is given words here."""
    return gettext(lang, KINDS[kind]) if kind in KINDS else kind.replace("_", " ").capitalize()


def _notice(notice_type: str, lang: str = DEFAULT) -> str:
    return (gettext(lang, NOTICES[notice_type]) if notice_type in NOTICES
            else notice_type.replace("_", "-"))


def _regime(regime: str, lang: str) -> str:
    """A claim's regime in words, its code beside (as the signed entry records it)."""
    return in_words(regime, EN["regimes"], lang) or ""


def _transfer_type(code: str, lang: str) -> str:
    """A transfer's type in words alone (a list's line; the entry's page has the code)."""
    return gettext(lang, TRANSFER_TYPES[code]) if code in TRANSFER_TYPES else code


def _licence_type(code: str, lang: str) -> str:
    """A licence's type in words, its code beside (a chain of title's fact)."""
    return in_words(code, TRANSFER_TYPES, lang) or ""


def _label(r: dict[str, Any], lang: str) -> str:
    """The line that names an entry in `lang`: the registrant's title or description as
    typed, else its parties in words (a claim's notice and claimant, a transfer's type and
    parties), which the service once made in English for every page (D177's leftover)."""
    p = r.get("parties")
    if not p:
        return str(r["label"])
    t = _t(lang, "tables")
    if "claimant" in p:
        return t["claim_label"].format(notice=_notice(p["notice_type"], lang),
                                       name=p["claimant"]).strip()
    return t["transfer_label"].format(type=_transfer_type(p["transfer_type"], lang),
                                      giver=p["from"], to=p["to"])


def _rel(rel: str, lang: str) -> str:
    return gettext(lang, RELS[rel]) if rel in RELS else rel


def _t(lang: str, page: str) -> dict[str, str]:
    return table(lang, EN[page])


def localize(d: Any, lang: str) -> Any:
    """`d` with every "when" (a time in words, made by the service in English) said again in
    `lang`, from the exact time beside it (received_at, sealed_at, or the entry's)."""
    if lang == DEFAULT:
        return d
    if isinstance(d, list):
        return [localize(x, lang) for x in d]
    if not isinstance(d, dict):
        return d
    out = {k: localize(v, lang) for k, v in d.items()}
    if "when" in out:
        entry = out.get("entry")
        raw = out.get("received_at") or out.get("sealed_at") or (
            entry.get("received_at") if isinstance(entry, dict) else None)
        if isinstance(raw, str) and raw:
            out["when"] = human_time(raw, lang)
    return out


def _e(s: object) -> str:
    return html.escape(str(s), quote=True)


def _a(href: str, text: object) -> str:
    return f'<a href="{_e(href)}">{_e(text)}</a>'


def _dl(rows: Iterable[tuple[str, str]]) -> str:
    """A definition list; values are HTML already (escaped by the caller)."""
    return "<dl>" + "".join(f"<dt>{_e(k)}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"


def _entry(root: str, seq: int, prefix: str = "") -> str:
    return _a(f"{root}entries/{seq}", f"{prefix}{seq}")


def _data(t: dict[str, str]) -> str:
    """The strings the page's script shows, as data-* attributes (the script holds none)."""
    return "".join(f' data-{k[3:]}="{_e(v)}"' for k, v in t.items() if k.startswith("js_"))


def _code(s: object) -> str:
    return f'<code class="hash">{_e(s)}</code>'


def layout(title: str, body: str, depth: int, *, script: bool = False, beside: bool = False,
           lang: str = DEFAULT) -> str:
    """A whole page: head, the site's navigation and search, `body` in <main>."""
    t = _t(lang, "layout")
    root = "../" * depth
    home = root or "./"
    switch = " ".join(f'<a href="?lang={code}" hreflang="{code}" lang="{code}"'
                      + (' aria-current="true"' if code == lang else "") + f">{_e(name)}</a>"
                      for code, name in SWITCH.items())
    js = (f'<script src="{root}static/dropzone.js" defer></script>'
          f'<script src="{root}static/explorer.js" defer></script>') if script else ""
    return f"""<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>{_e(title)} — {_e(t["site"])}</title>
<link rel="stylesheet" href="{root}static/explorer.css">{js}</head>
<body>
<header><nav aria-label="{_e(t["nav"])}"><ul>
<li>{_a(home, t["home"])}</li><li>{_a(root + "entries", t["entries"])}</li>
<li>{_a(root + "blocks", t["blocks"])}</li><li>{_a(root + "verify", t["verify"])}</li>
</ul></nav>
<nav aria-label="{_e(t["language"])}" class="lang">{switch}</nav>
<form role="search" action="{root}search" method="get">
<label for="site-q">{_e(t["search_label"])}</label>
<input id="site-q" name="q" type="search" autocomplete="off" spellcheck="false">
<button type="submit">{_e(t["search_button"])}</button></form></header>
<main>
<h1>{_e(title)}</h1>
{body}
<p class="note">{_e(times_note(lang, beside_utc(lang) if beside else None))}</p>
</main>
</body></html>
"""


def _entries_table(rows: list[dict[str, Any]], root: str, caption: str,
                   rel: bool = False, lang: str = DEFAULT) -> str:
    t = _t(lang, "tables")
    if not rows:
        return f"<p>{_e(_t(lang, 'layout')['none'])}</p>"
    head = (["rel"] if rel else []) + ["seq", "kind", "label", "who", "when"]
    ths = "".join(f'<th scope="col">{_e(t[h])}</th>' for h in head)
    body = "".join(
        "<tr>" + (f"<td>{_e(_rel(r['rel'], lang))}</td>" if rel else "")
        + f"<td>{_entry(root, r['seq'])}</td><td>{_e(kind_name(r['kind'], lang))}"
        f"</td><td>{_e(_label(r, lang))}</td><td>{_e(r['registrant'])}</td><td>{_e(r['when'])}</td>"
        "</tr>" for r in rows)
    return (f"<table><caption>{_e(caption)}</caption><thead><tr>{ths}</tr></thead>"
            f"<tbody>{body}</tbody></table>")


def _blocks_table(rows: list[dict[str, Any]], root: str, caption: str,
                  lang: str = DEFAULT) -> str:
    t = _t(lang, "tables")
    if not rows:
        return f"<p>{_e(_t(lang, 'layout')['none'])}</p>"
    ths = "".join(f'<th scope="col">{_e(t[h])}</th>' for h in ("height", "sealed", "count",
                                                                 "range"))
    body = "".join(
        f"<tr><td>{_a(root + 'blocks/' + str(b['height']), b['height'])}</td>"
        f"<td>{_e(b['when'])}</td>"
        f"<td>{b['count']}</td><td>{_range(b)}</td></tr>" for b in rows)
    return (f"<table><caption>{_e(caption)}</caption><thead><tr>{ths}</tr></thead>"
            f"<tbody>{body}</tbody></table>")


def _range(b: dict[str, Any]) -> str:
    if b["count"] <= 1:
        return str(b["first_seq"]) if b["count"] else "—"
    return f"{b['first_seq']}–{b['first_seq'] + b['count'] - 1}"


def _pager(path: str, key: str, older: int | None, newer: int | None, limit: int,
           lang: str = DEFAULT) -> str:
    t = _t(lang, "layout")
    links = []
    if newer is not None:
        links.append(f'<a rel="prev" href="{_e(path)}?{key}={newer}&amp;limit={limit}">'
                     f'{_e(t["newer"])}</a>')
    if older is not None:
        links.append(f'<a rel="next" href="{_e(path)}?{key}={older}&amp;limit={limit}">'
                     f'{_e(t["older"])}</a>')
    return f'<nav aria-label="{_e(t["pages"])}" class="pager">{" ".join(links)}</nav>' \
        if links else ""


def home_page(d: dict[str, Any], lang: str = DEFAULT) -> str:
    d = localize(d, lang)
    t = _t(lang, "home")
    s = d["state"]
    if s is None:
        state = f"<p>{_e(t['empty'])}</p>"
    else:
        state = _dl([
            (t["size"], f"<strong>{s['tree_size']}</strong>"),
            (t["latest"], _a(f"blocks/{s['height']}", s["height"])),
            (t["sealed"], _e(s["when"])),
            (t["root"], _code(s["root"])),
            (t["key"], _code(d["verifier_key"])),
        ]) + (f"<details><summary>{_e(t['checkpoint'])}</summary>"
              f"<pre>{_e(s['checkpoint'])}</pre></details>")
    body = f"""<p class="lead">{_e(t["intro"])}</p>
<section aria-labelledby="state-h"><h2 id="state-h">{_e(t["state"])}</h2>{state}</section>
<section aria-labelledby="lookup-h"><h2 id="lookup-h">{_e(t["search"])}</h2>
<p>{_e(t["search_text"])}</p>
<form action="search" method="get" class="lookup">
<label for="q">{_e(_t(lang, "layout")["search_label"])}</label>
<input id="q" name="q" autocomplete="off" spellcheck="false">
<button type="submit">{_e(_t(lang, "layout")["search_button"])}</button></form>
<div id="drop" class="drop"{_data(t)}><label for="file">{_e(t["file_label"])}</label>
<input id="file" type="file"> <span>{_e(t["drop"])}</span>
<p id="file-status" class="info" aria-live="polite"></p></div>
<noscript><p>{_e(t["file_needs_js"])}</p></noscript></section>
<section aria-labelledby="blocks-h"><h2 id="blocks-h">{_e(t["recent_blocks"])}</h2>
{_blocks_table(d["blocks"], "", t["recent_blocks"], lang=lang)}
<p>{_a("blocks", t["all_blocks"])}</p>
</section>
<section aria-labelledby="entries-h"><h2 id="entries-h">{_e(t["recent_entries"])}</h2>
{_entries_table(d["entries"], "", t["recent_entries"], lang=lang)}
<p>{_a("entries", t["all_entries"])}</p>
</section>"""
    return layout(f"{t['title']}: {d['origin']}", body, 0, script=True, lang=lang)


def _list_page(d: dict[str, Any], lang: str, page: str, table: Callable[..., str]) -> str:
    """/entries or /blocks: one page of rows, newest first, and the pager."""
    d = localize(d, lang)
    t = _t(lang, page)
    body = (table(d["rows"], "", t["caption"], lang=lang)
            + _pager(page, "before", d["older"], d["newer"], d["limit"], lang=lang))
    return layout(t["title"], body, 0, lang=lang)


def entries_page(d: dict[str, Any], lang: str = DEFAULT) -> str:
    return _list_page(d, lang, "entries", _entries_table)


def blocks_page(d: dict[str, Any], lang: str = DEFAULT) -> str:
    return _list_page(d, lang, "blocks", _blocks_table)


def entry_page(d: dict[str, Any], lang: str = DEFAULT) -> str:
    d = localize(d, lang)
    t = _t(lang, "entry")
    seq, root = d["seq"], "../"
    kind = kind_name(d["kind"], lang)
    plain = t["plain"].format(who=d["registrant"], kind_lower=kind.lower(), when=d["when"],
                              seq=seq, height=d["block_height"])
    facts = [(t["kind"], _e(kind))]
    if label := _label(d, lang):
        facts.append((t["label"], _e(label)))
    facts += [(t["who"], _e(beside(d["registrant"], d.get("registrant_profile"), lang))),
              (t["when"], f'<time datetime="{_e(d["received_at"])}">'
                          f'{_e(both_times(d["received_at"], lang))}</time>'),
              (t["block"], _a(f"{root}blocks/{d['block_height']}", d["block_height"]))]
    if d["sha256"]:
        facts.append((t["sha256"], _code(d["sha256"])))
    actions = [_a(f"{root}v1/entries/{seq}/certificate", t["certificate"]),
               _a(f"{root}v1/entries/{seq}/certificate?format=pdf", t["certificate_pdf"]),
               _a(f"{root}verify?seq={seq}", t["verify"]),
               _a(f"{root}v1/entries/{seq}/bundle", t["bundle"])]
    if d["kind"] == "work":
        actions.insert(0, _a(f"{root}works/{seq}", t["title_link"]))
    if d["kind"] == "claim":
        actions.insert(0, _a(f"{root}claims/{seq}", t["claim_link"]))
    names = "".join(f"<li>{_e(_rel(o['rel'], lang))}: "
                    f"{_entry(root, o['seq'], _t(lang, 'layout')['entry_prefix'])}</li>"
                    for o in d["links_out"])
    after = d["links_in_more"]
    more = (f"<p>{_a(f'{root}entries/{seq}?after={after}', t['more'])}</p>"
            if after is not None else "")
    p = d["proof"]
    proof = _dl([(t["leaf"], _code(d["leaf_hash"])), (t["tree_size"], str(p["tree_size"])),
                 (t["root"], _code(p["root"])),
                 (t["path"], "<ol>" + "".join(f"<li>{_code(h)}</li>" for h in p["proof"])
                  + "</ol>")])
    body = f"""<section aria-labelledby="plain-h"><h2 id="plain-h">{_e(t["summary"])}</h2>
<p class="lead">{_e(plain)}</p>{_dl(facts)}</section>
<section aria-labelledby="act-h"><h2 id="act-h">{_e(t["actions"])}</h2>
<ul>{"".join(f"<li>{a}</li>" for a in actions)}</ul></section>
{f'<section aria-labelledby="out-h"><h2 id="out-h">{_e(t["names"])}</h2><ul>{names}</ul></section>'
 if names else ""}
{f'<section aria-labelledby="in-h"><h2 id="in-h">{_e(t["named_by"])}</h2>'
 f'{_entries_table(d["links_in"], root, t["named_by"], rel=True, lang=lang)}'
 f'{more}</section>'
 if d["links_in"] else ""}
<details><summary>{_e(t["proof"])}</summary>
<p>{_e(t["proof_text"].format(seq=seq, size=p["tree_size"]))}</p>{proof}
<h3>{_e(t["checkpoint"])}</h3><pre>{_e(p["checkpoint"] or "")}</pre></details>
<details><summary>{_e(t["record"])}</summary>
<pre>{_e(json.dumps(d["entry"], indent=2, ensure_ascii=False, sort_keys=True))}</pre></details>"""
    return layout(t["title"].format(seq=seq, kind=kind), body, 1, lang=lang, beside=True)


def title_page(d: dict[str, Any], lang: str = DEFAULT) -> str:
    d = localize(d, lang)
    t, tt = _t(lang, "title"), _t(lang, "tables")
    seq, root = d["work_seq"], "../"
    rows = "".join(
        f"<tr><td>{_entry(root, li['seq'])}</td>"
        f"<td>{_e(kind_name(li['kind'], lang))}</td><td>{_e(li['when'])}</td>"
        f"<td>{_e(li['holder_after'])}</td></tr>" for li in d["links"])
    heads = "".join(f'<th scope="col">{_e(h)}</th>'
                    for h in (tt["seq"], tt["kind"], tt["when"], t["holder_after"]))
    licences = "".join(
        f"<li>{_e(t['licence'].format(type=_licence_type(li['transfer_type'], lang), to=li['to']))}"
        f" ({_entry(root, li['seq'], _t(lang, 'layout')['entry_prefix'])})</li>"
        for li in d["licences"])
    facts = [(t["registrant"], _e(d["registrant"])), (t["holder"], _e(d["holder"]))]
    if licences:
        facts.append((t["licences"], f"<ul>{licences}</ul>"))
    body = f"""<p class="lead">{_e(t["plain"].format(registrant=d["registrant"],
                                                   holder=d["holder"]))}</p>
{_dl(facts)}
{"" if len(d["links"]) > 1 else f"<p>{_e(t['none'])}</p>"}
<table><caption>{_e(t["links"])}</caption><thead><tr>{heads}</tr></thead>
<tbody>{rows}</tbody></table>
<p>{_e(t["proof_note"].format(size=d["tree_size"]))}
{_a(f"{root}v1/works/{seq}/history", t["json"])}</p>"""
    return layout(t["title"].format(seq=seq), body, 1, lang=lang)


def claim_page(d: dict[str, Any], lang: str = DEFAULT) -> str:
    d = localize(d, lang)
    t = _t(lang, "claim")
    root = "../"
    first = d["timeline"][0]
    plain = t["plain"].format(claimant=first["claimant"],
                              notice=_notice(first["notice_type"], lang),
                              regime=_regime(first["regime"], lang), when=first["when"])
    heads = "".join(f'<th scope="col">{_e(t[h])}</th>'
                    for h in ("notice", "regime", "claimant", "who", "when"))
    rows = "".join(
        f"<tr><td>{_entry(root, c['seq'], _notice(c['notice_type'], lang) + ' ')}</td>"
        f"<td>{_e(_regime(c['regime'], lang))}</td><td>{_e(c['claimant'])}</td>"
        f"<td>{_e(c['registrant'])}</td>"
        f"<td>{_e(c['when'])}</td></tr>" for c in d["timeline"])
    body = f"""<p class="lead">{_e(plain)}</p>
<table><caption>{_e(t["timeline"])}</caption><thead><tr>{heads}</tr></thead>
<tbody>{rows}</tbody></table>"""
    return layout(t["title"].format(seq=d["seq"]), body, 1, lang=lang)


def _tsa_name(label: str, t: dict[str, str]) -> str:
    """A time-stamp's recorded TSA in words: the registry's own by name, an external one by
    its URL (D214)."""
    return {OWN_TSA: t["own_tsa"], SM2_TSA_LABEL: t["own_sm2_tsa"]}.get(label, label)


def block_page(d: dict[str, Any], lang: str = DEFAULT) -> str:
    d = localize(d, lang)
    t = _t(lang, "block")
    root = "../"
    h = d["height"]
    plain = (t["plain"].format(height=h, when=d["when"], count=d["count"], first=d["first_seq"],
                               last=d["first_seq"] + d["count"] - 1, size=d["tree_size"])
             if d["count"] else t["plain_empty"].format(height=h, when=d["when"]))
    facts = _dl([(t["sealed"], f'<time datetime="{_e(d["sealed_at"])}">{_e(d["when"])}</time>'),
                 (t["count"], str(d["count"])), (t["size"], str(d["tree_size"])),
                 (t["tsas"], _e(", ".join(_tsa_name(tsa, t) for tsa in d["tsas"]) or "—")),
                 (t["hash"], _code(d["hash"])), (t["root"], _code(d["root"]))])
    pager = ""
    if d["next"] is not None:
        pager = (f'<nav aria-label="{_e(_t(lang, "layout")["pages"])}" class="pager">'
                 f'<a rel="next" href="{h}?after={d["next"]}&amp;limit={d["limit"]}">'
                 f'{_e(_t(lang, "layout")["next"])}</a></nav>')
    body = f"""<p class="lead">{_e(plain)}</p>{facts}
<section aria-labelledby="be-h"><h2 id="be-h">{_e(t["entries"])}</h2>
{_entries_table(d["rows"], root, t["entries"], lang=lang)}{pager}</section>
<details><summary>{_e(t["notes"])}</summary>
<h3>{_e(t["checkpoint"])}</h3><pre>{_e(d["checkpoint"])}</pre>
<h3>{_e(t["note"])}</h3><pre>{_e(d["block_note"])}</pre>
<p>{_a(f"{root}v1/blocks/{h}", t["json"])}</p></details>"""
    return layout(t["title"].format(height=h), body, 1, lang=lang)


def search_page(d: dict[str, Any], lang: str = DEFAULT) -> str:
    d = localize(d, lang)
    t = _t(lang, "search")
    if d["rows"]:
        body = (f"<p>{_e(t['found'].format(sha=d['sha256']))}</p>"
                + _entries_table(d["rows"], "", t["title"], lang=lang))
    else:
        body = f'<p class="lead">{_e(t["none"].format(sha=d["sha256"]))}</p>'
    if d["next"] is not None:
        body += (f'<nav aria-label="{_e(_t(lang, "layout")["pages"])}" class="pager">'
                 f'<a rel="next" href="search?q={d["sha256"]}&amp;after={d["next"]}&amp;'
                 f'limit={d["limit"]}">{_e(_t(lang, "layout")["next"])}</a></nav>')
    return layout(t["title"], body, 0, lang=lang)


def error_page(status: int, title: str, detail: str, depth: int,
               lang: str = DEFAULT) -> str:
    t = _t(lang, "error")
    body = f"<p>{_e(detail)}</p><p>{_a('../' * depth or './', t['back'])}</p>"
    return layout(f"{status}: {title}", body, depth, lang=lang)
